"""Search over HTTP on Ray Serve: a text in, the top videos out as JSON.

    serve run pipelines.serve:app db=s3://bucket/lancedb checkpoint=/shared/ckpt/final
    serve run cluster/serve-search.yaml     # the same from a config; `serve deploy` takes it

    curl -s localhost:8000/search -H 'content-type: application/json' \\
        -d '{"text": "a dog catches a frisbee on the beach", "k": 10, "filter": {"split": "test"}}'

Each replica holds one ``VideoSearch`` (the checkpoint, the keyword model, the
open table). The texts of concurrent requests are encoded together, in one
pass of the text tower (``@serve.batch``); each request then runs its own
vector search and rerank. Replicas autoscale between ``min_replicas`` and
``max_replicas`` on the ongoing requests, over the cluster's nodes. The
arguments after the import path (``key=value``) are :class:`SearchArgs`.

``POST /search`` takes ``text``, ``k`` (10), ``candidates`` (100) and
``filter``, equalities on the table's scalar metadata columns
(``{"split": "test"}``), and answers ``results`` (rank, video_id, uri, score,
first_stage_score), ``notes`` (e.g. a query cut at the model's context),
``model_id``, ``text_batch`` (queries encoded with this one) and
``timings_ms``. Bad requests get status 400 (422 for a malformed body) with a
one-line ``detail``. ``GET /`` describes the table served.
"""

# no `from __future__ import annotations`: FastAPI and Serve read the request model and
# the builder's argument type from the annotations at run time
import asyncio
import time

import pyarrow as pa
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from ray import serve

from pipelines.core.sql import sql_equals
from pipelines.index.search import NPROBES, ModelMismatchError, VideoSearch
from vtr_models import TextFeatures

api = FastAPI(title="video search", description="Natural-language search over a video table")


class SearchArgs(BaseModel):
    """What ``serve run pipelines.serve:app key=value ...`` (or a config's ``args``) sets."""

    db: str = Field(description="LanceDB database written by pipelines/embed.py")
    checkpoint: str = Field(description="the checkpoint that wrote the table")
    table: str = "videos"
    keyword_model: str | None = Field(
        None, description="this machine's copy of the ingest's keyword model "
        "(default: the model the table records)")
    nprobes: int = Field(NPROBES, ge=1, description="IVF partitions searched")
    refine_factor: int | None = Field(None, ge=1, description=(
        "candidates x this re-ranked by exact distance before the full model (default: "
        "what the table's index needs, 10 for IVF_PQ, 1 for HNSW_SQ)"))
    consistency_interval_s: float | None = Field(
        5.0, description="seconds before new commits to the table are seen")
    max_batch_size: int = Field(16, ge=1, description="most queries encoded in one pass")
    batch_wait_timeout_s: float = Field(
        0.005, ge=0, description="longest wait for more queries to fill a batch")
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    cpus_per_replica: float = Field(1.0, gt=0)


class SearchRequest(BaseModel):
    text: str = Field(description="what to look for, in words")
    k: int = Field(10, description="results to return")
    candidates: int = Field(100, description="nearest neighbours the full model reranks")
    filter: dict[str, str | int | bool] = Field(
        default_factory=dict, description="column = value conditions on metadata columns")


def filterable_columns(schema: pa.Schema) -> frozenset[str]:
    """The table's columns a request may filter on: scalar strings, integers, booleans."""
    return frozenset(
        f.name for f in schema
        if pa.types.is_string(f.type) or pa.types.is_integer(f.type)
        or pa.types.is_boolean(f.type))


def filter_sql(conditions: dict[str, str | int | bool], allowed: frozenset[str]) -> str | None:
    """The SQL ``where`` of a request's filter (None for none); ValueError names a column
    that cannot be filtered on."""
    unknown = sorted(set(conditions) - allowed)
    if unknown:
        raise ValueError(f"cannot filter on {', '.join(unknown)}: the table's filterable "
                         f"columns are {', '.join(sorted(allowed))}")
    return " AND ".join(sql_equals(c, v) for c, v in sorted(conditions.items())) or None


@serve.deployment
@serve.ingress(api)
class SearchService:
    """One replica: a ``VideoSearch`` and the HTTP routes over it."""

    def __init__(self, args: SearchArgs) -> None:
        self.search = VideoSearch(args.db, args.table, args.checkpoint,
                                  keyword_model=args.keyword_model, nprobes=args.nprobes,
                                  refine_factor=args.refine_factor,
                                  consistency_interval_s=args.consistency_interval_s)
        self.table_name = args.table
        self.filterable = filterable_columns(self.search.table.schema)
        self.encode.set_max_batch_size(args.max_batch_size)
        self.encode.set_batch_wait_timeout_s(args.batch_wait_timeout_s)

    @serve.batch
    async def encode(self, texts: list[str]) -> list[tuple[TextFeatures, int, float]]:
        """Each text's features, encoded with the others of its batch; the batch size and
        the seconds the batch took."""
        started = time.perf_counter()
        features = await asyncio.to_thread(self.search.encode_texts, texts)
        seconds = time.perf_counter() - started
        return [(features[i:i + 1], len(texts), seconds) for i in range(len(texts))]

    @api.post("/search")
    async def search_videos(self, request: SearchRequest) -> dict:
        try:
            text, note = self.search.checked_query(request.text, request.k, request.candidates)
            where = filter_sql(request.filter, self.filterable)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        features, batch, text_s = await self.encode(text)
        try:
            result, timings = await asyncio.to_thread(
                self.search.search_encoded, features, request.k, request.candidates, where)
        except ModelMismatchError as exc:  # the table was re-embedded by another checkpoint
            raise HTTPException(status_code=409, detail=str(exc)) from None
        return {
            "results": result.to_dict(orient="records"),
            "notes": [note] if note else [],
            "model_id": self.search.model_id,
            "text_batch": batch,
            "timings_ms": {"text": 1e3 * text_s, "search": 1e3 * timings["search_s"],
                           "rerank": 1e3 * timings["rerank_s"]},
        }

    @api.get("/")
    def describe(self) -> dict:
        return {"table": self.table_name, "rows": self.search.table.count_rows(),
                "model_id": self.search.model_id,
                "filterable_columns": sorted(self.filterable)}


def app(arguments: dict) -> serve.Application:
    """The application ``serve run pipelines.serve:app`` builds from its arguments
    (validated as :class:`SearchArgs`: a missing or mistyped one is named)."""
    args = SearchArgs.model_validate(arguments)
    return SearchService.options(
        autoscaling_config={"min_replicas": args.min_replicas,
                            "max_replicas": args.max_replicas,
                            "target_ongoing_requests": args.max_batch_size},
        ray_actor_options={"num_cpus": args.cpus_per_replica},
    ).bind(args)

r"""Search over HTTP on Ray Serve: a text in, the top videos out as JSON.

    serve run pipelines.serve:app db=s3://bucket/lancedb checkpoint=/shared/ckpt/final
    serve run cluster/serve-search.yaml     # the same from a config; `serve deploy` takes it

    curl -s localhost:8000/search -H 'content-type: application/json' \
        -d '{"text": "a dog catches a frisbee on the beach", "k": 10, "filter": {"split": "test"}}'

Each replica holds one ``VideoSearch`` (the checkpoint, the keyword model, the
open table). Concurrent requests are searched together (``@serve.batch``):
their texts in one pass of the text tower, then each its own vector search
and rerank. Batched, a query costs the replica less CPU than alone (one pass
of the text tower for all), so a replica answers more queries a second the
more there are at once
(``docs/benchmarks.md``, the search service under load). Replicas autoscale
between ``min_replicas`` and ``max_replicas`` on the ongoing requests, over
the cluster's nodes. The arguments after the import path (``key=value``) are
:class:`SearchArgs`.

``POST /search`` takes ``text``, ``k`` (10), ``candidates`` (100) and
``filter``, equalities on the table's scalar metadata columns
(``{"split": "test"}``), or ``where``, SQL over them, and answers ``results``
(rank, video_id, uri, score, first_stage_score, and the best moment: start_s,
end_s, moment_score), ``notes`` (e.g. a query cut at the model's context),
``model_id``, ``text_batch`` (queries searched with this one) and
``timings_ms`` (of the batch's steps). Bad requests get status 400 (422 for a
malformed body) with a one-line ``detail``. ``GET /`` describes the table
served.
"""

# no `from __future__ import annotations`: FastAPI and Serve read the request model and
# the builder's argument type from the annotations at run time
import time
from typing import Literal, NamedTuple

import pandas as pd
import pyarrow as pa
import torch
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field, model_validator
from ray import serve

from pipelines.core.devices import resolve_device
from pipelines.core.messages import first_line
from pipelines.core.sql import checked_where, sql_equals
from pipelines.index.search import EF_PER_CANDIDATE, NPROBES, ModelMismatchError, VideoSearch

api = FastAPI(title="video search", description="Natural-language search over a video table")


class SearchArgs(BaseModel):
    """What ``serve run pipelines.serve:app key=value ...`` (or a config's ``args``) sets."""

    db: str = Field(description="LanceDB database written by pipelines/embed.py")
    checkpoint: str = Field(description=(
        "the model that wrote the table: its checkpoint folder, or the backbone spec "
        "(ViT-B-32:openai) a zero-shot table was embedded with"))
    table: str = Field("videos", description="table written by pipelines/embed.py")
    keyword_model: str | None = Field(
        None, description="this machine's copy of the ingest's keyword model "
        "(default: the model the table records)")
    nprobes: int = Field(NPROBES, ge=1, description="IVF partitions searched")
    refine_factor: int | None = Field(None, ge=1, description=(
        "candidates x this re-ranked by exact distance before the full model (default: "
        "what the table's index needs, 10 for IVF_PQ, 1 for HNSW_SQ and HNSW_FLAT)"))
    ef: int | None = Field(None, ge=1, description=(
        f"HNSW's search breadth, at least the candidates (default: {EF_PER_CANDIDATE} x "
        "the candidates)"))
    prewarm: bool = Field(False, description=(
        "before the first request, load the vector index and read the columns a search "
        "fetches once (a local table whose host memory holds them)"))
    consistency_interval_s: float | None = Field(
        5.0, description="seconds before new commits to the table are seen")
    max_batch_size: int = Field(16, ge=1, description="most queries searched together")
    batch_wait_timeout_s: float = Field(
        0.005, ge=0, description="longest wait for more queries to fill a batch")
    min_replicas: int = Field(1, ge=0, description="fewest replicas the autoscaler keeps")
    max_replicas: int = Field(4, ge=1, description="most replicas the autoscaler starts")
    cpus_per_replica: float = Field(1.0, gt=0, description=(
        "CPUs each replica reserves, and its PyTorch threads"))
    gpus_per_replica: float = Field(0.0, ge=0, description=(
        "GPUs each replica reserves (a fraction shares one); with more than 0 the model "
        "runs on the GPU"))
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description=(
        "where each replica's model runs: auto (cuda when the replica reserves a GPU), "
        "cpu, or cuda (which reserves one GPU per replica unless gpus_per_replica says)"))

    @model_validator(mode="after")
    def _gpus_for_cuda(self) -> "SearchArgs":
        """A replica told to run on cuda reserves a GPU, so that Ray shows it one."""
        if self.device == "cuda" and not self.gpus_per_replica:
            self.gpus_per_replica = 1.0
        if self.device == "cpu" and self.gpus_per_replica:
            raise ValueError("gpus_per_replica needs device=cuda or auto, not cpu")
        return self


class SearchRequest(BaseModel):
    text: str = Field(description="what to look for, in words")
    k: int = Field(10, description="results to return")
    candidates: int = Field(100, description="nearest neighbours the full model reranks")
    filter: dict[str, str | int | bool] = Field(
        default_factory=dict, description="column = value conditions on metadata columns")
    where: str | None = Field(None, description=(
        "SQL filter on metadata columns, as query.py's --where (\"duration_s < 30\"); "
        "joined to filter with AND"))
    moments: int = Field(1, ge=1, le=100, description=(
        "moments per video: above 1, each result lists the moments of up to this many of "
        "its video's best windows among the candidates"))


def filterable_columns(schema: pa.Schema) -> frozenset[str]:
    """The table's columns a request may filter on: scalar strings, integers, booleans."""
    return frozenset(
        f.name for f in schema
        if pa.types.is_string(f.type) or pa.types.is_integer(f.type)
        or pa.types.is_boolean(f.type))


def replica_device(args: SearchArgs) -> str:
    """Where a replica's model runs: ``auto`` means the GPU when the replica reserves one
    (Ray then shows it just that GPU), else the CPU."""
    if args.device == "auto":
        return "cuda" if args.gpus_per_replica > 0 else "cpu"
    return resolve_device(args.device)


def filter_sql(conditions: dict[str, str | int | bool], allowed: frozenset[str]) -> str | None:
    """The SQL ``where`` of a request's filter (None for none); ValueError names a column
    that cannot be filtered on."""
    unknown = sorted(set(conditions) - allowed)
    if unknown:
        raise ValueError(f"cannot filter on {', '.join(unknown)}: the table's filterable "
                         f"columns are {', '.join(sorted(allowed))}")
    return " AND ".join(sql_equals(c, v) for c, v in sorted(conditions.items())) or None


class Query(NamedTuple):
    """One request as the batched search takes it: the checked text and SQL filter."""

    text: str
    k: int
    candidates: int
    where: str | None
    moments: int


class Answer(NamedTuple):
    """One request's results, the number of requests searched with it and the
    milliseconds of each step of their batch."""

    results: pd.DataFrame
    batch: int
    timings_ms: dict[str, float]


@serve.deployment
@serve.ingress(api)
class SearchService:
    """One replica: a ``VideoSearch`` and the HTTP routes over it."""

    def __init__(self, args: SearchArgs) -> None:
        # the text tower's and the rerank's threads: the replica's CPUs, no more (a thread
        # that waits for a core spins on it, and the proxy and LanceDB need one too)
        torch.set_num_threads(max(1, int(args.cpus_per_replica)))
        self.search = VideoSearch(args.db, args.table, args.checkpoint,
                                  keyword_model=args.keyword_model, nprobes=args.nprobes,
                                  refine_factor=args.refine_factor, ef=args.ef,
                                  consistency_interval_s=args.consistency_interval_s,
                                  device=replica_device(args))
        if args.prewarm:
            self.search.prewarm()
        self.table_name = args.table
        self.filterable = filterable_columns(self.search.table.schema)
        self.answer.set_max_batch_size(args.max_batch_size)
        self.answer.set_batch_wait_timeout_s(args.batch_wait_timeout_s)

    @serve.batch
    async def answer(self, queries: list[Query]) -> list[Answer | Exception]:
        """The answers to the queries of one batch: the texts in one pass of the text
        tower, then for each distinct ``candidates``, filter and ``moments`` its queries'
        searches (``VideoSearch.search_encoded_many``). A query whose search fails gets
        its exception, the others their answers.

        It works on the replica's event loop, not in a thread, as Serve's batching
        examples do: Serve forms the next batch as soon as this one starts, so while a
        worker thread searched, the requests arriving meanwhile left in batches of one
        or two (a mean of 1.7 of 8 clients). Blocked, they wait for this batch to end and
        go together in the next.
        """
        started = time.perf_counter()
        features = self.search.encode_texts([q.text for q in queries])
        text_ms = 1e3 * (time.perf_counter() - started)
        groups: dict[tuple[int, str | None, int], list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault((q.candidates, q.where, q.moments), []).append(i)
        answers: dict[int, Answer | Exception] = {}
        for (candidates, where, moments), members in groups.items():
            try:
                results, timings = self.search.search_encoded_many(
                    features[torch.tensor(members)], [queries[i].k for i in members],
                    candidates, where, moments)
            except Exception as exc:  # answered to this group's requests alone
                results, timings = [exc] * len(members), {}
            ms = {"text": text_ms, **{step.removesuffix("_s"): 1e3 * seconds
                                      for step, seconds in timings.items()}}
            for i, result in zip(members, results, strict=True):
                answers[i] = result if isinstance(result, Exception) else Answer(
                    result, len(queries), ms)
        return [answers[i] for i in range(len(queries))]

    @api.post("/search")
    async def search_videos(self, request: SearchRequest) -> dict:
        try:
            text, note = self.search.checked_query(request.text, request.k, request.candidates)
            where = " AND ".join(f"({sql})" for sql in (
                filter_sql(request.filter, self.filterable),
                request.where and checked_where(request.where)) if sql) or None
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        answer = await self.answer(Query(text, request.k, request.candidates, where,
                                         request.moments))
        if isinstance(answer, ModelMismatchError):  # the table was re-embedded by another model
            raise HTTPException(status_code=409, detail=str(answer))
        if isinstance(answer, ValueError):  # e.g. a where that is not SQL over the columns
            raise HTTPException(status_code=400, detail=first_line(answer))
        if isinstance(answer, Exception):
            raise answer
        return {
            "results": answer.results.to_dict(orient="records"),
            "notes": [note] if note else [],
            "model_id": self.search.model_id,
            "text_batch": answer.batch,
            "timings_ms": answer.timings_ms,
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
        max_ongoing_requests=args.max_batch_size,
        ray_actor_options={"num_cpus": args.cpus_per_replica,
                           "num_gpus": args.gpus_per_replica},
    ).bind(args)

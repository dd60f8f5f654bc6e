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
import base64
import contextlib
import json
import logging
import mimetypes
import os
import time
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import quote, unquote

import pandas as pd
import pyarrow as pa
import torch
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, Field, model_validator
from ray import serve
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from pipelines.core.devices import resolve_device
from pipelines.core.messages import first_line
from pipelines.core.sql import checked_where, sql_equals
from pipelines.index.media import UnknownVideoError, VideoMedia
from pipelines.index.search import EF_PER_CANDIDATE, NPROBES, ModelMismatchError, VideoSearch
from pipelines.serving.access import TOKEN_COOKIE, TOKEN_ENV, Door, Refused

#: the largest image ``POST /search/image`` takes by default: a phone's photo fits
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
#: what a multipart body may add to its image: the boundaries, headers and small fields
UPLOAD_OVERHEAD_BYTES = 64 * 1024

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
    token: str | None = Field(None, description=(
        f"the bearer token every data route needs (default: ${TOKEN_ENV}; with none, "
        "the service answers this machine only)"))
    allow_remote: bool = Field(False, description=(
        "with no token, answer other machines too (anyone who reaches the port)"))
    max_upload_bytes: int = Field(MAX_UPLOAD_BYTES, ge=1, description=(
        "largest image POST /search/image takes"))

    @model_validator(mode="after")
    def _gpus_for_cuda(self) -> "SearchArgs":
        """A replica told to run on cuda reserves a GPU, so that Ray shows it one."""
        if self.device == "cuda" and not self.gpus_per_replica:
            self.gpus_per_replica = 1.0
        if self.device == "cpu" and self.gpus_per_replica:
            raise ValueError("gpus_per_replica needs device=cuda or auto, not cpu")
        return self


class Scope(BaseModel):
    """What any search request may say besides what to look for."""

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
    thumbnails: Literal["url", "inline"] = Field("url", description=(
        "each result's thumbnail as a URL of GET /thumbnails, or inline: the JPEG as a "
        "data: URL in the answer (what the page asks for: one request a search, not one "
        "per result)"))


class SearchRequest(Scope):
    text: str = Field(description="what to look for, in words")
    hybrid: bool = Field(False, description=(
        "also take as candidates the rows whose predicted tags match the text's (a table "
        "embedded by a model with semantic levels)"))


class SimilarRequest(Scope):
    video_id: str = Field(description="the video to find more like")
    at_s: float | None = Field(None, description=(
        "the second of a long video whose window to find more like (default: the "
        "whole video)"))


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
    tag_query: str | None = None  # a hybrid search's tags (VideoSearch.tag_query)


class Answer(NamedTuple):
    """One request's results, the number of requests searched with it and the
    milliseconds of each step of their batch."""

    results: pd.DataFrame
    batch: int
    timings_ms: dict[str, float]


def http_error(exc: Exception) -> Exception:
    """The HTTP answer to a search's exception: 404 for a video the table lacks, 409 for a
    table re-embedded by another model, 400 for a bad request (one line); anything else
    as it is (a 500)."""
    if isinstance(exc, UnknownVideoError):
        return HTTPException(status_code=404, detail=str(exc.args[0]))
    if isinstance(exc, ModelMismatchError):
        return HTTPException(status_code=409, detail=str(exc))
    if isinstance(exc, ValueError):  # e.g. a where that is not SQL over the columns
        return HTTPException(status_code=400, detail=first_line(exc))
    return exc


def result_records(results: pd.DataFrame, root: str,
                   media: VideoMedia | None = None) -> list[dict]:
    """Search results as JSON records, each with its best moment's thumbnail, the stored
    frame nearest the moment's middle: its URL under the app's ``root`` path (its route
    prefix), or with ``media`` the JPEG itself as a ``data:`` URL."""
    records = results.to_dict(orient="records")
    for record in records:
        middle = (record["start_s"] + record["end_s"]) / 2
        record["thumbnail"] = f"{root}/thumbnails/{quote(record['video_id'], safe='')}" \
                              f"?t={middle:.1f}"
        if media is not None:
            with contextlib.suppress(UnknownVideoError):  # gone since: its URL says so
                jpeg = media.frame(record["video_id"], middle)  # an id of the table
                record["thumbnail"] = f"data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}"
    return records


#: the page's own files, and what a browser may do with them: run no script and load
#: no style but the app's, show media from the app (and presigned object-store links),
#: send the page's requests to the app only, and be framed by no other site
PAGE_FOLDER = Path(__file__).parent / "serving" / "static"
PAGE_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
              ".css": "text/css; charset=utf-8"}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' https: http:; connect-src 'self'; form-action 'none'; "
        "base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def page_file(name: str) -> Response:
    """One of the page's own files, with ``PAGE_HEADERS``."""
    path = PAGE_FOLDER / name
    return Response(path.read_bytes(), media_type=PAGE_TYPES[path.suffix],
                    headers=PAGE_HEADERS)


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
        self.door = Door(args.token, args.allow_remote)
        self.max_upload_bytes = args.max_upload_bytes
        self._too_large = f"the image is larger than {args.max_upload_bytes:,} bytes"
        logging.getLogger("ray.serve").info(self.door.announcement())
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
                    candidates, where, moments, [queries[i].tag_query for i in members])
            except Exception as exc:  # answered to this group's requests alone
                results, timings = [exc] * len(members), {}
            ms = {"text": text_ms, **{step.removesuffix("_s"): 1e3 * seconds
                                      for step, seconds in timings.items()}}
            for i, result in zip(members, results, strict=True):
                answers[i] = result if isinstance(result, Exception) else Answer(
                    result, len(queries), ms)
        return [answers[i] for i in range(len(queries))]

    def _where(self, scope: Scope) -> str | None:
        """The SQL filter of a request's ``filter`` and ``where`` (ValueError if bad)."""
        return " AND ".join(f"({sql})" for sql in (
            filter_sql(scope.filter, self.filterable),
            scope.where and checked_where(scope.where)) if sql) or None

    def _let_in(self, request: Request, media: bool = False, page: bool = False) -> None:
        """Raise a 401 or 403 for a request the door does not let in; ``media`` routes
        also take the page's token cookie, and the ``page`` needs no token, only to be
        asked from this machine when there is none (``pipelines.serving.access``)."""
        client = request.client.host if request.client else None
        try:
            if page:
                self.door.check_reach(client)
            else:
                self.door.check(client, request.headers.get("authorization"),
                                unquote(request.cookies.get(TOKEN_COOKIE) or "") or None
                                if media else None)
        except Refused as refused:
            raise HTTPException(status_code=refused.status, detail=refused.detail,
                                headers={"WWW-Authenticate": "Bearer"}
                                if refused.status == 401 else None) from None

    async def _records(self, results: pd.DataFrame, scope: Scope, http: Request
                       ) -> list[dict]:
        """``result_records`` of a request's results, inline thumbnails read off the
        event loop (the loop keeps forming batches meanwhile)."""
        media = self.search.media if scope.thumbnails == "inline" else None
        return await run_in_threadpool(result_records, results,
                                       http.scope.get("root_path", ""), media)

    async def _example_answer(self, scope: Scope, http: Request, search, *args) -> dict:
        """The answer to a search by example: ``search(*args)`` (``VideoSearch.similar``
        or ``search_image``) off the event loop, its exceptions as ``http_error`` says."""
        try:
            results = await run_in_threadpool(search, *args)
        except Exception as exc:  # noqa: BLE001 - each kind answered by http_error
            raise http_error(exc) from None
        return {"results": await self._records(results, scope, http),
                "model_id": self.search.model_id}

    @api.post("/search")
    async def search_videos(self, request: SearchRequest, http: Request) -> dict:
        self._let_in(http)
        try:
            text, note = self.search.checked_query(request.text, request.k, request.candidates)
            where = self._where(request)
            tag_query = self.search.tag_query(text) if request.hybrid else None
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        answer = await self.answer(Query(text, request.k, request.candidates, where,
                                         request.moments, tag_query))
        if isinstance(answer, Exception):
            raise http_error(answer)
        return {
            "results": await self._records(answer.results, request, http),
            "notes": [note] if note else [],
            "model_id": self.search.model_id,
            "text_batch": answer.batch,
            "timings_ms": answer.timings_ms,
        }

    @api.post("/search/similar")
    async def search_similar(self, request: SimilarRequest, http: Request) -> dict:
        """More like one of the table's videos (``VideoSearch.similar``)."""
        self._let_in(http)
        try:
            where = self._where(request)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return await self._example_answer(
            request, http, self.search.similar, request.video_id, request.k,
            request.candidates, where, request.moments, request.at_s)

    @api.post("/search/image")
    async def search_by_image(self, http: Request) -> dict:
        """Videos like an uploaded image (multipart: ``image``, and optionally ``k``,
        ``candidates``, ``where``, ``moments`` and ``filter`` as JSON)."""
        self._let_in(http)
        declared = int(http.headers.get("content-length") or 0)
        if declared > self.max_upload_bytes + UPLOAD_OVERHEAD_BYTES:
            raise HTTPException(status_code=413, detail=self._too_large)
        try:
            form = await http.form(max_files=1, max_fields=8)
        except Exception as exc:  # noqa: BLE001 - Starlette's parser: a malformed body
            raise HTTPException(status_code=400, detail=f"not a multipart form: "
                                f"{first_line(exc)}") from None
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise HTTPException(status_code=400, detail="send the image as the form's "
                                "'image' file")
        data = await upload.read(self.max_upload_bytes + 1)
        if len(data) > self.max_upload_bytes:
            raise HTTPException(status_code=413, detail=self._too_large)
        try:
            scope = Scope.model_validate({
                **{key: form[key] for key in ("k", "candidates", "where", "moments",
                                              "thumbnails")
                   if isinstance(form.get(key), str)},
                "filter": json.loads(form.get("filter") or "{}")})
            where = self._where(scope)
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise HTTPException(status_code=400, detail=first_line(exc)) from None
        return await self._example_answer(scope, http, self.search.search_image, data,
                                          scope.k, scope.candidates, where, scope.moments)

    @api.get("/thumbnails/{video_id:path}")
    def thumbnail(self, video_id: str, http: Request, t: float = 0.0) -> Response:
        """The stored frame of a video of the table nearest ``t`` seconds, as a JPEG."""
        self._let_in(http, media=True)
        try:
            jpeg = self.search.media.thumbnail(video_id, t)
        except Exception as exc:  # noqa: BLE001 - each kind answered by http_error
            raise http_error(exc) from None
        return Response(jpeg, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    @api.get("/videos/{video_id:path}")
    def video(self, video_id: str, http: Request) -> Response:
        """A video of the table: its file streamed (with range requests), or a redirect
        to a presigned link for one in object storage."""
        self._let_in(http, media=True)
        try:
            playable = self.search.media.playable(video_id)
        except Exception as exc:  # noqa: BLE001 - each kind answered by http_error
            raise http_error(exc) from None
        if playable.url is not None:
            return RedirectResponse(playable.url, status_code=307)
        if not os.path.isfile(playable.path):
            raise HTTPException(status_code=404, detail=f"video {video_id!r}: its file is "
                                "gone from this machine")
        kind = mimetypes.guess_type(playable.path)[0] or "application/octet-stream"
        return FileResponse(playable.path, media_type=kind)

    @api.get("/captions/{video_id:path}")
    def captions(self, video_id: str, http: Request) -> dict:
        """What the ingest output says of a video of the table: its captions (with their
        spans and keywords)."""
        self._let_in(http, media=True)
        try:
            return {"video_id": video_id, "captions": self.search.media.captions(video_id)}
        except Exception as exc:  # noqa: BLE001 - each kind answered by http_error
            raise http_error(exc) from None

    @api.get("/info")
    def describe(self, http: Request) -> dict:
        """The table served: its rows, model, the columns a filter may name and its
        splits."""
        self._let_in(http)
        return {"table": self.table_name, "rows": self.search.table.count_rows(),
                "model_id": self.search.model_id,
                "filterable_columns": sorted(self.filterable),
                "splits": self.search.media.splits()}

    @api.get("/")
    def page(self, http: Request) -> Response:
        """The search page: it holds no data, so anyone who may reach the service may
        load it (its requests need the token); no script but its own runs in it."""
        self._let_in(http, page=True)
        return page_file("index.html")

    @api.get("/page.{kind}")
    def page_asset(self, kind: str, http: Request) -> Response:
        self._let_in(http, page=True)
        if kind not in ("js", "css"):
            raise HTTPException(status_code=404, detail="not found")
        return page_file(f"page.{kind}")


def app(arguments: dict) -> serve.Application:
    """The application ``serve run pipelines.serve:app`` builds from its arguments
    (validated as :class:`SearchArgs`: a missing or mistyped one is named)."""
    args = SearchArgs.model_validate(arguments)
    door = Door.of(args.token, args.allow_remote)  # the token here, or in this environment
    args = args.model_copy(update={"token": door.token})  # what every replica checks
    print(door.announcement(), flush=True)
    return SearchService.options(
        autoscaling_config={"min_replicas": args.min_replicas,
                            "max_replicas": args.max_replicas,
                            "target_ongoing_requests": args.max_batch_size},
        max_ongoing_requests=args.max_batch_size,
        ray_actor_options={"num_cpus": args.cpus_per_replica,
                           "num_gpus": args.gpus_per_replica},
    ).bind(args)

"""Latency and recall of two-stage search, exact and through each vector index type.

    python benchmarks/query_latency.py [--rows 10000 100000] [--queries 50] [--candidates 100]
        [--index-type IVF_PQ HNSW_SQ] [--nprobes 20] [--refine-factor 1] [--ef 150 300]
        [--vectors uniform|clustered] [--clusters N] [--feature-precision float16 int8]
        [--feature-layout packed columns]
        [--file-version 2.1 2.2] [--warm-table] [--windows-per-video 100]
    python benchmarks/query_latency.py --rows 1000000 --queries 30 --nprobes 20 50 \
        --refine-factor 1 5      # ~26 GB of table in the temporary folder (TMPDIR)

Prints one JSON object. For each table size it writes a LanceDB table of
random unit vectors and random rerank features at ViT-B-32 sizes (512-d, 12
frames), as ``pipelines/embed.py`` lays them out (streamed in 10,000-row
batches, so a million rows fit in memory), then times
``VideoSearch.search_encoded`` (``k=10``) with exact search and again after
building each ``--index-type`` in turn (the embed job's ``create_vector_index``;
the table laid out as the job leaves it: fragments compacted, a scalar index on
``video_id``), once for each ``--nprobes`` x ``--refine-factor``. With
``--windows-per-video N`` the rows are N overlapping windows of each video (a long
video as the ingest cuts it), and every search groups its candidates into videos. Every timed
query is a distinct text, so each fetches other rows; the index phase asks the
exact phase's queries. Reported apart, p50 and p95 in milliseconds:

- ``text_ms``: encoding the query (``VideoSearch.encode_texts``: tokens,
  keywords, text tower);
- ``search_ms``: the vector search, returning the candidates' features
  (``VideoSearch``'s one query);
- ``rerank_ms``: the full model's score of the candidates;
- ``answer_ms``: the fetch of the top 10's ``video_id`` and ``uri``;
- ``rest_ms``: search + rerank + answer, everything after the text (goal: p50 <= 20
  ms, p95 <= 40 ms with 100 candidates);
- ``vector_ms``, ``fetch_ms``, ``two_phase_ms``: where ``search_ms`` goes, from
  the same query asked in two steps beside it: the vector search selecting only
  ``video_id`` and ``_distance`` (with ``_rowid``), then the fetch of the
  candidates' rerank columns by row id (Lance's ``_take_rows``); their sum.
  Which of the two runs first alternates from query to query.
  ``two_phase_same`` is the share of queries whose two-step candidates are the
  one query's (same rows in the same order, same rerank columns).
  ``videos_answered`` is the mean number of videos a search answers with, of
  the 10 asked for: with windows, 100 candidates may hold fewer videos.

Per index setting, ``recall_at_10`` is the mean over the queries of the share
of the exact search's final top 10 (after the rerank) that the indexed search
also returns (goal: >= 0.95); ``candidate_recall`` the same for the first
stage's ``--candidates`` (before the rerank). Per index type, ``disk_gb`` is the
table's folder once indexed, ``index_build_s`` the index's build, and its shape
at LanceDB's defaults: ``index_partitions`` (IVF_PQ: one at 10,000 rows, where
``--nprobes`` changes nothing), and ``pq_sub_vectors`` or HNSW's ``hnsw_m`` and
``hnsw_levels``. ``--refine-factor`` applies to both types; HNSW searches
``--ef`` wide (``VideoSearch``'s ``ef``; by default its own, 3 x the candidates),
one cell per value.

Each cell records ``cached_gb``, the page cache's size when its timing began.
The build leaves the cache holding whatever it touched last, so the first
touch of a candidate's rows may go to the disk. ``--warm-table`` times each
index's cells once more (``warm_table``: true) after ``VideoSearch.prewarm``
(``warm_read_s``: loading the index and reading the columns a search fetches
once), as a service started with ``prewarm`` has them in memory when the table
fits. They ask the same queries as the first pass, whose rows that pass has
read, as the prewarm reads every other row.

``--vectors`` says what the table's vectors and the queries' first-stage
vectors are:

- ``uniform`` (default; the figures of ``docs/benchmarks.md`` before
  clustered vectors): table vectors uniform on the sphere, and the queries'
  own text embeddings, unrelated to the table. No clusters for the IVF
  partitions, and product-quantisation error as large as the gaps between
  neighbours: recall here is a floor.
- ``clustered``: like real CLIP embeddings, a mixture on the sphere.
  ``--clusters`` centres (default: one per 1,000 rows) uniform on the sphere;
  each row is ``normalize(centre + sigma * gaussian)``, with ``sigma`` set so
  that a row's cosine to its centre is about ``--row-cosine`` (0.8:
  ``sigma = sqrt(1/0.8**2 - 1) / sqrt(dim)``, 0.033 at 512-d). The queries
  come from the same distribution, as a caption's text embedding lies near
  its video's: each query's first-stage vector is
  ``normalize(v + sigma_q * gaussian)`` for the vector ``v`` of a random table
  row, its cosine to ``v`` about ``--query-cosine`` (0.85). The query text is
  still encoded (and timed) as usual, then its ``global_feature`` is replaced
  by that vector times the encoded feature's norm, so the first stage asks
  that vector and the rerank scores the same features; exact and indexed
  searches use the same features. The JSON records the cosines measured.

The rerank features are random in both modes (unrelated to the vectors), so the
rerank picks its top 10 from the candidates at random as far as the first
stage is concerned: ``recall_at_10`` tracks ``candidate_recall``.

The model is ``lfemi`` over a random-init ``ViT-B-32``: weights do not change
the cost. Keywords are off (``--keyword-model none``) unless a local sentence
model folder is given, since KeyBERT's time is part of the text, not of the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from pipelines.index import rerank_features
from pipelines.index.rerank_features import DEFAULT_LAYOUT, FeatureLayout
from pipelines.index.search import EF_PER_CANDIDATE, ROW_OFFSET, VideoSearch
from pipelines.index.table import (
    FILE_VERSION,
    INDEX_TYPES,
    METADATA_COLUMNS,
    TableState,
    create_vector_index,
    ensure_indexes,
    keep_state,
    table_schema,
)
from pipelines.ingestion.schemas import VIDEOS
from pipelines.ingestion.video_decode import SamplingOptions
from vtr_models import TextFeatures
from vtr_models.checkpoint import checkpoint_id, save_checkpoint
from vtr_models.factory import create_model

LAYOUTS = ("packed", "columns")  # FeatureLayout.packed, by name
QUERIES = ["a dog catches a frisbee on the beach", "a man is cooking in a kitchen",
           "cars drive through a city at night", "a woman sings on a stage",
           "children play football in a park"]
CENTRE_SEED = 1_000_003  # not a batch's seed (those are row offsets)
QUERY_SEED = 2_000_003
# seconds between a long video's window starts: the ingest's default --segment-stride
WINDOW_STRIDE_S = SamplingOptions.segment_stride


def noise_sigma(cosine: float, dim: int) -> float:
    """The per-coordinate gaussian ``sigma`` for which ``normalize(u + sigma * g)`` has
    cosine about ``cosine`` to the unit vector ``u`` in ``dim`` dimensions
    (``|u + sigma * g|^2 ~ 1 + sigma^2 * dim``)."""
    return math.sqrt(1 / cosine**2 - 1) / math.sqrt(dim)


def normalized(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class Clusters:
    """The mixture the clustered table's vectors come from."""

    centres: np.ndarray  # [clusters, dim] unit vectors
    sigma: float

    @classmethod
    def random(cls, count: int, dim: int, row_cosine: float) -> Clusters:
        rng = np.random.default_rng(CENTRE_SEED)
        centres = normalized(rng.standard_normal((count, dim), dtype=np.float32))
        return cls(centres, noise_sigma(row_cosine, dim))

    def draw(self, rng: np.random.Generator, count: int, which: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """``count`` unit vectors of the mixture, and each one's centre index (random, or
        ``which``)."""
        if which is None:
            which = rng.integers(len(self.centres), size=count)
        noise = rng.standard_normal((count, self.centres.shape[1]), dtype=np.float32)
        return normalized(self.centres[which] + self.sigma * noise), which


def random_rows(count: int, dim: int, frames: int, model_id: str, seed: int,
                clusters: Clusters | None = None,
                layout: FeatureLayout = DEFAULT_LAYOUT, windows: int = 1) -> pa.Table:
    """``count`` rows of the video table's schema with random unit vectors (uniform on
    the sphere, or drawn from ``clusters``) and random features stored in ``layout``.

    Row ``i`` (counted from ``seed``, the rows' offset in the table) is window ``i %
    windows`` of video ``i // windows``: ``frames`` frames a second apart, starting
    ``WINDOW_STRIDE_S`` after the window before, as the ingest's default windows of a
    long video. Clustered, a video's windows share its centre (one topic per video)."""
    rng = np.random.default_rng(seed)
    schema = table_schema(VIDEOS, dim, frames, layout=layout)
    positions = np.arange(seed, seed + count)
    videos, starts = positions // windows, (positions % windows) * float(WINDOW_STRIDE_S)
    if clusters is None:
        vectors = normalized(rng.standard_normal((count, dim), dtype=np.float32))
    else:
        topic = np.random.default_rng([CENTRE_SEED, windows]).integers(
            len(clusters.centres), size=int(videos[-1]) + 1)
        vectors, _ = clusters.draw(rng, count, which=topic[videos] if windows > 1 else None)
    features = torch.from_numpy(rng.standard_normal((count, frames, dim), dtype=np.float32))
    ids = [f"v{i:07d}" for i in videos]
    columns = {name: pa.nulls(count, schema.field(name).type) for name in METADATA_COLUMNS}
    columns.update({
        "video_id": pa.array(ids), "uri": pa.array([f"s3://archive/{i}.mp4" for i in ids]),
        "split": pa.array(["all"] * count),
        # windows of a frame a second: what the moments of a search read
        "duration_s": pa.array(np.full(count, (windows - 1) * WINDOW_STRIDE_S + float(frames))),
        "timestamps_s": pa.array([[start + t for t in range(frames)] for start in starts],
                                 schema.field("timestamps_s").type),
        "window_start_s": pa.array(starts),
        "window_end_s": pa.array(starts + frames),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        **layout.encode(features, features),  # the same features as local ones
        "feature_frames": pa.array(np.full(count, frames, np.int32)),
        "model_id": pa.array([model_id] * count),
    })
    return pa.table(columns, schema=schema)


def build_table(path: Path, rows: int, dim: int, frames: int, model_id: str,
                index: bool = True, clusters: Clusters | None = None,
                layout: FeatureLayout = DEFAULT_LAYOUT, file_version: str = FILE_VERSION,
                index_type: str = "IVF_PQ", windows: int = 1):
    """A LanceDB ``videos`` table of ``rows`` random rows at ``path`` (a database folder),
    rerank features in ``layout``, in Lance file format ``file_version``,
    written in one stream of 10,000-row batches (one fragment up to about a million rows,
    nothing held in memory), laid out as the embed job leaves it: a ``video_id`` index,
    fragments compacted, and, with ``index``, a vector index of ``index_type``; each
    video ``windows`` rows (``random_rows``). Returns the table."""
    import lancedb

    schema = table_schema(VIDEOS, dim, frames, layout=layout)
    batches = (batch for start in range(0, rows, 10_000)
               for batch in random_rows(min(10_000, rows - start), dim, frames, model_id,
                                        seed=start, clusters=clusters,
                                        layout=layout, windows=windows).to_batches())
    table = lancedb.connect(str(path)).create_table("videos", schema=schema,
                                                    data_storage_version=file_version)
    table.add(pa.RecordBatchReader.from_batches(schema, batches), write_parallelism=1)
    keep_state(table.to_lance(), TableState("benchmark", 0, model_id))  # as embed records it
    ensure_indexes(table, min_rows=0 if index else rows + 1, index_type=index_type)
    return table


def query_vectors(rows_at, row_count: int, count: int, query_cosine: float
                  ) -> tuple[np.ndarray, float]:
    """``count`` first-stage query vectors near random rows of a table of ``row_count``
    rows (``rows_at(offsets)``: those rows' vectors, ``[len(offsets), dim]``):
    ``normalize(row + sigma * gaussian)``, cosine about ``query_cosine`` to the row;
    and their mean cosine to their rows."""
    rng = np.random.default_rng(QUERY_SEED)
    rows = rows_at(rng.choice(row_count, size=count, replace=False))
    noise = rng.standard_normal(rows.shape, dtype=np.float32)
    vectors = normalized(rows + noise_sigma(query_cosine, rows.shape[1]) * noise)
    return vectors, float(np.mean(np.sum(vectors * rows, axis=1)))


def table_vectors(table, offsets: np.ndarray) -> np.ndarray:
    """The ``vector`` column of a LanceDB ``table``'s rows at ``offsets``."""
    rows = table.to_lance().take(offsets.tolist(), columns=["vector"]).column("vector")
    return rows.combine_chunks().flatten().to_numpy().reshape(len(offsets), -1)


def with_first_stage(features: TextFeatures, vector: np.ndarray) -> TextFeatures:
    """``features`` of one text whose ``text_embedding`` is the unit ``vector``: its
    global feature replaced by ``vector`` at the encoded feature's norm."""
    old = features.global_feature
    new = torch.from_numpy(vector).to(old.dtype).unsqueeze(0) * old.norm(dim=-1, keepdim=True)
    return dataclasses.replace(features, global_feature=new)


def index_shape(table) -> dict:
    """The vector index's IVF partitions and its sub-index's size parameters (LanceDB's
    defaults for the table's size): PQ sub-vectors, or HNSW's ``m`` and levels."""
    name = next(i.name for i in table.list_indices() if i.columns == ["vector"])
    segment = table.to_lance().stats.index_stats(name)["indices"][0]
    sub = segment["sub_index"]
    shape = {"index_partitions": segment["num_partitions"]}
    if "num_sub_vectors" in sub:
        shape["pq_sub_vectors"] = sub["num_sub_vectors"]
    else:
        shape["hnsw_m"] = sub["params"]["m"]
        shape["hnsw_levels"] = sub["params"]["max_level"]
    return shape


def folder_gb(path: Path) -> float:
    """Bytes of the files under ``path``, in GB."""
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9, 2)


def cached_gb() -> float:
    """The page cache's size now (``Cached`` in ``/proc/meminfo``), in GB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Cached:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return float("nan")


def percentiles(values: list[float]) -> dict:
    ms = np.asarray(values) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 2),
            "p95": round(float(np.percentile(ms, 95)), 2)}


def query_texts(count: int) -> list[str]:
    """``count`` distinct texts: other vectors, other rows each time."""
    return [f"{QUERIES[i % len(QUERIES)]}, take {i}" for i in range(count)]


def take_in_order(dataset, row_ids: pa.Array, columns: list[str]) -> pa.Table:
    """``columns`` of the rows ``row_ids`` of a Lance ``dataset``, in that order."""
    return dataset._take_rows(row_ids.to_pylist(), columns=columns)


@torch.no_grad()
def two_phase(search: VideoSearch, features: TextFeatures, candidates: int
              ) -> tuple[pa.Table, float, float]:
    """The first stage in two steps: the vector search for ids and distances, then the
    rerank columns by row id. The candidates (``fetched_columns``, ``_rowid``), and the
    seconds of each step."""
    started = time.perf_counter()
    [ids] = search.first_stage(features, candidates, ["video_id", "_distance"],
                               with_row_id=True)
    searched = time.perf_counter()
    version = search.current_version()
    fetched = take_in_order(version.dataset, ids.column("_rowid").combine_chunks(),
                            version.columns)
    done = time.perf_counter()
    for name in ("video_id", "_distance", "_rowid"):
        if name not in fetched.column_names:  # a table of windows fetches video_id itself
            fetched = fetched.append_column(name, ids.column(name))
    return fetched, searched - started, done - searched


@torch.no_grad()
def one_query(search: VideoSearch, features: TextFeatures, candidates: int) -> pa.Table:
    """The candidates as ``VideoSearch.search_encoded`` fetches them, in one query."""
    return search.first_stage(features, candidates)[0]


def same_candidates(one: pa.Table, two: pa.Table) -> bool:
    """Whether two first stages found the same rows in the same order, with the same
    rerank columns (``one``'s, but for the row offsets, which ``two`` does not fetch)."""
    return all(one.column(c).combine_chunks().equals(two.column(c).combine_chunks())
               for c in one.column_names if c != ROW_OFFSET)


def time_search(search: VideoSearch, texts: list[str], candidates: int,
                vectors: np.ndarray | None) -> tuple[dict, list[list[str]], list[list[str]]]:
    """p50/p95 of each stage over searches of ``texts`` (after two warm-up queries), each
    text's first-stage vector replaced by its row of ``vectors`` unless None; each text's
    top 10 video ids and its candidates' row ids."""
    for text in QUERIES[:2]:
        search.search(text, k=10, candidates=candidates)
        two_phase(search, search.encode_texts([text]), candidates)
    names = ["text_ms", "search_ms", "rerank_ms", "answer_ms", "rest_ms", "vector_ms", "fetch_ms",
             "two_phase_ms"]
    timings: dict[str, list[float]] = {name: [] for name in names}
    tops, candidate_ids, same = [], [], []
    for i, text in enumerate(texts):
        started = time.perf_counter()
        features = search.encode_texts([text])
        timings["text_ms"].append(time.perf_counter() - started)
        if vectors is not None:
            features = with_first_stage(features, vectors[i])
        if i % 2:  # which goes first alternates: neither always finds the other's pages
            split = two_phase(search, features, candidates)
        result, t = search.search_encoded(features, 10, candidates)
        if not i % 2:
            split = two_phase(search, features, candidates)
        rows, vector_s, fetch_s = split
        tops.append(result["video_id"].tolist())
        candidate_ids.append(rows.column("_rowid").to_pylist())  # windows: rows, not videos
        # the one query again, untimed, to check the two steps find what it finds
        same.append(same_candidates(one_query(search, features, candidates), rows))
        for name, seconds in [("search_ms", t["search_s"]), ("rerank_ms", t["rerank_s"]),
                              ("answer_ms", t["answer_s"]), ("rest_ms", sum(t.values())),
                              ("vector_ms", vector_s), ("fetch_ms", fetch_s),
                              ("two_phase_ms", vector_s + fetch_s)]:
            timings[name].append(seconds)
    summary = {name: percentiles(values) for name, values in timings.items()}
    summary["two_phase_same"] = round(float(np.mean(same)), 3)
    # windows: the videos among the candidates, of the 10 asked for
    summary["videos_answered"] = round(float(np.mean([len(top) for top in tops])), 2)
    return summary, tops, candidate_ids


def recall(exact: list[list[str]], found: list[list[str]]) -> float:
    """Mean share of each exact list that ``found``'s list holds."""
    return round(float(np.mean([len(set(e) & set(f)) / len(e) for e, f in zip(exact, found,
                                                                        strict=True)])), 3)


def lfemi_checkpoint(folder: Path, backbone: str, keywords: bool) -> tuple[Path, int, int]:
    """A random-init ``lfemi`` checkpoint saved in ``folder``: its path, dim, frames."""
    torch.manual_seed(0)
    model = create_model("lfemi", backbone=backbone, text_enhance=keywords)
    return (save_checkpoint(model, folder / "ckpt"), model.backbone.embed_dim,
            model.config.max_frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000],
                        help="table sizes to time")
    parser.add_argument("--queries", type=int, default=50, help="timed queries per cell")
    parser.add_argument("--candidates", type=int, default=100,
                        help="first-stage candidates per query")
    parser.add_argument("--nprobes", type=int, nargs="+", default=[20],
                        help="IVF partitions searched (VideoSearch default: 20)")
    parser.add_argument("--refine-factor", type=int, nargs="+", default=[1],
                        help="candidates x factor re-ranked by exact distance (default: 1)")
    parser.add_argument("--ef", type=int, nargs="+", default=None,
                        help="HNSW's search breadth, at least the candidates (default: "
                             f"VideoSearch's, {EF_PER_CANDIDATE} x the candidates)")
    parser.add_argument("--index-type", nargs="+", choices=INDEX_TYPES, default=["IVF_PQ"],
                        help="vector indexes to time, each built in turn on the same table "
                             "(default: IVF_PQ, the embed job's default)")
    parser.add_argument("--feature-precision", nargs="+", choices=rerank_features.PRECISIONS,
                        default=["float16"],
                        help="rerank feature storage: one table per precision and size "
                             "(default: float16, the embed job's default)")
    parser.add_argument("--feature-layout", nargs="+", choices=LAYOUTS, default=["packed"],
                        help="rerank features in one packed column (the embed job's, for new "
                             "tables) or one column per feature (tables written before): one "
                             "table per layout and size")
    parser.add_argument("--file-version", nargs="+", default=[FILE_VERSION],
                        help="Lance file format versions: one table per version and size "
                             f"(default: {FILE_VERSION}, the embed job's)")
    parser.add_argument("--vectors", choices=["uniform", "clustered"], default="uniform",
                        help="table and query vectors: uniform on the sphere (queries: "
                             "their texts' embeddings), or a mixture with queries near rows")
    parser.add_argument("--clusters", type=int, default=None,
                        help="clustered: mixture centres (default: one per 1,000 rows)")
    parser.add_argument("--row-cosine", type=float, default=0.8,
                        help="clustered: typical cosine of a row to its centre")
    parser.add_argument("--query-cosine", type=float, default=0.85,
                        help="clustered: typical cosine of a query to its row")
    parser.add_argument("--warm-table", action="store_true",
                        help="time each index's cells twice: as the build leaves the page "
                             "cache, then again after VideoSearch.prewarm (a service "
                             "started with prewarm, where the table fits in memory)")
    parser.add_argument("--windows-per-video", type=int, default=1,
                        help="rows per video: each video's windows, grouped by the search "
                             "into its best one (default: 1, a row per clip)")
    parser.add_argument("--backbone", default="ViT-B-32", help="open_clip name, random init")
    parser.add_argument("--keyword-model", default="none",
                        help="local sentence model folder for query keywords, or none")
    args = parser.parse_args()

    torch.set_num_threads(os.cpu_count() or 1)
    keyword_model = None if args.keyword_model == "none" else args.keyword_model
    texts = query_texts(args.queries)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, dim, frames = lfemi_checkpoint(Path(tmp), args.backbone,
                                                   keyword_model is not None)
        for count, precision, layout_name, version in itertools.product(
                args.rows, args.feature_precision, args.feature_layout, args.file_version):
            folder = Path(tmp) / f"db{count}"
            layout = FeatureLayout(precision, packed=layout_name == "packed")
            row: dict = {"rows": count, "feature_precision": precision,
                         "feature_layout": layout_name, "file_version": version,
                         "candidates": args.candidates,
                         "windows_per_video": args.windows_per_video}
            clusters = vectors = None
            if args.vectors == "clustered":
                clusters = Clusters.random(args.clusters or max(1, count // 1000), dim,
                                           args.row_cosine)
                row["clusters"] = len(clusters.centres)
                row["sigma"] = round(clusters.sigma, 5)
            started = time.perf_counter()
            table = build_table(folder, count, dim, frames, checkpoint_id(checkpoint),
                                index=False, clusters=clusters, layout=layout,
                                file_version=version, windows=args.windows_per_video)
            row["write_s"] = round(time.perf_counter() - started, 1)
            log(f"{count} rows ({precision} {layout_name}, Lance {version}) written in "
                f"{row['write_s']} s")
            if clusters is not None:
                vectors, row["query_row_cosine"] = query_vectors(
                    functools.partial(table_vectors, table), table.count_rows(),
                    len(texts), args.query_cosine)
                row["row_centre_cosine"] = centre_cosine(clusters)
                row["query_row_cosine"] = round(row["query_row_cosine"], 3)
            search = VideoSearch(str(folder), "videos", str(checkpoint),
                                 keyword_model=keyword_model)
            row["exact"], exact_tops, exact_candidates = time_search(
                search, texts, args.candidates, vectors)
            log(f"{count} rows exact: {row['exact']}")
            row["indexes"] = []
            for index_type in args.index_type:
                started = time.perf_counter()
                create_vector_index(table, index_type, replace=True)
                index = {"index_type": index_type,
                         "index_build_s": round(time.perf_counter() - started, 1),
                         "disk_gb": folder_gb(folder), **index_shape(table), "cells": []}
                log(f"{count} rows: {index_type} built in {index['index_build_s']} s, "
                    f"{index['disk_gb']} GB")
                search = VideoSearch(str(folder), "videos", str(checkpoint),
                                     keyword_model=keyword_model)
                for warm, nprobes, factor, ef in itertools.product(
                        [False, True] if args.warm_table else [False], args.nprobes,
                        args.refine_factor, args.ef or [None]):
                    if warm and "warm_read_s" not in index:
                        index["warm_read_s"] = round(search.prewarm(), 1)
                        log(f"prewarmed in {index['warm_read_s']} s")
                    search.nprobes, search.refine_factor, search.ef = nprobes, factor, ef
                    cached = cached_gb()
                    timings, tops, candidates = time_search(search, texts, args.candidates,
                                                            vectors)
                    cell = {"warm_table": warm, "cached_gb": cached, "nprobes": nprobes,
                            "refine_factor": factor,
                            "ef": search.search_breadth(args.candidates),
                            "recall_at_10": recall(exact_tops, tops),
                            "candidate_recall": recall(exact_candidates, candidates),
                            **timings}
                    log(f"{count} rows {index_type}: {cell}")
                    index["cells"].append(cell)
                row["indexes"].append(index)
            results.append(row)
            del table, search
            shutil.rmtree(folder)  # the next size's room
    vectors_info = {"vectors": args.vectors}
    if args.vectors == "clustered":
        vectors_info.update({"row_cosine": args.row_cosine, "query_cosine": args.query_cosine})
    print(json.dumps({"backbone": args.backbone, "dim": dim, "frames": frames,
                      "cpus": os.cpu_count(), "keywords": keyword_model is not None,
                      "queries": args.queries, **vectors_info, "results": results}, indent=2))


def centre_cosine(clusters: Clusters, count: int = 10_000) -> float:
    """The mean cosine of ``count`` draws of ``clusters`` to their centres."""
    vectors, which = clusters.draw(np.random.default_rng(0), count)
    return round(float(np.mean(np.sum(vectors * clusters.centres[which], axis=1))), 3)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

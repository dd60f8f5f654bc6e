"""Latency and recall of two-stage search, exact and through the IVF-PQ index.

    python benchmarks/query_latency.py [--rows 10000 100000] [--queries 50] [--candidates 100]
        [--nprobes 20] [--refine-factor 1]
    python benchmarks/query_latency.py --rows 1000000 --queries 30 --nprobes 20 50 \
        --refine-factor 1 5      # ~26 GB of table in the temporary folder (TMPDIR)

Prints one JSON object. For each table size it writes a LanceDB table of
random unit vectors and random rerank features at ViT-B-32 sizes (512-d, 12
frames), as ``pipelines/embed.py`` lays them out (streamed in 10,000-row
batches, so a million rows fit in memory), then times ``VideoSearch.search``
(``k=10``) with exact search and again after building the IVF-PQ index
(``ensure_indexes`` of the embed job, so the table is laid out as the job
leaves it: fragments compacted, a scalar index on ``video_id``), once for each
``--nprobes`` x ``--refine-factor``. Every timed query is a distinct text, so
each fetches other rows; the index phase asks the exact phase's texts. Reported
apart, p50 and p95 in milliseconds:

- ``text_ms``: encoding the query (tokens, keywords, text tower);
- ``search_ms``: LanceDB vector search, returning the candidates' features;
- ``rerank_ms``: the full model's score of the candidates;
- ``rest_ms``: search + rerank, everything after the text (goal: p50 <= 20 ms,
  p95 <= 40 ms with 100 candidates).

Per index setting, ``recall_at_10`` is the mean over the queries of the share
of the exact search's final top 10 (after the rerank) that the indexed search
also returns (goal: >= 0.95). Per table size, ``disk_gb`` is the table's
folder once compacted and indexed, ``index_build_s`` the index's build.

The model is ``lfemi`` over a random-init ``ViT-B-32``: weights do not change
the cost. Keywords are off (``--keyword-model none``) unless a local sentence
model folder is given, since KeyBERT's time is part of the text, not of the rest.
Random vectors are a hard case for an index (no clusters), so the recall here
is a floor for real embeddings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from pipelines.embed import ensure_indexes
from pipelines.index.search import VideoSearch
from pipelines.index.table import METADATA_COLUMNS, TableState, keep_state, table_schema
from pipelines.ingestion.schemas import VIDEOS
from vtr_models.checkpoint import checkpoint_id, save_checkpoint
from vtr_models.factory import create_model

QUERIES = ["a dog catches a frisbee on the beach", "a man is cooking in a kitchen",
           "cars drive through a city at night", "a woman sings on a stage",
           "children play football in a park"]


def random_rows(count: int, dim: int, frames: int, model_id: str, seed: int) -> pa.Table:
    """``count`` rows of the video table's schema with random unit vectors and features."""
    rng = np.random.default_rng(seed)
    schema = table_schema(VIDEOS, dim, frames)
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    features = rng.standard_normal((count, frames * dim), dtype=np.float32).astype(np.float16)
    ids = [f"v{i:07d}" for i in range(count)]
    columns = {name: pa.nulls(count, schema.field(name).type) for name in METADATA_COLUMNS}
    columns.update({
        "video_id": pa.array(ids), "uri": pa.array([f"s3://archive/{i}.mp4" for i in ids]),
        "split": pa.array(["all"] * count),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        "frame_features": pa.FixedSizeListArray.from_arrays(pa.array(features.ravel()),
                                                            frames * dim),
        "local_features": pa.FixedSizeListArray.from_arrays(pa.array(features.ravel()),
                                                            frames * dim),
        "feature_frames": pa.array(np.full(count, frames, np.int32)),
        "model_id": pa.array([model_id] * count),
    })
    return pa.table(columns, schema=schema)


def build_table(path: Path, rows: int, dim: int, frames: int, model_id: str,
                index: bool = True):
    """A LanceDB ``videos`` table of ``rows`` random rows at ``path`` (a database folder),
    written in one stream of 10,000-row batches (one fragment up to about a million rows,
    nothing held in memory), laid out as the embed job leaves it: a ``video_id`` index,
    fragments compacted, and, with ``index``, the IVF-PQ vector index. Returns the table."""
    import lancedb

    schema = table_schema(VIDEOS, dim, frames)
    batches = (batch for start in range(0, rows, 10_000)
               for batch in random_rows(min(10_000, rows - start), dim, frames, model_id,
                                        seed=start).to_batches())
    table = lancedb.connect(str(path)).create_table("videos", schema=schema)
    table.add(pa.RecordBatchReader.from_batches(schema, batches), write_parallelism=1)
    keep_state(table.to_lance(), TableState("benchmark", 0, model_id))  # as embed records it
    ensure_indexes(table, min_rows=0 if index else rows + 1, index_type="IVF_PQ")
    return table


def folder_gb(path: Path) -> float:
    """Bytes of the files under ``path``, in GB."""
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9, 2)


def percentiles(values: list[float]) -> dict:
    ms = np.asarray(values) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 2),
            "p95": round(float(np.percentile(ms, 95)), 2)}


def query_texts(count: int) -> list[str]:
    """``count`` distinct texts: other vectors, other rows each time."""
    return [f"{QUERIES[i % len(QUERIES)]}, take {i}" for i in range(count)]


def time_search(search: VideoSearch, texts: list[str], candidates: int
                ) -> tuple[dict, list[list[str]]]:
    """p50/p95 of each stage over searches of ``texts`` (after two warm-up queries), and
    each text's top 10 video ids."""
    for text in QUERIES[:2]:
        search.search(text, k=10, candidates=candidates)
    timings: dict[str, list[float]] = {"text_ms": [], "search_ms": [], "rerank_ms": [],
                                       "rest_ms": []}
    tops = []
    for text in texts:
        tops.append(search.search(text, k=10, candidates=candidates)["video_id"].tolist())
        t = search.timings
        timings["text_ms"].append(t["text_s"])
        timings["search_ms"].append(t["search_s"])
        timings["rerank_ms"].append(t["rerank_s"])
        timings["rest_ms"].append(t["search_s"] + t["rerank_s"])
    return {name: percentiles(values) for name, values in timings.items()}, tops


def recall(exact: list[list[str]], found: list[list[str]]) -> float:
    """Mean share of each exact top 10 that ``found`` holds."""
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
        for count in args.rows:
            folder = Path(tmp) / f"db{count}"
            started = time.perf_counter()
            table = build_table(folder, count, dim, frames, checkpoint_id(checkpoint),
                                index=False)
            row = {"rows": count, "candidates": args.candidates,
                   "write_s": round(time.perf_counter() - started, 1)}
            log(f"{count} rows written in {row['write_s']} s")
            search = VideoSearch(str(folder), "videos", str(checkpoint),
                                 keyword_model=keyword_model)
            row["exact"], exact_tops = time_search(search, texts, args.candidates)
            log(f"{count} rows exact: {row['exact']}")
            started = time.perf_counter()
            ensure_indexes(table, min_rows=0, index_type="IVF_PQ")
            row["index_build_s"] = round(time.perf_counter() - started, 1)
            row["disk_gb"] = folder_gb(folder)
            log(f"{count} rows indexed in {row['index_build_s']} s, {row['disk_gb']} GB")
            search = VideoSearch(str(folder), "videos", str(checkpoint),
                                 keyword_model=keyword_model)
            row["ivf_pq"] = []
            for nprobes in args.nprobes:
                for factor in args.refine_factor:
                    search.nprobes, search.refine_factor = nprobes, factor
                    timings, tops = time_search(search, texts, args.candidates)
                    cell = {"nprobes": nprobes, "refine_factor": factor,
                            "recall_at_10": recall(exact_tops, tops), **timings}
                    log(f"{count} rows ivf_pq: {cell}")
                    row["ivf_pq"].append(cell)
            results.append(row)
            del table, search
            shutil.rmtree(folder)  # the next size's room
    print(json.dumps({"backbone": args.backbone, "dim": dim, "frames": frames,
                      "cpus": os.cpu_count(), "keywords": keyword_model is not None,
                      "queries": args.queries, "results": results}, indent=2))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

"""Latency of two-stage search at 10,000 and 100,000 rows, with and without a vector index.

    python benchmarks/query_latency.py [--rows 10000 100000] [--queries 50] [--candidates 100]

Prints one JSON object. For each table size it writes a LanceDB table of
random unit vectors and random rerank features at ViT-B-32 sizes (512-d, 12
frames), as ``pipelines/embed.py`` lays them out, then times
``VideoSearch.search`` (``k=10``) with exact search and again after building
the IVF-PQ index (``ensure_indexes`` of the embed job, so the table is laid
out as the job leaves it: fragments compacted, a scalar index on
``video_id``). Every timed query is a distinct text, so each fetches other
rows. Reported apart, p50 and p95 in milliseconds:

- ``text_ms``: encoding the query (tokens, keywords, text tower);
- ``search_ms``: LanceDB vector search, returning the candidates' features;
- ``rerank_ms``: the full model's score of the candidates;
- ``rest_ms``: search + rerank, everything after the text (goal: p50 < 20 ms at
  100,000 rows with 100 candidates).

The model is ``lfemi`` over a random-init ``ViT-B-32``: weights do not change
the cost. Keywords are off (``--keyword-model none``) unless a local sentence
model folder is given, since KeyBERT's time is part of the text, not of the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from pipelines.embed import ensure_indexes
from pipelines.schemas import VIDEOS
from pipelines.search import VideoSearch
from pipelines.video_table import METADATA_COLUMNS, table_schema
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


def percentiles(values: list[float]) -> dict:
    ms = np.asarray(values) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 2),
            "p95": round(float(np.percentile(ms, 95)), 2)}


def time_search(search: VideoSearch, queries: int, candidates: int) -> dict:
    """p50/p95 of each stage over ``queries`` searches (after two warm-up queries)."""
    for text in QUERIES[:2]:
        search.search(text, k=10, candidates=candidates)
    timings: dict[str, list[float]] = {"text_ms": [], "search_ms": [], "rerank_ms": [],
                                       "rest_ms": []}
    for i in range(queries):  # a distinct text each time: other vectors, other rows
        search.search(f"{QUERIES[i % len(QUERIES)]}, take {i}", k=10, candidates=candidates)
        t = search.timings
        timings["text_ms"].append(t["text_s"])
        timings["search_ms"].append(t["search_s"])
        timings["rerank_ms"].append(t["rerank_s"])
        timings["rest_ms"].append(t["search_s"] + t["rerank_s"])
    return {name: percentiles(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000],
                        help="table sizes to time")
    parser.add_argument("--queries", type=int, default=50, help="timed queries per cell")
    parser.add_argument("--candidates", type=int, default=100,
                        help="first-stage candidates per query")
    parser.add_argument("--backbone", default="ViT-B-32", help="open_clip name, random init")
    parser.add_argument("--keyword-model", default="none",
                        help="local sentence model folder for query keywords, or none")
    args = parser.parse_args()
    import lancedb

    torch.set_num_threads(os.cpu_count() or 1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = create_model("lfemi", backbone=args.backbone,
                             text_enhance=args.keyword_model != "none")
        checkpoint = save_checkpoint(model, Path(tmp) / "ckpt")
        dim, frames = model.backbone.embed_dim, model.config.max_frames
        for count in args.rows:
            db = lancedb.connect(str(Path(tmp) / f"db{count}"))
            table = db.create_table("videos", schema=table_schema(VIDEOS, dim, frames))
            for start in range(0, count, 10_000):
                table.add(random_rows(min(10_000, count - start), dim, frames,
                                      checkpoint_id(checkpoint), seed=start))
            # laid out as the embed job leaves it: video_id index, fragments compacted
            ensure_indexes(table, min_rows=count + 1, index_type="IVF_PQ")
            keyword_model = None if args.keyword_model == "none" else args.keyword_model
            search = VideoSearch(str(Path(tmp) / f"db{count}"), "videos", str(checkpoint),
                                 keyword_model=keyword_model)
            row = {"rows": count, "candidates": args.candidates,
                   "exact": time_search(search, args.queries, args.candidates)}
            started = time.perf_counter()
            ensure_indexes(table, min_rows=0, index_type="IVF_PQ")
            row["index_build_s"] = round(time.perf_counter() - started, 1)
            search = VideoSearch(str(Path(tmp) / f"db{count}"), "videos", str(checkpoint),
                                 keyword_model=keyword_model)
            row["ivf_pq"] = time_search(search, args.queries, args.candidates)
            results.append(row)
    print(json.dumps({"backbone": args.backbone, "dim": dim, "frames": frames,
                      "cpus": os.cpu_count(), "keywords": args.keyword_model != "none",
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()

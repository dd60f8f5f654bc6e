"""The vector search alone: Lance's IVF_HNSW_SQ by table size and IVF partitions.

    python benchmarks/hnsw_partitions.py [--rows 300000] [--partitions 1 16] [--queries 60]
        [--query-parallelism 1 2] [--ef 150]

Stage one of a search at a million rows took 9-10 ms inside
``benchmarks/query_latency.py``, against 2.8 ms at 300,000 rows. This isolates the
vector search from the rest of the table: for each size it writes a Lance
dataset (file format 2.1, as the embed job writes) of only an ``id`` and the
clustered unit vectors of ``query_latency.py --vectors clustered`` (one centre
per 1,000 rows, each row at cosine 0.8 to its centre), builds an IVF_HNSW_SQ
index (cosine, Lance's defaults but for ``num_partitions``) for each
``--partitions``, and times ``--queries`` searches of the 100 nearest rows (``k`` as
a search's default candidates, ``_distance`` not returned), twice over, after 20
untimed ones. Each query lies near a random row (cosine 0.85), as a caption's
embedding lies near its video's. With more than one partition it searches an
eighth, a quarter, half and all of them (``nprobes``), each with every
``--query-parallelism`` (Lance's partitions searched at once for one query: 1
searches them one after the other). ``--ef`` is HNSW's search breadth (Lance's
default: 1.5 x ``k``). ``recall_at_100``: the share of the exact top 100 (numpy,
every row) that the index returns.

Prints one JSON object; times in milliseconds.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import tempfile
import time
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
from query_latency import Clusters, percentiles, query_vectors

DIM, K, WARM_UP = 512, 100, 20


def clustered_vectors(rows: int) -> np.ndarray:
    """``rows`` vectors of ``query_latency.py``'s clustered mixture, drawn in 10,000-row
    batches as that benchmark writes them."""
    clusters = Clusters.random(max(1, rows // 1000), DIM, row_cosine=0.8)
    return np.concatenate([clusters.draw(np.random.default_rng(start),
                                         min(10_000, rows - start))[0]
                           for start in range(0, rows, 10_000)]).astype(np.float32)


def time_searches(dataset, queries: np.ndarray, exact: list[set[int]], nprobes: int,
                  parallelism: int, ef: int | None) -> dict:
    """p50/p95 of the searches of ``queries`` (twice over, the first ``WARM_UP`` untimed)
    and their mean recall of the ``exact`` top ``K``."""
    seconds, recalls = [], []
    for vector, truth in [*zip(queries, exact, strict=True)] * 2:
        started = time.perf_counter()
        found = dataset.to_table(columns=["id"], disable_scoring_autoprojection=True, nearest={
            "column": "vector", "q": vector, "k": K, "metric": "cosine", "nprobes": nprobes,
            "query_parallelism": parallelism, "ef": ef})
        seconds.append(time.perf_counter() - started)
        recalls.append(len(truth & set(found.column("id").to_pylist())) / K)
    return {**percentiles(seconds[WARM_UP:]), "recall_at_100": round(float(np.mean(recalls)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[300_000], help="table sizes")
    parser.add_argument("--partitions", type=int, nargs="+", default=[1, 16],
                        help="IVF partitions of the index (1: one HNSW graph, LanceDB's "
                             "choice up to a million rows)")
    parser.add_argument("--queries", type=int, default=60, help="distinct queries")
    parser.add_argument("--query-parallelism", type=int, nargs="+", default=[1],
                        help="partitions one query searches at once (Lance's "
                             "query_parallelism; 1: one after the other)")
    parser.add_argument("--ef", type=int, default=None,
                        help="HNSW search breadth (default: Lance's, 1.5 x k)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            vectors = clustered_vectors(rows)
            table = pa.table({"id": pa.array(np.arange(rows)), "vector":
                              pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM)})
            queries, _ = query_vectors(functools.partial(np.take, vectors, axis=0), rows,
                                       args.queries, query_cosine=0.85)
            exact = [set(np.argpartition(-(vectors @ q), K)[:K].tolist()) for q in queries]
            for partitions in args.partitions:
                path = Path(tmp) / f"t{rows}-{partitions}"
                dataset = lance.write_dataset(table, path, data_storage_version="2.1")
                started = time.perf_counter()
                dataset.create_index("vector", index_type="IVF_HNSW_SQ", metric="cosine",
                                     num_partitions=partitions)
                row = {"rows": rows, "partitions": partitions,
                       "index_build_s": round(time.perf_counter() - started, 1), "cells": []}
                dataset = lance.dataset(path)
                for nprobes in sorted({max(1, partitions * n // 8) for n in (1, 2, 4, 8)}):
                    for parallelism in args.query_parallelism:
                        row["cells"].append({"nprobes": nprobes, "query_parallelism": parallelism,
                                             **time_searches(dataset, queries, exact, nprobes,
                                                             parallelism, args.ef)})
                results.append(row)
                shutil.rmtree(path)
    print(json.dumps({"dim": DIM, "k": K, "queries": args.queries, "ef": args.ef,
                      "results": results},
                     indent=2))


if __name__ == "__main__":
    main()

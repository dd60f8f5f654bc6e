"""How long Lance takes to fetch 100 rows' rerank features, by table size, cold and warm.

    python benchmarks/take_latency.py [--rows 100000 1000000] [--feature-precision int8]
        [--feature-layout packed columns]

Stage two of a search fetches its candidates' rerank columns by row. At a
million rows that fetch stays at 11-18 ms where 100,000 rows take 6-7 ms
(``docs/benchmarks.md``). This isolates it from the vector search: for each
size it writes the query benchmark's random rows (``query_latency.random_rows``,
ViT-B-32 sizes) as one Lance dataset, records how much of it the page cache
holds (``Cached`` of ``/proc/meminfo``, before and after the write), then
times ``LanceDataset.take`` of the columns ``VideoSearch`` fetches for 40 sets
of 100 random rows: once (``first_ms``), then the same sets twice more
(``again_ms``, ``third_ms``), when every page they need is in memory.
Prints one JSON object; times are medians in milliseconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
import time
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
from query_latency import LAYOUTS, cached_gb, random_rows

from pipelines.index.rerank_features import PRECISIONS, FeatureLayout
from pipelines.index.search import fetched_columns
from pipelines.index.table import table_schema
from pipelines.ingestion.schemas import VIDEOS

DIM, FRAMES = 512, 12  # ViT-B-32, 12 frames
SETS, PER_SET = 40, 100


def median_ms(dataset, row_sets: list[np.ndarray], columns: list[str]) -> float:
    seconds = []
    for rows in row_sets:
        started = time.perf_counter()
        dataset.take(rows, columns=columns)
        seconds.append(time.perf_counter() - started)
    return round(float(np.median(seconds)) * 1000, 2)


def measure(path: Path, rows: int, layout: FeatureLayout,
            file_version: str | None = None) -> dict:
    schema = table_schema(VIDEOS, DIM, FRAMES, layout=layout)
    batches = (batch for start in range(0, rows, 10_000)
               for batch in random_rows(min(10_000, rows - start), DIM, FRAMES, "benchmark",
                                        seed=start, layout=layout).to_batches())
    result = {"rows": rows, "feature_precision": layout.precision,
              "feature_layout": LAYOUTS[not layout.packed], "file_version": file_version,
              "cached_gb_before": cached_gb()}
    started = time.perf_counter()
    dataset = lance.write_dataset(pa.RecordBatchReader.from_batches(schema, batches), path,
                                  schema=schema, data_storage_version=file_version)
    result["file_version"] = dataset.data_storage_version
    result["write_s"] = round(time.perf_counter() - started, 1)
    result["cached_gb_after_write"] = cached_gb()
    columns = [c for c in fetched_columns(schema) if c in schema.names]
    result["columns"] = columns
    rng = np.random.default_rng(0)
    row_sets = [np.sort(rng.choice(rows, PER_SET, replace=False)) for _ in range(SETS)]
    for name in ("first_ms", "again_ms", "third_ms"):
        result[name] = median_ms(dataset, row_sets, columns)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="table sizes, each written and removed in turn")
    parser.add_argument("--feature-precision", choices=PRECISIONS, default="int8",
                        help="rerank feature storage (int8: a million rows fit in memory)")
    parser.add_argument("--feature-layout", nargs="+", choices=LAYOUTS, default=["packed"],
                        help="one packed feature column (new tables) or one per feature "
                             "(tables written before), each measured in turn")
    parser.add_argument("--file-version", nargs="+", default=[None],
                        help="Lance file format versions to compare (e.g. 2.0 2.1; default: "
                             "Lance's own)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows, layout, version in itertools.product(args.rows, args.feature_layout,
                                                       args.file_version):
            path = Path(tmp) / "videos.lance"
            results.append(measure(path, rows, FeatureLayout(args.feature_precision,
                                                             layout == "packed"), version))
            shutil.rmtree(path)
    print(json.dumps({"rows_per_take": PER_SET, "takes": SETS, "results": results}, indent=2))


if __name__ == "__main__":
    main()

"""Throughput of the search service (pipelines/serve.py): one client, then concurrent ones.

    python benchmarks/serve_throughput.py [--rows 100000] [--index-type IVF_PQ|HNSW_SQ]
        [--requests 100] [--clients 8] [--rounds 3] [--replicas 2] [--cpus-per-replica 1]
        [--max-batch-size 16] [--batch-wait-timeout-s 0.005] [--page page|urls]

Prints one JSON object. It writes one LanceDB table of ``--rows`` random rows
with a vector index of ``--index-type`` (``build_table`` of
``query_latency.py``: ViT-B-32 sizes, laid out as the embed job leaves it),
starts Ray and Serve here, with the HTTP proxy on a free local port, and
deploys ``pipelines.serve:app`` over it (``lfemi`` over a random-init
``ViT-B-32``, no keywords; by default two replicas of one CPU each, one per
core of a 2-core machine). Once the page (``GET /``) answers and a few warm-up queries
have run, it measures ``--rounds`` rounds, each ``--requests`` ``POST
/search`` (``k=10``, ``candidates=100``, a distinct text each; with ``--page page``,
what the search page asks for a query: the search with the app's token and its 10
results' thumbnails inline; ``--page urls``: then a GET of each thumbnail) from one
client, one after the other, then as many from ``--clients`` concurrent
clients (threads over ``urllib``): rounds in turn, so that a drift of the
machine's speed reaches both sides of a ratio. For each phase:
``requests_per_s``, latency p50 and p95 in milliseconds (the client's, HTTP
included), the mean ``text_batch`` (queries searched together with the
request), and the CPU milliseconds per request spent by the replicas,
Serve's HTTP proxy, the clients and each of Ray's own processes (by name;
``other``: the rest of the machine), from each process's CPU times. A
round's ``speedup`` is its concurrent throughput over its sequential one
(goal: >= 2); each deployment reports their mean, standard deviation and
range. Each ``--max-batch-size`` x ``--batch-wait-timeout-s`` is deployed
and measured in turn, over the same table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
from query_latency import build_table, lfemi_checkpoint, query_texts

from pipelines.index.table import INDEX_TYPES
from vtr_models.checkpoint import checkpoint_id

#: the token the service is started with under --page, as a team's would be
PAGE_TOKEN = "benchmark-token"


def post(url: str, body: dict, token: str | None = None) -> dict:
    headers = {"content-type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def get(url: str, token: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


def page_search(base: str, text: str, inline: bool) -> dict:
    """What the search page does for one query: ``POST /search`` with its token and its
    results' thumbnails ``inline`` in the answer (what the page asks for), or else
    followed by a ``GET`` of each result's thumbnail (one after the other; a browser
    loads up to six at once). The search's answer."""
    answer = post(base + "/search", {"text": text, "k": 10, "candidates": 100,
                                     "thumbnails": "inline" if inline else "url"}, PAGE_TOKEN)
    for result in answer["results"]:
        if inline:
            assert result["thumbnail"].startswith("data:image/jpeg;base64,"), result
        else:
            get(base + result["thumbnail"], PAGE_TOKEN)
    return answer


def write_frames_source(output: Path, table, model_id: str) -> None:
    """An ingest output whose ``videos/`` holds one small JPEG for each row of ``table``
    (a 64 x 36 frame at 0 s; the random rows have no video), in random order and row
    groups of ingest's size, committed as run 0 and
    recorded as the table's source, so that ``GET /thumbnails`` reads its frames as it
    reads a real ingest's: filtered by ``video_id`` out of the whole ``videos/``."""
    from deltalake import WriterProperties, write_deltalake
    from PIL import Image

    from pipelines.index.table import TableState, keep_state
    from pipelines.ingestion.output import VIDEO_ROWS_PER_GROUP, IngestStore, IngestVersion
    from pipelines.ingestion.schemas import VIDEOS

    jpeg = io.BytesIO()
    Image.new("RGB", (64, 36), (90, 120, 200)).save(jpeg, "JPEG")
    ids = table.to_lance().to_table(columns=["video_id"]).column("video_id").to_pylist()
    # in no order, as ingest writes videos as they decode: no file's id range rules an id out
    ids = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))]
    fill = {"uri": "", "duration_s": 1.0, "native_fps": 1.0, "width": 64, "height": 36,
            "num_frames": 1, "timestamps_s": [0.0], "frames": [jpeg.getvalue()],
            "size_bytes": 0, "mtime": 0.0, "etag": "", "ingest_version": 0,
            "window_start_s": 0.0, "window_end_s": 1.0}
    for start in range(0, len(ids), 10_000):
        rows = [{"video_id": v, **fill} for v in ids[start:start + 10_000]]
        write_deltalake(str(output / "videos"), pa.Table.from_pylist(rows, schema=VIDEOS),
                        mode="append", writer_properties=WriterProperties(
                            max_row_group_size=VIDEO_ROWS_PER_GROUP))  # as ingest writes
    store = IngestStore(str(output))
    store.commit(IngestVersion(0, {"videos": store.delta("videos").version()}))
    keep_state(table.to_lance(), TableState(str(output), 0, model_id))


def wait_ready(url: str, timeout_s: float = 300) -> None:
    """Until ``GET url`` answers 200 (the replica has loaded the model and the table)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(1)


def cpu_seconds() -> Counter:
    """CPU seconds used so far by this machine's processes, summed by role: the Serve
    replicas, the HTTP proxy, this benchmark (the clients), and everything else."""
    roles: Counter = Counter()
    for process in psutil.process_iter(["cmdline"]):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        roles[role_of(process.pid, process.info["cmdline"] or [])] += times.user + times.system
    return roles


RAY_PROCESSES = {"ServeController": "serve_controller", "gcs_server": "gcs", "raylet": "raylet",
                 "dashboard/agent.py": "dashboard_agent", "dashboard/dashboard.py": "dashboard",
                 "runtime_env/agent": "runtime_env_agent", "log_monitor.py": "log_monitor",
                 "ray::IDLE": "idle_workers"}


def role_of(pid: int, cmdline: list[str]) -> str:
    """Which part of the service a process is: a Serve replica, the HTTP proxy, this
    benchmark (the clients), one of Ray's own processes by name, or other."""
    line = " ".join(cmdline)
    if "ServeReplica" in line:
        return "replicas"
    if "ProxyActor" in line:
        return "proxy"
    if pid == os.getpid():
        return "clients"
    return next((role for key, role in RAY_PROCESSES.items() if key in line), "other")


def measure(url: str, texts: list[str], clients: int, page: str | None = None) -> dict:
    """``texts`` searched by ``clients`` threads taking the next text in turn (each a
    ``POST /search``, or with ``page`` a :func:`page_search` under the app's ``url``,
    thumbnails inline for ``"page"``, by URL for ``"urls"``):
    throughput, latency p50/p95 (ms), the mean batch the texts were searched in, and the
    CPU milliseconds per request of each role (:func:`cpu_seconds`)."""
    latencies: list[float] = []
    batches: list[int] = []
    pending = iter(texts)
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                text = next(pending, None)
            if text is None:
                return
            started = time.perf_counter()
            answer = (page_search(url, text, page == "page") if page
                      else post(url + "/search", {"text": text, "k": 10, "candidates": 100}))
            with lock:
                latencies.append(time.perf_counter() - started)
                batches.append(answer["text_batch"])

    cpu_before = cpu_seconds()
    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    cpu = cpu_seconds()
    cpu.subtract(cpu_before)
    if len(latencies) != len(texts):
        raise RuntimeError(f"{len(texts) - len(latencies)} requests failed")
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "requests": len(texts),
            "requests_per_s": round(len(texts) / seconds, 2),
            "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 1),
                           "p95": round(float(np.percentile(ms, 95)), 1)},
            "mean_text_batch": round(float(np.mean(batches)), 2),
            "cpu_ms_per_request": {role: round(1e3 * s / len(texts), 1)
                                   for role, s in sorted(cpu.items())}}


def measure_rounds(url: str, texts: list[str], args: argparse.Namespace) -> dict:
    """After a warm-up with the last 16 ``texts``, ``args.rounds`` rounds of
    ``args.requests`` sequential then as many concurrent requests, each round its own
    texts: each round's phases and speedup, and the speedups' mean, spread and range."""
    measure(url, texts[-16:], args.clients, args.page)
    rounds = []
    for r in range(args.rounds):
        own = texts[2 * r * args.requests:2 * (r + 1) * args.requests]
        one = measure(url, own[:args.requests], 1, args.page)
        many = measure(url, own[args.requests:], args.clients, args.page)
        rounds.append({"sequential": one, "concurrent": many,
                       "speedup": round(many["requests_per_s"] / one["requests_per_s"], 2)})
    speedups = [r["speedup"] for r in rounds]
    spread = statistics.stdev(speedups) if len(speedups) > 1 else 0.0
    return {"rounds": rounds,
            "speedup": {"mean": round(statistics.mean(speedups), 2), "std": round(spread, 2),
                        "min": min(speedups), "max": max(speedups)}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the table served")
    parser.add_argument("--requests", type=int, default=100,
                        help="requests per measurement (sequential, then concurrent)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=3,
                        help="sequential-then-concurrent pairs measured in turn: the speedup "
                             "of each, and their mean, spread and range")
    parser.add_argument("--replicas", type=int, default=2,
                        help="replicas deployed (a fixed number: the measurement is shorter "
                             "than Serve's autoscaling delays)")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0,
                        help="CPUs each replica reserves (and its PyTorch threads)")
    parser.add_argument("--max-batch-size", type=int, nargs="+", default=[16],
                        help="most queries encoded in one pass (one deployment each)")
    parser.add_argument("--batch-wait-timeout-s", type=float, nargs="+", default=[0.005],
                        help="longest wait for a batch to fill (one deployment each)")
    parser.add_argument("--index-type", choices=INDEX_TYPES, default="IVF_PQ",
                        help="the table's vector index (default: IVF_PQ, the embed job's)")
    parser.add_argument("--backbone", default="ViT-B-32", help="open_clip name, random init")
    parser.add_argument("--page", choices=("page", "urls"), default=None,
                        help="measure what the search page asks for a query: the search "
                             "with a token and its results' thumbnails inline (page, what "
                             "the page does), or followed by a GET of each (urls)")
    args = parser.parse_args()
    import ray
    from ray import serve

    from pipelines.serve import app

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, dim, frames = lfemi_checkpoint(Path(tmp), args.backbone, keywords=False)
        started = time.perf_counter()
        table = build_table(Path(tmp) / "db", args.rows, dim, frames,
                            checkpoint_id(checkpoint), index_type=args.index_type)
        if args.page:
            write_frames_source(Path(tmp) / "ingest", table, checkpoint_id(checkpoint))
        build_s = round(time.perf_counter() - started, 1)
        print(f"table of {args.rows} rows built in {build_s} s", file=sys.stderr, flush=True)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        # Ray's own lines (a raylet's at shutdown) to stderr: stdout holds the JSON alone
        with contextlib.redirect_stdout(sys.stderr):
            # its own instance, never a cluster running here; workers' logs kept out of stdout
            ray.init(address="local", log_to_driver=False)
            try:
                serve.start(http_options={"host": "127.0.0.1", "port": port})
                texts = query_texts(2 * args.rounds * args.requests + 16)
                for batch_size, wait_s in itertools.product(args.max_batch_size,
                                                            args.batch_wait_timeout_s):
                    serve.run(app({"db": str(Path(tmp) / "db"), "checkpoint": str(checkpoint),
                                   "max_batch_size": batch_size,
                                   "batch_wait_timeout_s": wait_s,
                                   "min_replicas": args.replicas,
                                   "max_replicas": args.replicas,
                                   "cpus_per_replica": args.cpus_per_replica,
                                   "token": PAGE_TOKEN if args.page else None}),
                              blocking=False)
                    wait_ready(base + "/")
                    row = {"max_batch_size": batch_size, "batch_wait_timeout_s": wait_s,
                           **measure_rounds(base, texts, args)}
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    results.append(row)
            finally:
                serve.shutdown()
                ray.shutdown()
    print(json.dumps({"backbone": args.backbone, "rows": args.rows, "index": args.index_type,
                      "requests_are": {None: "POST /search", "page": "page searches",
                                       "urls": "searches, then GET of each thumbnail"
                                       }[args.page],
                      "table_build_s": build_s, "cpus": os.cpu_count(),
                      "replicas": args.replicas,
                      "cpus_per_replica": args.cpus_per_replica, "results": results}, indent=2))


if __name__ == "__main__":
    main()

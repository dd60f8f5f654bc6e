"""The rerank of a search's candidates, in-process, and against an earlier revision.

    python benchmarks/rerank_latency.py [--candidates 100] [--precision int8 float16]
        [--reps 200] [--rounds 4] [--against REV]

Stage two of a search (``VideoSearch._reranked``) turns the candidates' stored
rerank features into the model's ``VideoFeatures`` and scores them against the
query with the full model. This times those steps alone, on ``--candidates``
rows of random features stored as ``pipelines/embed.py`` stores them (the
packed column, at each ``--precision``), for ``lfemi`` over a random-init
``ViT-B-32`` (512-d, 12 frames; weights do not change the cost) and one
encoded query, on 2 torch threads unless the machine says otherwise. The reranks
take 20 such candidate sets in turn, so that, as in a search, the features
are not already in the CPU's caches. Per
precision, p50 / p95 in milliseconds of:

- ``decode_ms``: the rows to ``VideoFeatures`` (``pipelines.index.table.video_features``);
- ``coarse_ms``, ``fine_ms``: the two halves of the score (text-conditioned
  pooling, token-wise matching), timed apart;
- ``rerank_ms``: decode, ``score`` and ``first_stage_score`` in a row, as a
  search runs them.

``--against REV`` also times the same steps with the code of git revision
``REV`` (exported to a temporary folder), alternating ``--rounds`` times
between the two in child processes, so that both see the same machine; the
JSON then has ``current`` and ``against``, and their p50 ratio per step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from query_latency import percentiles

from pipelines.index.rerank_features import PRECISIONS, FeatureLayout
from pipelines.index.table import video_features
from vtr_models import create_model

ROOT = Path(__file__).resolve().parents[1]
# distinct candidate sets taken in turn, as a search's come fresh from the table: one set
# reused would sit in the CPU's caches (1.2 MB at int8), which no search's rows do
ROW_SETS = 20


def candidate_rows(layout: FeatureLayout, candidates: int, frames: int, dim: int):
    """``candidates`` table rows of random unit rerank features stored in ``layout``."""
    features = torch.randn(2, candidates, frames, dim)
    features = features / features.norm(dim=-1, keepdim=True)
    return pa.table({**layout.encode(features[0], features[1]),
                     "feature_frames": pa.array(np.full(candidates, frames, np.int32))})


def time_steps(candidates: int, precisions: list[str], reps: int) -> dict[str, dict[str, list]]:
    """Seconds of each step, per precision, with the ``vtr_models`` and ``pipelines`` this
    process imported (this tree's, or in a child an exported revision's)."""
    torch.manual_seed(0)
    model = create_model("lfemi", backbone="ViT-B-32", text_enhance=False).eval()
    frames, dim = model.config.max_frames, model.backbone.embed_dim
    seconds = {}
    with torch.no_grad():
        text = model.encode_text(model.tokenizer.captions(["a dog catches a frisbee on the beach"]))
        for precision in precisions:
            row_sets = [candidate_rows(FeatureLayout(precision), candidates, frames, dim)
                        for _ in range(ROW_SETS)]
            steps = {"decode_ms": [], "coarse_ms": [], "fine_ms": [], "rerank_ms": []}
            for rep in range(reps):
                started = time.perf_counter()
                videos = video_features(row_sets[rep % ROW_SETS], model.config)
                decoded = time.perf_counter()
                model.score(text, videos)
                model.first_stage_score(text, videos)
                steps["rerank_ms"].append(time.perf_counter() - started)
                steps["decode_ms"].append(decoded - started)
                started = time.perf_counter()
                model.coarse_score(text, videos)
                coarse = time.perf_counter()
                model.fine_score(text, videos)
                steps["coarse_ms"].append(coarse - started)
                steps["fine_ms"].append(time.perf_counter() - coarse)
            seconds[precision] = {step: values[reps // 10:] for step, values in steps.items()}
    return seconds


def exported(revision: str, folder: Path) -> Path:
    """The packages of git ``revision``, written under ``folder``."""
    archive = folder / "tree.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), revision,
                    "vtr_models", "pipelines"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder / "tree", filter="data")
    return folder / "tree"


def child(tree: Path, args: argparse.Namespace) -> dict:
    """:func:`time_steps` in a fresh process importing the packages of ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--candidates", str(args.candidates),
         "--reps", str(args.reps), "--precision", *args.precision],
        env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=100, help="rows reranked")
    parser.add_argument("--precision", nargs="+", default=list(PRECISIONS[::-1]),
                        choices=PRECISIONS, help="stored feature precisions")
    parser.add_argument("--reps", type=int, default=200,
                        help="timed reranks per precision and round (the first tenth untimed)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="with --against: rounds, each timing both trees")
    parser.add_argument("--against", metavar="REV", help="a git revision to time beside this tree")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_steps(args.candidates, args.precision, args.reps)))
        return
    if not args.against:
        seconds = time_steps(args.candidates, args.precision, args.reps)
        print(json.dumps({"candidates": args.candidates, "current": {
            p: {s: percentiles(v) for s, v in steps.items()} for p, steps in seconds.items()}},
            indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"current": ROOT, "against": exported(args.against, Path(tmp))}
        merged: dict = {name: {} for name in trees}
        for round_ in range(args.rounds):
            for name in (list(trees) if round_ % 2 == 0 else list(trees)[::-1]):
                for precision, steps in child(trees[name], args).items():
                    for step, values in steps.items():
                        merged[name].setdefault(precision, {}).setdefault(step, []).extend(values)
    result = {name: {p: {s: percentiles(v) for s, v in steps.items()}
                     for p, steps in by_precision.items()}
              for name, by_precision in merged.items()}
    result["ratio_p50"] = {p: {s: round(result["current"][p][s]["p50"]
                                     / result["against"][p][s]["p50"], 3)
                               for s in steps} for p, steps in result["current"].items()}
    print(json.dumps({"candidates": args.candidates, "against": args.against,
                      "rounds": args.rounds, **result}, indent=2))


if __name__ == "__main__":
    main()

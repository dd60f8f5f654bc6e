"""What a refresh costs against a full build, on a synthetic archive; prints JSON.

    python benchmarks/refresh_cost.py [--clips 2000] [--change 0.01] [--rounds 3]

Writes ``--clips`` short clips (PyAV), then runs ``pipelines/refresh.py`` as a
user would, each run its own process with its own local Ray and the tiny
random-init ``lfemi`` checkpoint: (1) the full build; ``--rounds`` times,
(2) a refresh with nothing changed (its wall time is the fixed start-up: Ray,
listing, reading the table) beside (3) a refresh after ``--change`` of the
clips were added, as many modified in place and as many deleted; and (4) a
from-scratch build of the changed archive, whose table the refreshed one must
equal (same ``video_id``s, vectors within 1e-5). Reports the videos each run
decoded and encoded (from the jobs' own summary lines) and the refresh's time
beyond start-up as a fraction of the full build's, the median over the rounds:
from the processes' wall times (Python and Ray start-up and shutdown included,
as a scheduler sees them; noisy by a second or two) and from the jobs' own
"refresh done in" times (after Ray is up, so with less noise).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lancedb
import numpy as np
import torch

from pipelines.sources.samples import write_clip
from vtr_models.checkpoint import save_checkpoint
from vtr_models.factory import create_model

REPO = Path(__file__).resolve().parents[1]


def clip(archive: Path, index: int, seed: int) -> None:
    write_clip(archive / f"clip{index:05d}.mp4", num_frames=24, size=(64, 48), seed=seed)


def refresh(archive: Path, work: Path, name: str, checkpoint: Path, extra: list[str]) -> dict:
    """One refresh job in its own process: wall time and the counts its summaries print."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "pipelines/refresh.py", "--videos", str(archive), "--data",
         str(work / f"{name}-ingest"), "--db", str(work / f"{name}-db"), "--checkpoint",
         str(checkpoint), "--frame-size", "64", "--batch-size", "32", *extra],
        cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"refresh_cost: the refresh failed:\n{result.stderr[-3000:]}")
    decoded = re.search(r"(\d+) decoded ok, (\d+) failed", result.stdout)
    embedded = re.search(r"(\d+) videos embedded, (\d+) deleted", result.stdout)
    job = re.search(r"refresh done in ([\d.]+) s", result.stdout)
    return {"wall_s": round(wall, 2), "job_s": float(job[1]),
            "decoded": int(decoded[1]) + int(decoded[2]),
            "encoded": int(embedded[1]), "rows_deleted": int(embedded[2])}


def table(db: Path) -> tuple[list[str], np.ndarray]:
    rows = lancedb.connect(str(db)).open_table("videos").to_arrow().sort_by("video_id")
    return rows.column("video_id").to_pylist(), np.stack(rows.column("vector").to_numpy(
        zero_copy_only=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2000, help="clips in the archive")
    parser.add_argument("--change", type=float, default=0.01,
                        help="fraction of the clips added, and again modified, and deleted")
    parser.add_argument("--workdir", help="keep the archive and outputs here (default: a "
                        "temporary folder, removed after)")
    parser.add_argument("--rounds", type=int, default=3, help="changes and refreshes, each "
                        "beside a no-change refresh (the figure is their median)")
    parser.add_argument("--local-max-videos", type=int, help="passed to refresh.py "
                        "(default: its own; 0 runs even the smallest refresh on Ray actors)")
    args = parser.parse_args(argv)
    extra = [] if args.local_max_videos is None else [
        "--local-max-videos", str(args.local_max_videos)]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="refresh-cost-"))
    archive = work / "archive"
    shutil.rmtree(work, ignore_errors=True)
    archive.mkdir(parents=True)
    for i in range(args.clips):
        clip(archive, i, seed=i)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(create_model("lfemi", max_frames=8), work / "checkpoint")

    full = refresh(archive, work, "live", checkpoint, extra)
    step = max(1, round(args.clips * args.change))
    rounds = []  # (no-change refresh, refresh after a change), side by side, per round
    for r in range(args.rounds):
        idle = refresh(archive, work, "live", checkpoint, extra)
        base = args.clips + r * step  # new names each round; modify and delete older ones
        for i in range(base, base + step):  # added
            clip(archive, i, seed=i)
        for i in range(2 * r * step, (2 * r + 1) * step):  # modified in place
            clip(archive, i, seed=10_000_000 + i)
        for i in range((2 * r + 1) * step, (2 * r + 2) * step):  # deleted
            (archive / f"clip{i:05d}.mp4").unlink()
        rounds.append((idle, refresh(archive, work, "live", checkpoint, extra)))
    scratch = refresh(archive, work, "scratch", checkpoint, extra)

    live_ids, live_vectors = table(work / "live-db")
    scratch_ids, scratch_vectors = table(work / "scratch-db")
    same_ids = live_ids == scratch_ids
    beyond = [changed["wall_s"] - idle["wall_s"] for idle, changed in rounds]
    beyond_job = [changed["job_s"] - idle["job_s"] for idle, changed in rounds]
    report = {
        "clips": args.clips, "local_max_videos": args.local_max_videos,
        "per_round": {"added": step, "modified": step, "deleted": step}, "rounds": args.rounds,
        "full_build": full,
        "no_change_refreshes": [idle for idle, _ in rounds],
        "refreshes": [changed for _, changed in rounds],
        "from_scratch_of_changed_archive": scratch,
        "refresh_beyond_start_up_s": [round(b, 2) for b in beyond],
        "median_beyond_start_up_over_full_build": round(
            statistics.median(beyond) / full["wall_s"], 4),
        # the same inside the jobs (after Ray is up, before it shuts down): less noise
        "median_job_beyond_no_change_over_full_build_job": round(
            statistics.median(beyond_job) / full["job_s"], 4),
        "decodes_exactly_the_change": all(c["decoded"] == 2 * step for _, c in rounds),
        "encodes_exactly_the_change": all(c["encoded"] == 2 * step for _, c in rounds),
        "table_equals_from_scratch": bool(same_ids and np.allclose(
            live_vectors, scratch_vectors, atol=1e-5, rtol=0)),
        "max_vector_difference": float(np.abs(live_vectors - scratch_vectors).max())
        if same_ids else None,
    }
    print(json.dumps(report, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

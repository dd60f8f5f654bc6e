"""Ingest of an hour-long 720p video against a bare decord loop, and its memory against a
one-minute video's.

    python benchmarks/long_video_ingest.py [--minutes 60] [--fps 2] [--width 1280 --height 720]

Prints one JSON object. It writes two H.264 videos of the same size and frame rate
(a moving bar, ``ultrafast``): ``--minutes`` long, and one minute. Then, in one run:

- ``bare_decord``: one process, decord opens the long video with the ingest's resize and
  reads every frame of the ingest's 1 fps sampling grid, 32 at a time (``get_batch``;
  no windows, no JPEG, no Parquet): the frames a decoder must produce;
- ``ray_job``: ``pipelines/ingest.py --videos`` over the long video alone, as a
  subprocess with its default windows (12 s every 4 s): frames per second are the
  grid's frames (each decoded once, shared by up to three windows) over the job's own
  wall time, after Ray has started;
- ``ratio``: ray_job / bare_decord frames per second (goal: >= 0.8);
- ``peak_rss_mb``: the job's whole process tree's peak resident memory for the long and
  the one-minute video (goal: within 20 % of each other).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

from ingest_throughput import open_scaled, run_job

from pipelines.ingestion.video_decode import DECODE_CHUNK, SamplingOptions, sampling_grid
from pipelines.sources.samples import write_clip


def bare_decord(path: Path, options: SamplingOptions) -> dict:
    """Every frame of the 1 fps grid of ``path``, decoded at the ingest's size, a chunk
    at a time (what memory allows for an hour), in one process."""
    started = time.perf_counter()
    reader, fps, total, duration = open_scaled(path, options)
    indices = sorted({min(total - 1, round(t * fps))
                      for t in sampling_grid(duration, options.fps)})
    frames = 0
    for i in range(0, len(indices), DECODE_CHUNK):
        frames += len(reader.get_batch(indices[i:i + DECODE_CHUNK]).asnumpy())
    wall = time.perf_counter() - started
    return {"frames": frames, "wall_s": round(wall, 2), "frames_per_s": round(frames / wall, 1),
            "duration_s": round(duration, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60, help="length of the long video")
    parser.add_argument("--fps", type=int, default=2, help="frame rate of both videos")
    parser.add_argument("--width", type=int, default=1280, help="video width")
    parser.add_argument("--height", type=int, default=720, help="video height")
    args = parser.parse_args()
    options = SamplingOptions()
    result: dict = {"cpus": os.cpu_count(), "sampling": dataclasses.asdict(options),
                    "video": {"minutes": args.minutes, "fps": args.fps,
                              "size": [args.width, args.height]}}
    with tempfile.TemporaryDirectory(prefix="long-ingest-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        paths = {}
        for name, minutes in (("long", args.minutes), ("minute", 1.0)):
            paths[name] = write_clip(root / name / f"{name}.mp4",
                                     num_frames=round(minutes * 60 * args.fps), fps=args.fps,
                                     size=(args.width, args.height),
                                     options={"preset": "ultrafast"})
        result["write_s"] = round(time.perf_counter() - started, 1)
        result["bare_decord"] = bare_decord(paths["long"], options)
        runs = {name: run_job(path.parent, root / f"out-{name}") for name, path in paths.items()}
        long_run = runs["long"]
        grid = result["bare_decord"]["frames"]
        long_run["grid_frames_per_s"] = round(grid / long_run["job_wall_s"], 1)
        result["ray_job"] = runs
        result["ratio"] = round(long_run["grid_frames_per_s"]
                                / result["bare_decord"]["frames_per_s"], 3)
        result["peak_rss_mb"] = {name: run["peak_rss_mb"] for name, run in runs.items()}
        result["peak_rss_growth"] = round(runs["long"]["peak_rss_mb"]
                                          / runs["minute"]["peak_rss_mb"] - 1, 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

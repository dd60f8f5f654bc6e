"""Ingest job throughput against a bare decord loop, and its memory as the archive grows.

    python benchmarks/ingest_throughput.py [--clips 240] [--memory-sizes 100,1000]

Prints one JSON object. On the same generated clips and the same machine, in
one run:

- ``bare_decord``: one process, decord opens each clip with the same resize and
  reads the same sampled frames with ``get_batch`` (no JPEG, no Parquet);
- ``ray_job``: ``pipelines/ingest.py --videos DIR`` as a subprocess; frames per
  second over the job's own wall time (manifest to published output, after
  Ray has started) and over the whole process (Ray start-up included);
- ``ratio``: ray_job / bare_decord frames per second (goal: >= 0.8);
- ``peak_rss_mb``: peak resident memory of the job's whole process tree
  (driver, raylet, GCS, workers, decoder children), sampled every 0.2 s, at
  each archive size (goal: within 20 % of each other).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from pipelines.ingestion.video_decode import SamplingOptions, sample_times, scaled_size
from pipelines.sources.samples import write_clip

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"(\d+) frames written in ([\d.]+) s")


def make_clips(folder: Path, count: int, seconds: int, size: tuple[int, int]) -> list[Path]:
    fps = 24
    return [
        write_clip(folder / f"clip_{i:05d}.mp4", num_frames=seconds * fps, fps=fps, size=size,
                   seed=i)
        for i in range(count)
    ]


def open_scaled(path: Path, options: SamplingOptions):
    """A decord reader of ``path`` at the ingest's frame size, its frame rate, frame count
    and duration (s): what a bare loop needs to sample the ingest's frames."""
    import av
    import decord

    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        width, height = scaled_size(ctx.width, ctx.height, options.frame_size)
    reader = decord.VideoReader(str(path), width=width, height=height)
    total = len(reader)
    return reader, reader.get_avg_fps(), total, float(reader.get_frame_timestamp(total - 1)[1])


def bare_decord(paths: list[Path], options: SamplingOptions) -> dict:
    """The baseline: a plain single-process decord loop sampling the same frames."""
    frames, start = 0, time.perf_counter()
    for path in paths:
        reader, fps, total, duration = open_scaled(path, options)
        times = sample_times(duration, options.fps, options.max_frames)
        indices = sorted({min(total - 1, round(t * fps)) for t in times})
        frames += len(reader.get_batch(indices).asnumpy())
    wall = time.perf_counter() - start
    return {"frames": frames, "wall_s": round(wall, 2), "frames_per_s": round(frames / wall, 1)}


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run_job(videos: Path, output: Path) -> dict:
    """Run the ingest job as a fresh process; its frames/s and peak tree RSS."""
    cmd = [sys.executable, str(REPO / "pipelines" / "ingest.py"), "--videos", str(videos),
           "--data", str(output), "--overwrite"]
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env.pop("RAY_ADDRESS", None)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    peak = 0
    ps = psutil.Process(proc.pid)

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, _tree_rss(ps))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    sampler.join()
    wall = time.perf_counter() - start
    match = SUMMARY.search(stdout)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"ingest failed ({proc.returncode}):\n{stdout[-2000:]}")
    frames, job_wall = int(match.group(1)), float(match.group(2))
    return {
        "frames": frames,
        "job_wall_s": job_wall,
        "process_wall_s": round(wall, 2),
        "frames_per_s": round(frames / job_wall, 1),
        "frames_per_s_with_ray_start": round(frames / wall, 1),
        "peak_rss_mb": round(peak / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=240, help="clips for the throughput run")
    parser.add_argument("--seconds", type=int, default=12, help="length of each clip")
    parser.add_argument("--width", type=int, default=640, help="generated clip width")
    parser.add_argument("--height", type=int, default=360, help="generated clip height")
    parser.add_argument("--memory-sizes", default="100,1000",
                        help="archive sizes for the memory runs (short 64x48 clips)")
    args = parser.parse_args()
    options = SamplingOptions()
    result: dict = {"cpus": os.cpu_count(), "sampling": dataclasses.asdict(options)}
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        root = Path(tmp)
        clips = make_clips(root / "clips", args.clips, args.seconds, (args.width, args.height))
        result["clips"] = {"count": args.clips, "seconds": args.seconds,
                           "size": [args.width, args.height]}
        result["bare_decord"] = bare_decord(clips, options)
        result["ray_job"] = run_job(root / "clips", root / "out")
        result["ratio"] = round(
            result["ray_job"]["frames_per_s"] / result["bare_decord"]["frames_per_s"], 3)
        memory = {}
        sizes = [int(s) for s in args.memory_sizes.split(",") if s]
        folder = root / "memory"
        made = 0
        for size in sorted(sizes):
            for i in range(made, size):
                write_clip(folder / f"m_{i:05d}.mp4", num_frames=48, fps=24, size=(64, 48), seed=i)
            made = size
            memory[str(size)] = run_job(folder, root / f"mem-out-{size}")
        result["memory_runs"] = memory
        peaks = [run["peak_rss_mb"] for run in memory.values()]
        result["peak_rss_mb"] = dict(zip(memory, peaks, strict=True))
        result["peak_rss_growth"] = round(max(peaks) / min(peaks) - 1, 3) if peaks else None
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

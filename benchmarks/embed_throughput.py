"""Frames per second of the embed job against a bare forward pass, side by side.

    python benchmarks/embed_throughput.py [--groups 200] [--backbone ViT-B-32] [--batch-size 32]

Prints one JSON object. On the same synthetic clips (generated and ingested
first, or ``--data``), the same model and batch size, in one run:

- ``bare_forward``: one process with every CPU, frames already decoded and
  preprocessed in memory, ``encode_video`` + ``video_embedding`` per batch;
- ``embed_job``: ``pipelines/embed.py`` as a subprocess on a fresh local Ray,
  over the job's own time (reading Parquet, JPEG decoding, the actor pool,
  the LanceDB upsert and indexes; not Ray's start-up);
- ``ratio``: embed_job / bare_forward frames per second (goal: >= 0.8).

The model is ``lfemi`` with random weights, its motion map ``Z`` included: a zero
``Z`` (an untrained model's) skips the motion frames' image-tower pass, a trained
one does not, and the benchmark measures a trained model's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_data import REPO, make_data

from pipelines.ingestion.output import open_part
from vtr_models.checkpoint import load_checkpoint, save_checkpoint
from vtr_models.factory import create_model


def bare_forward(checkpoint: Path, data: str, batch_size: int) -> dict:
    """Frames per second of the video encoder over preprocessed frames in memory."""
    model = load_checkpoint(checkpoint)
    jpegs = open_part(data, "videos").to_table(columns=["frames"]).column("frames").to_pylist()
    batches = [model.preprocess.batch(jpegs[i : i + batch_size])
               for i in range(0, len(jpegs), batch_size)]
    frames = sum(int(mask.sum()) for _, mask in batches)
    started = time.perf_counter()
    with torch.no_grad():
        for video, mask in batches:
            model.video_embedding(model.encode_video(video, mask))
    seconds = time.perf_counter() - started
    return {"frames_per_s": frames / seconds, "frames": frames, "seconds": seconds,
            "threads": torch.get_num_threads()}


def embed_job(checkpoint: Path, data: str, batch_size: int, db: Path, frames: int) -> dict:
    """Frames per second of ``pipelines/embed.py`` over the time it reports for its work."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, "pipelines/embed.py", "--data", data, "--checkpoint", str(checkpoint),
         "--db", str(db), "--table", "videos", "--batch-size", str(batch_size),
         "--ray-address", "local"],
        cwd=REPO, env=env, check=True, capture_output=True, text=True)
    summary = re.search(r"embed done: .* in ([0-9.]+) s", result.stdout)
    seconds = float(summary.group(1))
    return {"frames_per_s": frames / seconds, "seconds": seconds, "summary": summary.group(0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="an ingest output to embed (default: generate one)")
    parser.add_argument("--groups", type=int, default=200,
                        help="synthetic groups of 3 clips when generating")
    parser.add_argument("--backbone", default="ViT-B-32", help="open_clip name, random init")
    parser.add_argument("--max-frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="videos per forward pass, in both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or make_data(Path(tmp), args.groups)
        torch.manual_seed(0)
        model = create_model("lfemi", backbone=args.backbone, max_frames=args.max_frames)
        torch.nn.init.normal_(model.motion.out.weight, std=0.02)  # as a trained Z
        checkpoint = save_checkpoint(model, Path(tmp) / "ckpt")
        bare = bare_forward(checkpoint, data, args.batch_size)
        job = embed_job(checkpoint, data, args.batch_size, Path(tmp) / "db", bare["frames"])
    print(json.dumps({"backbone": args.backbone, "batch_size": args.batch_size,
                      "max_frames": args.max_frames, "cpus": os.cpu_count(),
                      "bare_forward": bare, "embed_job": job,
                      "ratio": job["frames_per_s"] / bare["frames_per_s"]}, indent=2))


if __name__ == "__main__":
    main()

"""Training throughput of the Ray Train job against a bare PyTorch loop, side by side.

    python benchmarks/train_throughput.py [--model lfemi] [--epochs 6] [--batch-size 32]

Prints one JSON object. On the same synthetic clips (generated and ingested
first, or ``--data`` for an existing ingest output), the same model, batch size
and number of threads, in one run:

- ``bare_loop``: one process, every (video, caption) pair of the train split
  already preprocessed in memory, ``contrastive_step`` + AdamW, no Ray;
- ``ray_job``: ``pipelines/train.py`` with one Ray Train worker holding all the
  CPUs (the data cached in the object store, ``--cache-data always``), as a
  subprocess. Samples per second over whole epochs after the first (training
  loop, checkpoint and ``ray.train.report``; only the validation pass, which
  the bare loop does not run, is left out), and over the training loop alone;
- ``ratio``: ray_job / bare_loop samples per second (goal: >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_data import REPO, make_data

from pipelines.ingestion.output import as_snapshot, open_part
from pipelines.training.data import encode_pairs, split_captions
from pipelines.training.loop import contrastive_step
from vtr_models.factory import create_model
from vtr_models.model_config import ModelConfig, model_config


def load_pairs(data: str, config: ModelConfig) -> dict[str, torch.Tensor]:
    """The train split's pairs, preprocessed by the job's own UDF, as in-memory tensors."""
    videos = open_part(data, "videos").to_table(columns=["video_id", "frames"])
    grouped = split_captions(as_snapshot(data), "train")
    parts = [encode_pairs(videos.slice(i, 8), config, grouped)
             for i in range(0, videos.num_rows, 8)]
    parts = [p for p in parts if p]
    return {k: torch.from_numpy(np.concatenate([p[k] for p in parts])) for k in parts[0]}


def bare_loop(args, data: str) -> dict:
    """Samples per second of a plain loop over pairs already in memory (epochs after the first)."""
    config = model_config(args.model, backbone=args.backbone, max_frames=args.max_frames)
    pairs = load_pairs(data, config)
    torch.manual_seed(0)
    model = create_model(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    steps = len(pairs["video_key"]) // args.batch_size
    samples, seconds = 0, 0.0
    for epoch in range(args.epochs):
        order = torch.randperm(len(pairs["video_key"]))
        start = time.perf_counter()
        for step in range(steps):
            index = order[step * args.batch_size : (step + 1) * args.batch_size]
            loss = contrastive_step(model, model, {k: v[index] for k, v in pairs.items()})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        if epoch > 0:
            samples += steps * args.batch_size
            seconds += time.perf_counter() - start
    return {"samples_per_s": samples / seconds, "threads": torch.get_num_threads()}


def ray_job(args, data: str, output: Path) -> dict:
    """Samples per second of ``pipelines/train.py``, from the epoch times it records."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "pipelines/train.py", "--data", data, "--checkpoint", str(output),
         "--model", args.model, "--backbone", args.backbone, "--max-frames",
         str(args.max_frames), "--epochs", str(args.epochs), "--batch-size",
         str(args.batch_size), "--lr", str(args.lr), "--workers", "1",
         "--cpus-per-worker", str(os.cpu_count()), "--cache-data", "always",
         "--checkpoint-every", str(args.checkpoint_every),
         "--ray-address", "local"],
        cwd=REPO, env=env, check=True, capture_output=True,
    )
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    later = list(zip(rows, rows[1:], strict=False))
    samples = sum(r["steps"] * args.batch_size for _, r in later)
    epochs_s = sum(r["time"] - prev["time"] - r["val_s"] for prev, r in later)
    loops_s = sum(r["train_s"] for _, r in later)
    return {"samples_per_s": samples / epochs_s, "training_loop_samples_per_s": samples / loops_s,
            "first_epoch_s": rows[0]["train_s"], "val_s_per_epoch": rows[-1]["val_s"],
            "process_wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="an ingest output to train on (default: generate one)")
    parser.add_argument("--groups", type=int, default=134,
                        help="synthetic groups of 3 clips to train on when generating")
    parser.add_argument("--model", default="lfemi", help="lfemi, meanp or seqtransf")
    parser.add_argument("--backbone", default="vtr-tiny", help="open_clip name, random init")
    parser.add_argument("--max-frames", type=int, default=8, help="frames per video")
    parser.add_argument("--epochs", type=int, default=6, help="epochs; the first is not timed")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size, in both")
    parser.add_argument("--lr", type=float, default=3e-4, help="learning rate, in both")
    parser.add_argument("--checkpoint-every", type=int, default=1,
                        help="the job's --checkpoint-every (it also saves each new best)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or make_data(Path(tmp), args.groups)
        bare = bare_loop(args, data)
        ray = ray_job(args, data, Path(tmp) / "ckpt")
    print(json.dumps({
        "model": args.model, "backbone": args.backbone, "batch_size": args.batch_size,
        "frames": args.max_frames, "epochs_timed": args.epochs - 1, "cpus": os.cpu_count(),
        "checkpoint_every": args.checkpoint_every,
        "bare_loop": bare, "ray_job": ray,
        "ratio": ray["samples_per_s"] / bare["samples_per_s"],
    }, indent=2))


if __name__ == "__main__":
    main()

"""Training speed of the tiny models and memory of full-model scoring, on the CPU.

    python benchmarks/model_speed.py [--backbone vtr-tiny] [--steps 10]

Prints JSON: for each model (meanp, seqtransf, lfemi), optimisation steps per
second on a batch of 32 videos x 8 frames at the backbone's image size with
one caption each (forward, symmetric InfoNCE, backward, AdamW); and for lfemi,
the wall time and the growth of peak resident memory while scoring 1,000
captions against 1,000 videos with ``score`` (chunked), with the feature sizes
of ``--score-backbone`` (ViT-B-32: D = 512, 77 tokens, 12 frames).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from vtr_models.factory import create_model
from vtr_models.retrieval_model import TextFeatures, VideoFeatures


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_speed(name: str, backbone: str, steps: int, batch: int, frames: int) -> float:
    torch.manual_seed(0)
    model = create_model(name, backbone=backbone).train()
    size = model.backbone.clip.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    video = torch.randn(batch, frames, 3, size, size)
    mask = torch.ones(batch, frames, dtype=torch.bool)
    tokens = model.tokenizer.captions([f"a red circle moves left then {i}" for i in range(batch)])
    kw, kw_mask = model.tokenizer.keywords([["red circle", "move left"]] * batch, 5)
    ids = torch.arange(batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        sim = model.score(model.encode_text(tokens, kw, kw_mask), model.encode_video(video, mask))
        loss = model.loss(sim, ids, ids)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def score_memory(backbone: str, count: int, frames: int, chunk: int) -> dict:
    torch.manual_seed(0)
    model = create_model("lfemi", backbone=backbone).eval()
    d = model.backbone.embed_dim
    length = model.backbone.context_length
    frame_mask = torch.ones(count, frames, dtype=torch.bool)
    video = VideoFeatures(torch.randn(count, d), torch.randn(count, frames, d),
                          torch.randn(count, frames, d), frame_mask)
    mask = torch.zeros(count, length, dtype=torch.bool)
    mask[:, :12] = True
    text = TextFeatures(torch.randn(count, d), torch.randn(count, length, d), mask)
    before = peak_rss_mb()
    start = time.perf_counter()
    with torch.no_grad():
        scores = model.score(text, video, chunk_size=chunk)
    return {"pairs": list(scores.shape), "chunk_size": chunk,
            "wall_s": round(time.perf_counter() - start, 2),
            "peak_rss_growth_mb": round(peak_rss_mb() - before)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vtr-tiny", help="open_clip name, random init")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--batch", type=int, default=32, help="pairs per training step")
    parser.add_argument("--frames", type=int, default=8, help="frames per video")
    parser.add_argument("--score-backbone", default="ViT-B-32",
                        help="architecture (random weights) whose feature sizes the scoring uses")
    parser.add_argument("--score-count", type=int, default=1000,
                        help="captions and videos in the scoring run")
    parser.add_argument("--chunk-size", type=int, default=128,
                        help="RetrievalModel.score chunk size")
    args = parser.parse_args()
    # Scoring first, while the process's peak RSS is still low.
    scoring = score_memory(args.score_backbone, args.score_count, 12, args.chunk_size)
    result = {
        "backbone": args.backbone, "threads": torch.get_num_threads(),
        "train_steps_per_s": {
            name: round(train_speed(name, args.backbone, args.steps, args.batch, args.frames), 2)
            for name in ("meanp", "seqtransf", "lfemi")
        },
        "batch": [args.batch, args.frames],
        "score": {"backbone": args.score_backbone, **scoring},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Can the video side see which way a shape moves? A supervised probe on the synthetic clips.

    python benchmarks/direction_probe.py [--tier hard] [--frames pooled|motion|spatial] \\
        [--groups 134] [--epochs 12] [--seed 0] [--backbone vtr-128-p8]

The synthetic benchmark asks a model to learn the order of two motions from
captions alone. Before order comes direction: which way did the first shape
move? This probe asks the video side that one question with a label, the
direction of the clip's first motion (left, right, up or down; chance 25 %),
read from its caption by ``order_oracles.motions``. The clips are the
generator's own (``pipelines/sources/synthetic.py``), drawn at 64 px (the
benchmark's ingest size) with one frame per held position (the 8 frames ingest
samples at 1 fps): ``--groups`` training groups of three clips and 33 test
groups. The model is ``lfemi``'s video side (the image tower, the frame part
under test, the temporal encoder), trained with ``vtr train``'s recipe (AdamW,
learning rate 5e-4, weight decay 0.05, batches of 32) and a linear head over its
temporal frame features in order. ``--frames`` picks the frame features:

- ``pooled``: the image tower's pooled feature (its class token) alone;
- ``motion``: plus motion frames (``vtr_models.motion``), as ``lfemi``;
- ``spatial``: the pooled feature plus the patch tokens in grid order
  (``vtr_models.spatial``).

Prints one JSON line per epoch: training and test accuracy. A tower that
memorises the training clips without seeing direction shows a high training and
a chance test accuracy.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from order_oracles import WORDS, motions
from PIL import Image

from pipelines.sources.synthetic import DIRECTIONS, group_clips
from vtr_models import create_model

FRAME_PARTS = {"pooled": {"motion": False}, "motion": {"motion": True},
               "spatial": {"motion": False, "spatial": True}}
TEST_GROUPS = 33
SIZE = 64  # the benchmark's --frame-size
POSITIONS = 4  # held positions per motion: the frames ingest samples at 1 fps


def first_direction(caption: str) -> int:
    """The index in ``DIRECTIONS`` of the direction of a caption's first motion."""
    return list(DIRECTIONS).index(WORDS[motions(caption)[2]])


def clips(groups: int, tier: str, rng: np.random.Generator, transform
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``groups`` groups' clips as ``[N, 8, 3, H, W]`` model inputs, and their labels."""
    videos, labels = [], []
    for _ in range(groups):
        for texts, pictures in group_clips(rng, SIZE, POSITIONS, tier=tier):
            videos.append(torch.stack([transform(Image.fromarray(p)) for p in pictures]))
            labels.append(first_direction(texts[0]))
    return torch.stack(videos), torch.tensor(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="hard", choices=["hard", "easy"],
                        help="the generator's tier (default: hard)")
    parser.add_argument("--frames", default="pooled", choices=list(FRAME_PARTS),
                        help="the frame features under test (default: pooled, the tower's own)")
    parser.add_argument("--groups", type=int, default=134, help="training groups (default: 134)")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (default: 12)")
    parser.add_argument("--seed", type=int, default=0, help="clips and initialisation")
    parser.add_argument("--backbone", default="vtr-128-p8", help="open_clip name, random init")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = create_model("lfemi", backbone=args.backbone, **FRAME_PARTS[args.frames])
    rng = np.random.default_rng(args.seed)
    train_x, train_y = clips(args.groups, args.tier, rng, model.preprocess.transform)
    test_x, test_y = clips(TEST_GROUPS, args.tier, rng, model.preprocess.transform)
    head = torch.nn.Linear(train_x.shape[1] * model.backbone.embed_dim, len(DIRECTIONS))
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=5e-4,
                                  weight_decay=0.05)

    def logits(x: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(x.shape[:2], dtype=torch.bool)
        return head(model.encode_video(x, mask).frames.flatten(1))

    def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            return round((logits(x).argmax(-1) == y).float().mean().item(), 3)

    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        for batch in torch.randperm(len(train_x)).split(32):
            loss = F.cross_entropy(logits(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(json.dumps({"tier": args.tier, "frames": args.frames, "groups": args.groups,
                          "seed": args.seed, "epoch": epoch,
                          "train_accuracy": accuracy(train_x, train_y),
                          "test_accuracy": accuracy(test_x, test_y),
                          "seconds": round(time.perf_counter() - started)}), flush=True)


if __name__ == "__main__":
    main()

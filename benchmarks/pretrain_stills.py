"""Pretrain a tiny open_clip backbone on generated stills, as CLIP's towers come pretrained.

    python benchmarks/pretrain_stills.py --output bench/vtr-tiny-stills.pt \\
        [--backbone vtr-tiny] [--steps 3000] [--batch-size 256] [--lr 1e-3]
    python pipelines/train.py ... --backbone vtr-tiny:bench/vtr-tiny-stills.pt

The synthetic benchmark asks a model to learn time on top of towers that know
pictures and words. ViT-B-32:openai knows them from 400M web pairs; a random
``vtr-tiny`` knows nothing, and 402 clips teach it neither where shapes are nor
which colour goes with which shape. This script gives the tiny towers what a
pretrained CLIP has and nothing about time: CLIP's contrastive loss on still
pictures of two coloured shapes (drawn as the benchmark's clips draw them,
fresh every step) against captions of what is where ("a red circle at the top
left and a blue square in the centre", "a blue square to the right of a red
circle"). No motion, no order of events, no benchmark clip. Every
``--eval-every`` steps it prints one JSON line: the loss and image-to-text R@1
on 512 held-out stills (chance 0.2 %). Writes the open_clip state dict, which
``--backbone NAME:PATH`` loads.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from open_clip.loss import ClipLoss
from PIL import Image

from pipelines.sources.synthetic import COLORS, SHAPES, draw
from pipelines.training.loop import cosine_with_warmup
from vtr_models import optimizer_groups
from vtr_models.backbone import BackboneSpec, create_clip
from vtr_models.factory import create_inputs
from vtr_models.model_config import model_config

SIZE = 96  # the benchmark's clips are drawn at 96 px; the backbone's transform resizes
GRIDS = {  # cells per side -> the words of the rows (top down) and columns (left to right)
    3: (("top", "middle", "bottom"), ("left", "centre", "right")),
    5: (("top", "upper", "middle", "lower", "bottom"),
        ("far left", "left", "centre", "right", "far right")),
}
JOINERS = ("{a} and {b}", "{a}, {b}", "{a} with {b}", "{b} and {a}")
RELATIONS = {  # (dx, dy) of a relative to b -> how it is said
    (-1, 0): ("to the left of", "left of"), (1, 0): ("to the right of", "right of"),
    (0, -1): ("above", "over"), (0, 1): ("below", "under"),
}


def place(column: int, row: int, grid: int) -> str:
    """A cell of the ``grid`` x ``grid`` in words ("the top left", "the centre")."""
    rows, columns = GRIDS[grid]
    middle = grid // 2
    words = [rows[row] if row != middle else "", columns[column] if column != middle else ""]
    return "the " + (" ".join(w for w in words if w) or "centre")


def cell(xy: np.ndarray, grid: int) -> str:
    """Where the point ``xy`` (pixels) is, in words."""
    column, row = np.minimum(xy // (SIZE / grid), grid - 1).astype(int)
    return place(column, row, grid)


def still(rng: np.random.Generator, grid: int = 3) -> tuple[np.ndarray, str]:
    """Two shapes of different colours at random places, and one caption of them."""
    colors = rng.choice(list(COLORS), size=2, replace=False)
    shapes = rng.choice(SHAPES, size=2)
    radius = SIZE * 0.09
    margin = SIZE * 0.15
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    centres = rng.uniform(margin, SIZE - margin, size=(2, 2))
    names = []
    for color, shape, centre in zip(colors, shapes, centres, strict=True):
        draw(img, str(shape), COLORS[str(color)], centre, radius)
        names.append(f"{rng.choice(('a', 'the'))} {color} {shape}")
    (ax, ay), (bx, by) = centres
    if rng.random() < 0.5:  # where each is
        parts = [f"{name} {rng.choice(('at', 'in'))} {cell(c, grid)}"
                 for name, c in zip(names, centres, strict=True)]
        text = str(rng.choice(JOINERS)).format(a=parts[0], b=parts[1])
    else:  # where one is from the other, along the axis they differ most on
        dx, dy = bx - ax, by - ay
        key = (int(np.sign(-dx)), 0) if abs(dx) >= abs(dy) else (0, int(np.sign(-dy)))
        text = f"{names[0]} {rng.choice(RELATIONS[key])} {names[1]}"
    return img, text


def batch(rng: np.random.Generator, size: int, transform, tokenizer, grid: int):
    pairs = [still(rng, grid) for _ in range(size)]
    images = torch.stack([transform(Image.fromarray(img)) for img, _ in pairs])
    return images, tokenizer.captions([text for _, text in pairs])


def image_to_text_r1(model, images: torch.Tensor, tokens: torch.Tensor) -> float:
    with torch.no_grad():
        model.eval()
        image = model.encode_image(images, normalize=True)
        text = model.encode_text(tokens, normalize=True)
        model.train()
    hits = (image @ text.T).argmax(1) == torch.arange(len(images))
    return round(100 * hits.float().mean().item(), 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="where the state dict goes (.pt)")
    parser.add_argument("--backbone", default="vtr-tiny",
                        help="open_clip config to pretrain (random init)")
    parser.add_argument("--steps", type=int, default=3000, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=256, help="stills per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--grid", type=int, default=3, choices=sorted(GRIDS),
                        help="cells per side that captions name places by")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and stills")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between evaluations")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    spec = BackboneSpec.parse(args.backbone)
    if spec.pretrained:
        raise SystemExit(f"--backbone {spec}: give a config name to pretrain from random init")
    model = create_clip(spec, load_weights=False)  # random init, said above: no warning
    frames, tokenizer = create_inputs(model_config("meanp", backbone=spec.name))
    held_out = batch(np.random.default_rng(10**6 + args.seed), 512, frames.transform, tokenizer,
                     args.grid)
    optimizer = torch.optim.AdamW(optimizer_groups(model, model, args.lr, args.lr, 0.1))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(args.steps, math.ceil(0.05 * args.steps)))
    loss_fn = ClipLoss()
    started, losses = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        images, tokens = batch(rng, args.batch_size, frames.transform, tokenizer, args.grid)
        image, text, scale = model(images, tokens)
        loss = loss_fn(image, text, scale)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            print(json.dumps({"step": step, "loss": round(sum(losses) / len(losses), 3),
                              "held_out_i2t_R@1": image_to_text_r1(model, *held_out),
                              "seconds": round(time.perf_counter() - started)}), flush=True)
            losses = []
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

"""Where a model's errors on the synthetic benchmark lie: the wrong group, or the wrong order.

    python benchmarks/within_group.py --data synth-ingest --checkpoint ckpt/final [--split test]

Prints JSON, for the full score and for its coarse and fine parts: R@1
(text-to-video), how often the top-1 clip is in the caption's group, and how
often the caption's own clip is the best of its group's three (chance: 1/3;
a mean-pooling model cannot beat it). Clip ids are ``g{group}_v{index}``, as
``pipelines/synthetic.py`` writes them.
"""

from __future__ import annotations

import argparse
import json

import torch

from pipelines.evaluation import encode_split, load_split
from vtr_models.checkpoint import load_checkpoint


def breakdown(scores: torch.Tensor, text_video_ids: list[str], video_ids: list[str]) -> dict:
    """R@1, top-1-in-group and within-group accuracy (percent) of a ``[texts, videos]`` score."""
    groups = [v.split("_")[0] for v in video_ids]
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    top = scores.argmax(dim=1).tolist()
    hit = in_group = within = 0
    for row, video_id in enumerate(text_video_ids):
        own = video_ids.index(video_id)
        hit += top[row] == own
        in_group += groups[top[row]] == groups[own]
        mates = members[groups[own]]
        within += mates[int(scores[row, mates].argmax())] == own
    n = len(text_video_ids)
    return {"R@1": 100 * hit / n, "top1_in_group": 100 * in_group / n,
            "within_group_accuracy": 100 * within / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="ingest output of the synthetic benchmark")
    parser.add_argument("--checkpoint", required=True, help="a vtr_models checkpoint folder")
    parser.add_argument("--split", default="test", help="split to evaluate")
    args = parser.parse_args()
    model = load_checkpoint(args.checkpoint)
    inputs = load_split(model, args.data, args.split)
    text, video = encode_split(model, inputs)
    with torch.no_grad():
        parts = {"full": model.score(text, video), "coarse": model.coarse_score(text, video)}
        if model.config.fine_grained:
            parts["fine"] = model.fine_score(text, video)
    print(json.dumps({name: breakdown(s, inputs.text_video_ids, inputs.video_ids)
                      for name, s in parts.items()}, indent=2))


if __name__ == "__main__":
    main()

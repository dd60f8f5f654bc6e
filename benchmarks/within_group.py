"""Where a model's errors on the synthetic benchmark lie: the wrong group, or the wrong order.

    python benchmarks/within_group.py --data synth-ingest --checkpoint ckpt/final [--split test]

Prints JSON, for the full score and for its coarse and fine parts (and the fine
term's learned weight, ``fine_gate``): R@1
(text-to-video), how often the top-1 clip is in the caption's group, and how
often the caption's own clip is the best of its group's three (chance: 1/3;
a mean-pooling model cannot beat it). Ties count against the caption. Clip
ids are ``g{group}_v{index}``, as ``pipelines/sources/synthetic.py`` writes them.
"""

from __future__ import annotations

import argparse
import json

import torch

from pipelines.training.evaluation import encode_split, load_split
from vtr_models.checkpoint import load_checkpoint
from vtr_models.metrics import target_rank


def breakdown(scores: torch.Tensor, text_video_ids: list[str], video_ids: list[str]) -> dict:
    """R@1, top-1-in-group and within-group accuracy (percent) of a ``[texts, videos]`` score.

    Ties count against the caption, as in ``vtr_models.metrics``: R@1 needs the own clip to
    beat every other clip strictly; top-1-in-group, the best of the group to beat every clip
    outside it; within-group, the own clip to beat its group-mates. A model that cannot tell
    twins apart gets no credit for them.
    """
    column = {video_id: j for j, video_id in enumerate(video_ids)}
    group_of = [video_id.split("_")[0] for video_id in video_ids]
    number = {g: i for i, g in enumerate(dict.fromkeys(group_of))}
    own = torch.tensor([column[video_id] for video_id in text_video_ids], device=scores.device)
    group = torch.tensor([number[g] for g in group_of], device=scores.device)
    is_own = torch.arange(len(video_ids), device=scores.device)[None, :] == own[:, None]
    in_group = group[None, :] == group[own][:, None]
    mates_only = scores.masked_fill(~in_group, float("-inf"))
    hits = {"R@1": target_rank(scores, is_own), "top1_in_group": target_rank(scores, in_group),
            "within_group_accuracy": target_rank(mates_only, is_own)}
    return {name: 100 * float((rank == 1).double().mean()) for name, rank in hits.items()}


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
    result = {name: breakdown(s, inputs.text_video_ids, inputs.video_ids)
              for name, s in parts.items()}
    if model.fine_gate is not None:  # how far training opened the fine term (0 at start)
        result["fine_gate"] = float(model.fine_gate.detach())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

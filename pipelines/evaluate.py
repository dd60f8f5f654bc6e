r"""Evaluate a checkpoint on one split of an ingest output: every caption against every video.

    vtr evaluate --data ingest_out/ --checkpoint ckpt/final --split test \
        [--json metrics.json]

Prints a table of text-to-video and video-to-text R@1/5/10 (percent), median
and mean rank, and writes them as JSON:
``{"t2v": {...}, "v2t": {...}, "first_stage": {...}, "num_videos": N, "num_captions": M}``
(``first_stage``: text-to-video by the first-stage vectors alone, what the
vector index ranks before the rerank; absent with ``--via-index``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from pipelines.core.devices import DEVICE_HELP, DEVICES, resolve_device
from pipelines.core.job_config import flag, parse_config
from pipelines.core.keywords import QUERY_KEYWORD_MODEL_HELP, KeywordModelError
from pipelines.core.messages import first_line
from pipelines.training.evaluation import evaluate_split, evaluate_via_index, load_split
from vtr_models import open_model

COLUMNS = ("R@1", "R@5", "R@10", "MdR", "MnR")


@dataclass
class EvaluateConfig:
    """Every setting of the evaluate job; each field is a CLI flag of the same name."""

    data: str = field(metadata=flag("ingest output folder (videos/, captions/)"))
    checkpoint: str = field(metadata=flag(
        "vtr_models checkpoint folder (e.g. ckpt/final), or a backbone with weights, "
        "NAME:PRETRAINED (ViT-B-32:openai), for the untrained full model's zero-shot figures"))
    split: str = field(default="test", metadata=flag("split to evaluate"))
    json: str | None = field(default=None, metadata=flag("also write the metrics here"))
    batch_size: int = field(default=32, metadata=flag("videos or captions per forward"))
    via_index: bool = field(default=False, metadata=flag(
        "evaluate text-to-video through the two query stages (vector search in --db, then "
        "rerank) instead of scoring every pair; needs a table of the split from embed.py"))
    db: str | None = field(default=None, metadata=flag("LanceDB URI, with --via-index"))
    table: str = field(default="videos", metadata=flag("video table, with --via-index"))
    candidates: int = field(default=100, metadata=flag(
        "stage-one neighbours reranked per caption, with --via-index"))
    keyword_model: str | None = field(default=None, metadata=flag(
        f"with --via-index, {QUERY_KEYWORD_MODEL_HELP}"))
    device: str = field(default="auto", metadata=flag(DEVICE_HELP, choices=DEVICES))

    def __post_init__(self) -> None:
        if self.via_index and not self.db:
            raise ValueError("--via-index needs --db (and --table)")


def format_table(metrics: dict) -> str:
    """The metrics as a small fixed-width table, one row per direction."""
    lines = [f"{'':12}" + "".join(f"{c:>8}" for c in COLUMNS)]
    for direction in [d for d in ("t2v", "v2t", "first_stage") if d in metrics]:
        values = [metrics[direction][c] for c in COLUMNS]  # None: not measurable (--via-index)
        lines.append(f"{direction:12}" + "".join(f"{'-':>8}" if v is None else f"{v:8.1f}"
                                                 for v in values))
    lines.append(f"({metrics['num_videos']} videos, {metrics['num_captions']} captions)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    config = parse_config(EvaluateConfig, __doc__, argv)
    try:
        if config.via_index:
            from pipelines.index.search import VideoSearch

            search = VideoSearch(config.db, config.table, config.checkpoint,
                                 keyword_model=config.keyword_model,
                                 device=resolve_device(config.device))
            metrics = evaluate_via_index(search, config.data, config.split, config.candidates)
        else:
            model, _ = open_model(config.checkpoint, device=resolve_device(config.device))
            metrics = evaluate_split(
                model, load_split(model, config.data, config.split, config.batch_size))
    except (FileNotFoundError, ValueError, KeywordModelError) as exc:
        print(f"evaluate: error: {first_line(exc)}", file=sys.stderr)
        return 2
    print(format_table(metrics))
    if config.json:
        with open(config.json, "w") as f:
            json.dump(metrics, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

r"""Query job: one text query against a video table, printed as a table or JSON.

    vtr query --db lancedb/ --table videos --checkpoint ckpt/final \
        --text "a dog catches a frisbee on the beach" [--k 10] [--candidates 100] [--json]

Runs :class:`pipelines.index.search.VideoSearch` (vector search, then rerank with the
full model) in this process; no Ray needed.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field

from pipelines.core.devices import DEVICE_HELP, DEVICES, resolve_device
from pipelines.core.job_config import flag, parse_config
from pipelines.core.keywords import QUERY_KEYWORD_MODEL_HELP, KeywordModelError
from pipelines.core.messages import first_line


@dataclass
class QueryConfig:
    """Every setting of the query command; each field is a CLI flag of the same name."""

    db: str = field(metadata=flag("LanceDB URI: a local folder or s3://bucket/prefix"))
    checkpoint: str = field(metadata=flag(
        "the model that wrote the table: its checkpoint folder, or the backbone spec "
        "(ViT-B-32:openai) a zero-shot table was embedded with"))
    text: str = field(metadata=flag("what to look for, in words"))
    table: str = field(default="videos", metadata=flag("table written by pipelines/embed.py"))
    k: int = field(default=10, metadata=flag("results to return"))
    candidates: int = field(default=100, metadata=flag(
        "nearest neighbours the full model reranks (at least --k)"))
    where: str | None = field(default=None, metadata=flag(
        "SQL filter on metadata columns applied before the vector search, "
        "e.g. \"duration_s < 30\""))
    moments: int = field(default=1, metadata=flag(
        "moments per video: above 1, each result also lists the moments of up to this "
        "many of its video's best windows among the candidates"))
    hybrid: bool = field(default=False, metadata=flag(
        "also take as candidates the rows whose predicted tags match the text's (LanceDB's "
        "full-text index over the tags column of a table embedded by a model trained "
        "with --semantic-levels); all candidates are reranked alike"))
    keyword_model: str | None = field(default=None, metadata=flag(QUERY_KEYWORD_MODEL_HELP))
    json: bool = field(default=False, metadata=flag("print JSON records instead of a table"))
    device: str = field(default="auto", metadata=flag(DEVICE_HELP, choices=DEVICES))

    def __post_init__(self) -> None:
        """Checks that need no model: a bad query fails before seconds of loading."""
        if not self.text.strip():
            raise ValueError("--text is empty")
        if self.k < 1 or self.candidates < self.k:
            raise ValueError(f"--k ({self.k}) must be at least 1 and at most candidates "
                             f"(--candidates {self.candidates})")
        if self.moments < 1:
            raise ValueError("--moments must be at least 1")


def main(argv: list[str] | None = None) -> int:
    config = parse_config(QueryConfig, __doc__, argv)
    from pipelines.index.search import QueryTruncatedWarning, VideoSearch

    try:
        search = VideoSearch(config.db, config.table, config.checkpoint,
                             keyword_model=config.keyword_model,
                             device=resolve_device(config.device))
        with warnings.catch_warnings(record=True, category=QueryTruncatedWarning) as caught:
            results = search.search(config.text, k=config.k, candidates=config.candidates,
                                    where=config.where, moments=config.moments,
                                    hybrid=config.hybrid)
    except KeywordModelError as exc:
        message = first_line(exc)
        if "--keyword-model" not in message:
            message += ("; pass --keyword-model with this machine's copy of the sentence "
                        "model the ingest used")
        print(f"query: error: {message}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"query: error: {exc}", file=sys.stderr)
        return 2
    for warning in caught:
        print(f"query: note: {warning.message}", file=sys.stderr)
    if results.empty:
        print(f"query: no videos found in table {config.table!r} (is it empty, or does "
              "--where match none?)", file=sys.stderr)
        return 1
    if config.json:
        print(results.to_json(orient="records", indent=2))
    else:
        print(results.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

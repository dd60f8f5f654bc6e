r"""Refresh job: bring an ingest output and its LanceDB table up to date with the archive.

    vtr refresh --videos s3://bucket/clips/ --data s3://bucket/ingest/ \
        --checkpoint ckpt/final --db s3://bucket/lancedb --table videos
    ray job submit --working-dir . -- python pipelines/refresh.py ...   (e.g. nightly)

One job, two steps: ``ingest.py --update`` (decode only new and changed
videos, delete vanished ones, one commit), then ``embed.py --update`` (embed
only what that changed, delete the rest, one commit). The first run on an
empty output builds everything; a run with nothing changed decodes and encodes
nothing. Every flag of the two jobs that applies is a flag here. A new
checkpoint rebuilds the table (``--overwrite`` forces that), never the ingest
output. A run killed anywhere leaves the last committed state readable, and
the next run completes it. Exit 0 when both steps finished; 1 when videos failed beyond
``--max-error-rate``, or every new or changed video failed to decode or
embed; 2 when a step could not run.
"""

from __future__ import annotations

import dataclasses
import sys
import time

from pipelines.core.failpoints import failpoint
from pipelines.core.keywords import KeywordModelError
from pipelines.core.ray_job import start_job
from pipelines.embed import EmbedConfig, embed_exit_code, run_embed
from pipelines.ingest import IngestConfig, exit_code, run_ingest
from pipelines.ingestion.manifest import ManifestError
from pipelines.ingestion.output import IngestFormatError

# the flags that refresh sets itself, or that mean another thing for one of the steps
INGEST_OWN = {"update", "overwrite"}
EMBED_OWN = {"data", "update", "ray_address", "split"}


def _copy(field: dataclasses.Field) -> tuple:
    kwargs = {"metadata": field.metadata}
    if field.default is not dataclasses.MISSING:
        kwargs["default"] = field.default
    return field.name, field.type, dataclasses.field(**kwargs)


def _fields() -> list[tuple]:
    """Every ingest and embed flag that applies, required ones first (as dataclasses want)."""
    chosen = [f for f in dataclasses.fields(IngestConfig) if f.name not in INGEST_OWN]
    shared = {f.name for f in chosen}  # e.g. --local-max-videos: one flag sets both steps
    chosen += [f for f in dataclasses.fields(EmbedConfig)
               if f.name not in EMBED_OWN and f.name not in shared]
    chosen.sort(key=lambda f: f.default is not dataclasses.MISSING)  # stable: flag order kept
    return [_copy(f) for f in chosen]


def _split(self) -> None:
    """Build (and so validate) the two steps' configs from the refresh's flags."""
    values = dataclasses.asdict(self)
    ingest_names = {f.name for f in dataclasses.fields(IngestConfig)}
    embed_names = {f.name for f in dataclasses.fields(EmbedConfig)}
    self.ingest = IngestConfig(**{k: v for k, v in values.items() if k in ingest_names},
                               update=True)
    self.embed = EmbedConfig(**{k: v for k, v in values.items()
                                if k in embed_names and k not in EMBED_OWN},
                             data=self.ingest.data, update=not self.overwrite)


RefreshConfig = dataclasses.make_dataclass(
    "RefreshConfig", _fields(), namespace={
        "__post_init__": _split,
        "__doc__": "Every setting of the refresh job: the ingest and embed flags that apply."})


def main(argv: list[str] | None = None) -> int:
    config = start_job(RefreshConfig, __doc__, argv)
    started = time.perf_counter()
    try:
        ingested = run_ingest(config.ingest)
    except (ManifestError, KeywordModelError, FileExistsError, IngestFormatError) as exc:
        print(f"refresh: error: {exc}", file=sys.stderr)
        return 2
    print(ingested, flush=True)
    code = exit_code(ingested, config.ingest)  # the good videos are committed: embed them
    failpoint("refresh.between")
    try:
        embedded = run_embed(config.embed)
    except (FileNotFoundError, ValueError) as exc:
        print(f"refresh: error: {exc}", file=sys.stderr)
        return 2
    print(embedded, flush=True)
    code = max(code, embed_exit_code(embedded))
    print(f"refresh done in {time.perf_counter() - started:.1f} s: ingest version "
          f"{embedded.ingest_version}; videos {ingested.added} added, {ingested.changed} "
          f"changed, {ingested.deleted} deleted, {ingested.unchanged} skipped, "
          f"{ingested.failed} failed; table: {embedded.embedded} embedded, "
          f"{embedded.deleted} deleted, {embedded.unchanged} skipped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

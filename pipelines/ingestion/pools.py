"""The ingest job's actor pools: Ray Data wiring of the per-row stages in ``stages.py``.

Videos go through a growing pool of decode actors (each with a crash-isolated
decoder process), or through the same stage in the driver when they are few;
captions that need keywords go through a pool of KeyBERT actors. Failures
are collected on the driver's node, so a lost worker node cannot take them
with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pyarrow as pa

from pipelines.core.actor_pools import growing_pool
from pipelines.core.in_driver import map_batches_here
from pipelines.core.keywords import KeywordOptions
from pipelines.ingestion import schemas
from pipelines.ingestion.stages import CaptionKeywords, VideoSampler
from pipelines.ingestion.video_decode import SamplingOptions


def _error_log_actor():
    """On the driver's node: a lost worker node must not take the error rows with it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)

    @ray.remote(num_cpus=0, scheduling_strategy=here)
    class ErrorLog:
        """Collects errors/ rows from every decode actor; one row per video, first wins,
        so a batch retried after a lost node records its failures once."""

        def __init__(self) -> None:
            self.rows: dict[str, dict] = {}

        def record(self, rows: list[dict]) -> None:
            for row in rows:
                self.rows.setdefault(row["video_id"], row)

        def all(self) -> list[dict]:
            return list(self.rows.values())

    return ErrorLog.remote()


def decode_videos(videos: list[dict], sampling: SamplingOptions, timeout_s: float,
                  version: int, error_rows: list[dict], local_max_videos: int,
                  concurrency: int | None) -> Iterator[pa.RecordBatch]:
    """Decode ``videos`` (manifest rows) on a growing pool of decode actors, or in the
    driver when there are at most ``local_max_videos``: their ``videos/`` rows stamped
    with ``version``, as record batches; when the rows are all out, ``error_rows``
    holds the ``errors/`` rows of the videos that failed."""
    import ray

    options = {"options": sampling, "timeout_s": timeout_s}
    errors = None  # the decode actors' collector of error rows
    if len(videos) <= local_max_videos:
        sampler = VideoSampler(**options, on_error=error_rows.extend)
        batches = map_batches_here(sampler, pa.Table.from_pylist(videos), batch_size=1)
    else:
        errors = _error_log_actor()
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        decoders = min(cpus, concurrency or cpus)
        blocks = min(len(videos), max(decoders, math.ceil(len(videos) / 8)))
        batches = ray.data.from_items(videos, override_num_blocks=blocks).map_batches(
            VideoSampler,
            fn_constructor_kwargs={
                **options, "on_error": lambda rows: ray.get(errors.record.remote(rows))},
            batch_size=1,
            batch_format="pyarrow",
            compute=growing_pool(min(decoders, blocks), concurrency),
            num_cpus=1,
        ).iter_batches(batch_format="pyarrow", batch_size=None)
    stamp = schemas.VIDEOS.get_field_index("ingest_version")
    for batch in batches:
        if batch.num_rows:
            column = pa.array([version] * batch.num_rows, pa.int64())
            yield from batch.set_column(stamp, "ingest_version", column).cast(
                schemas.VIDEOS).to_batches()
    if errors is not None:
        error_rows.extend(ray.get(errors.all.remote()))


def extract_keywords(rows: list[dict], options: KeywordOptions, batch_size: int,
                     concurrency: int | None) -> pa.Table:
    """``captions/`` rows for captions that need keywords, from a growing pool of KeyBERT
    actors (``concurrency``: at most that many)."""
    import ray

    if not rows:
        return schemas.CAPTIONS.empty_table()
    batches = ray.data.from_items(rows).map_batches(
        CaptionKeywords,
        fn_constructor_kwargs={"options": options},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=growing_pool(1, concurrency),
        num_cpus=1,
    ).iter_batches(batch_format="pyarrow", batch_size=None)
    return pa.concat_tables([schemas.CAPTIONS.empty_table(), *batches])

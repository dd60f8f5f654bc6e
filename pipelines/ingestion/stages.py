"""The per-row work of the ingest job, as Ray Data callable classes that need no Ray.

Each class is built once per actor (so models and decoder processes are set up
once) and maps a pyarrow batch to a pyarrow table of the output schema. Errors
go to an ``on_error`` callable instead of the output, so the job can send them
to a collector actor while a test collects them in a list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa

from pipelines.core import storage
from pipelines.core.failpoints import failpoint
from pipelines.core.keywords import KeywordExtractor, KeywordOptions
from pipelines.ingestion import schemas
from pipelines.ingestion.isolated import IsolatedRunner
from pipelines.ingestion.video_decode import SamplingOptions, decode_video, window_rows

ErrorSink = Callable[[list[dict]], None]
#: most ``videos/`` rows (windows) per table the decode stage yields, so that no Ray Data
#: block grows with a video's length (a window of 12 frames at 224 px is about 0.2 MB)
WINDOWS_PER_BLOCK = 64


class VideoReadError(OSError):
    """The video's bytes could not be read: missing, a folder, empty, unreachable."""


def error_row(video_id: str, uri: str, stage: str, exc: BaseException) -> dict:
    """One ``errors/`` row: what failed, where, and why."""
    return {
        "video_id": video_id,
        "uri": uri,
        "stage": stage,
        "error_type": type(exc).__name__,
        "message": str(exc) or repr(exc),
    }


def sample_video(
    video_id: str, uri: str, options: SamplingOptions, decode: Callable[..., dict]
) -> list[dict]:
    """The ``videos/`` rows of one video, one per window; raises with ``.stage`` set on
    failure.

    Reading (stat, download) happens here; ``decode(path, options)`` runs the
    native decoder, in a child process when the job calls it.
    """
    stage = "read"
    try:
        fs, path = storage.filesystem(uri)
        if not fs.exists(path):
            raise VideoReadError(f"no such file: {uri}")
        if fs.isdir(path):
            raise VideoReadError(f"is a folder, not a video file: {uri}")
        fingerprint = storage.fingerprint(fs, path)
        if fingerprint.size_bytes == 0:
            raise VideoReadError(f"empty file (0 bytes): {uri}")
        with storage.local_copy(uri) as local:
            stage = "decode"
            sampled = decode(local, options)
    except Exception as exc:
        exc.stage = stage  # type: ignore[attr-defined]
        raise
    source = {"video_id": video_id, "uri": uri, "size_bytes": fingerprint.size_bytes,
              "mtime": fingerprint.mtime, "etag": fingerprint.etag}
    return [{**source, **row} for row in window_rows(sampled)]


class VideoSampler:
    """Ray Data UDF: ``video_id``/``uri`` batch -> ``videos/`` rows (one per window), as
    tables of at most ``WINDOWS_PER_BLOCK`` rows; failures to ``on_error``."""

    def __init__(
        self,
        options: SamplingOptions,
        on_error: ErrorSink,
        timeout_s: float | None = None,
        decode: Callable[[str, SamplingOptions], dict] = decode_video,
    ) -> None:
        self.options = options
        self.on_error = on_error
        self.decode = IsolatedRunner(decode, timeout_s)

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        failpoint("decode.video")
        rows, errors = [], []
        for video_id, uri in zip(
            batch.column("video_id").to_pylist(), batch.column("uri").to_pylist(), strict=True
        ):
            try:
                rows.extend(sample_video(video_id, uri, self.options, self.decode))
            except Exception as exc:  # noqa: BLE001 - every failure becomes an errors/ row
                errors.append(error_row(video_id, uri, getattr(exc, "stage", "decode"), exc))
        if errors:
            self.on_error(errors)
        if not rows:
            yield schemas.VIDEOS.empty_table()
        for start in range(0, len(rows), WINDOWS_PER_BLOCK):
            yield pa.Table.from_pylist(rows[start:start + WINDOWS_PER_BLOCK],
                                       schema=schemas.VIDEOS)


class CaptionKeywords:
    """Ray Data UDF: caption batch -> ``captions/`` rows with lemmatised keywords."""

    def __init__(self, options: KeywordOptions) -> None:
        self.extract = KeywordExtractor(options)

    def __call__(self, batch: pa.Table) -> pa.Table:
        keywords = self.extract(batch.column("caption").to_pylist())
        return pa.table(
            {
                "video_id": batch.column("video_id"),
                "caption": batch.column("caption"),
                "keywords": pa.array(keywords, type=pa.list_(pa.string())),
                "split": batch.column("split").cast(pa.string()),
                **{name: (batch.column(name).cast(pa.float64())
                          if name in batch.column_names else pa.nulls(batch.num_rows, pa.float64()))
                   for name in ("start_s", "end_s")},
            },
            schema=schemas.CAPTIONS,
        )

"""Read and validate the ingest manifest before any work starts.

A manifest has one row per caption (``video_id``, ``uri``, ``caption``, optional
``split``, and an optional time span ``start_s``, ``end_s`` in seconds for a
caption that tells of part of its video, as ActivityNet Captions and
QVHighlights give); several captions may share a video. It is checked whole up front so
that a malformed file fails in seconds, naming the problem and the row, rather
than hours into a job.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from pipelines.core import storage

REQUIRED_COLUMNS = ("video_id", "uri", "caption")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}


class ManifestError(ValueError):
    """A manifest that cannot be ingested; the message names the file, problem and row."""


@dataclass
class Manifest:
    """Distinct videos and their captions, in manifest order."""

    videos: list[dict] = field(default_factory=list)  # {"video_id", "uri"}
    # {"video_id", "caption", "split", "start_s", "end_s", "row"}: the span None without one
    captions: list[dict] = field(default_factory=list)
    # by uri, when the listing already gave them (a folder); else looked up per file
    fingerprints: dict[str, storage.Fingerprint | None] | None = None


def _read_frame(path: str) -> pd.DataFrame:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ManifestError(
            f"manifest {path}: unknown extension {ext!r}; use one of {', '.join(sorted(FORMATS))}"
        )
    fs, fs_path = storage.filesystem(path)
    if not fs.exists(fs_path):
        raise ManifestError(f"manifest {path}: no such file")
    data = fs.cat_file(fs_path)
    if not data.strip():
        raise ManifestError(f"manifest {path}: the file is empty")
    kind = FORMATS[ext]
    if kind != "parquet":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"manifest {path}: not UTF-8 text (byte {exc.start}); save "
                                "it as UTF-8") from exc
    try:
        if kind == "csv":
            # Every column as text: ids like "007" must not become integers.
            return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        if kind == "jsonl":
            return pajson.read_json(io.BytesIO(data)).to_pandas()
        return pq.read_table(io.BytesIO(data)).to_pandas()
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise ManifestError(f"manifest {path}: cannot parse as {kind}: {exc}") from exc


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return str(value).strip()


def _span(row, has_span: bool, source: str, row_number: int) -> tuple[float | None, ...]:
    """A caption's ``(start_s, end_s)``: both None when the row gives neither."""
    if not has_span:
        return None, None
    texts = (_text(row.start_s), _text(row.end_s))
    if not any(texts):
        return None, None
    try:
        start, end = (float(t) for t in texts)
    except ValueError:
        raise ManifestError(f"manifest {source}: row {row_number} has start_s {texts[0]!r} "
                            f"and end_s {texts[1]!r}: give both, in seconds") from None
    if not 0 <= start < end:
        raise ManifestError(f"manifest {source}: row {row_number}'s span {start:g}-{end:g} s "
                            "is not a span of a video (0 <= start_s < end_s)")
    return start, end


def validate(df: pd.DataFrame, source: str) -> Manifest:
    """Check a manifest frame and split it into videos and captions.

    Rows are numbered from 1 in messages, the first data row being row 1.
    """
    if df.empty:
        raise ManifestError(f"manifest {source}: no rows")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            f"manifest {source}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, df.columns))}"
        )
    has_split = "split" in df.columns
    has_span = {"start_s", "end_s"} <= set(df.columns)
    if not has_span and {"start_s", "end_s"} & set(df.columns):
        raise ManifestError(f"manifest {source}: a caption span needs both start_s and end_s")
    manifest = Manifest()
    uri_of: dict[str, tuple[str, int]] = {}
    for row_number, row in enumerate(df.itertuples(index=False), start=1):
        video_id, caption = _text(row.video_id), _text(row.caption)
        uri = storage.absolute(_text(row.uri)) if _text(row.uri) else ""
        for name, value in (("video_id", video_id), ("uri", uri), ("caption", caption)):
            if not value:
                raise ManifestError(f"manifest {source}: row {row_number} has an empty {name}")
        if video_id in uri_of:
            first_uri, first_row = uri_of[video_id]
            if first_uri != uri:
                raise ManifestError(
                    f"manifest {source}: video_id {video_id!r} has two uris: {first_uri!r} "
                    f"(row {first_row}) and {uri!r} (row {row_number})"
                )
        else:
            uri_of[video_id] = (uri, row_number)
            manifest.videos.append({"video_id": video_id, "uri": uri})
        split = _text(row.split) if has_split else ""
        start, end = _span(row, has_span, source, row_number)
        manifest.captions.append({"video_id": video_id, "caption": caption,
                                  "split": split or None, "start_s": start, "end_s": end,
                                  "row": row_number})
    return manifest


def read_manifest(path: str) -> Manifest:
    """Read a CSV, JSON Lines or Parquet manifest (by extension) and validate it."""
    return validate(_read_frame(path), path)


def manifest_from_folder(root: str) -> Manifest:
    """An uncaptioned manifest of every video file under a folder or S3 prefix, with the
    fingerprints the listing gave (empty when the folder holds no videos)."""
    try:
        listed = storage.list_videos(root)
    except ValueError as exc:
        raise ManifestError(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - wrong credentials, no such bucket, no network
        raise ManifestError(
            f"--videos {root}: cannot list it ({type(exc).__name__}: {exc}); check the path "
            "and, for s3://, the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
            "AWS_ENDPOINT_URL)") from exc
    return Manifest(videos=[{"video_id": vid, "uri": uri} for vid, uri, _ in listed],
                    fingerprints={uri: fp for _, uri, fp in listed})

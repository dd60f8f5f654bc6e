"""The ingest output: three Delta Lake tables and a log of committed runs.

    DATA/videos/      Delta table: one row per decoded video (``schemas.VIDEOS``)
    DATA/captions/    Delta table: one row per caption of a decoded video
    DATA/errors/      Delta table: the videos that failed in the last run
    DATA/_ingest_log/00000000000000000001.json   one file per committed run

Delta gives each table atomic commits, versions and time travel, but no
transaction across tables. A run therefore commits each table at most once
and then writes the next log file, which names the Delta version of every
table: that file is the run's commit point. The project's readers (train,
evaluate, embed) open the versions that the newest log file names, so they see
one whole run, never half of one. A run killed before its log file leaves
table versions that no log file names; the next run builds on them (the work
is kept) and commits. DuckDB, Polars, Spark or plain ``deltalake`` read each
table's latest version with no project code.

Every ``videos/`` row carries ``ingest_version``, the run that wrote it, so
"what changed since version V" is a filter on one column (:func:`changes_since`).
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from pipelines.core import storage
from pipelines.core.sql import sql_in
from pipelines.ingestion.splits import with_splits

FORMAT_VERSION = 2
PARTS = ("videos", "captions", "errors")
LOG_FOLDER = "_ingest_log"
# the columns of videos/ that tell whether a source video changed, and of errors/ that
# tell whether two runs failed the same way
FINGERPRINT_COLUMNS = ["video_id", "uri", "size_bytes", "mtime", "etag"]
ERROR_KEY_COLUMNS = ["video_id", "uri", "stage", "error_type"]
#: rows (windows, each with its JPEG frames) per Parquet row group of videos/: a reader
#: of one video's frames (a search result's thumbnail, pipelines.index.media) reads the
#: row groups that hold it whole, a few MB at this size; delta-rs's default, a million
#: rows, made a row group of a whole file (about 100 MB of frames)
VIDEO_ROWS_PER_GROUP = 32


def error_keys(rows: list[dict]) -> set[tuple]:
    """What makes two runs' failures the same (messages may name temporary files)."""
    return {tuple(row[c] for c in ERROR_KEY_COLUMNS) for row in rows}


class IngestFormatError(ValueError):
    """An output that this version of the ingest job cannot read or extend."""


def delta_storage_options(uri: str) -> dict[str, str]:
    """deltalake's options for ``uri``: the S3 settings s3fs uses, and, with no DynamoDB
    lock, leave to commit by rename, which is safe while one job writes an output."""
    if not uri.startswith("s3://"):
        return {}
    return {**storage.object_store_options(uri), "aws_s3_allow_unsafe_rename": "true"}


@dataclass(frozen=True)
class IngestVersion:
    """One committed run: the Delta version of each table and what the run did."""

    version: int
    tables: dict[str, int]
    settings: dict = field(default_factory=dict)
    changes: dict = field(default_factory=dict)
    committed_at: str = ""

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT_VERSION, "version": self.version,
                           "tables": self.tables, "settings": self.settings,
                           "changes": self.changes, "committed_at": self.committed_at},
                          indent=1).encode()


class IngestStore:
    """Read and commit the runs of one ingest output (local folder or ``s3://`` prefix)."""

    def __init__(self, output: str) -> None:
        self.output = output.rstrip("/")
        self.fs, self.path = storage.filesystem(self.output)
        self.log_path = storage.join(self.path, LOG_FOLDER)

    def table_uri(self, part: str) -> str:
        return storage.join(self.output, part)

    def _log_files(self) -> list[str]:
        if not self.fs.exists(self.log_path):
            return []
        return sorted(p for p in self.fs.ls(self.log_path, detail=False) if p.endswith(".json"))

    def latest(self) -> IngestVersion | None:
        """The newest committed run, or None for an output with none yet."""
        files = self._log_files()
        if not files:
            # format 1: plain Parquet folders and _SUCCESS, no run log
            if self.fs.exists(storage.join(self.path, "_SUCCESS")):
                raise IngestFormatError(
                    f"{self.output} holds an ingest output of format 1 (Parquet folders and "
                    "_SUCCESS, written before incremental refresh), which cannot be updated "
                    "or read by this version: ingest into a new --data, or pass --overwrite "
                    "to rebuild it in place")
            return None
        return self._read(files[-1])

    def record(self, version: int) -> IngestVersion:
        """The committed run ``version`` (time travel: its tables' versions)."""
        path = storage.join(self.log_path, f"{version:020d}.json")
        if not self.fs.exists(path):
            raise FileNotFoundError(f"{self.output}: no committed ingest version {version}")
        return self._read(path)

    def _read(self, path: str) -> IngestVersion:
        record = json.loads(self.fs.cat_file(path))
        if record.get("format") != FORMAT_VERSION:
            raise IngestFormatError(
                f"{self.output} was written by ingest format {record.get('format')}, and this "
                f"version reads format {FORMAT_VERSION}: use the matching version of the "
                "project, or ingest into a new --data")
        return IngestVersion(record["version"], record["tables"], record.get("settings", {}),
                             record.get("changes", {}), record.get("committed_at", ""))

    def delta(self, part: str, version: int | None = None):
        """The Delta table of one part, at ``version`` (default: its latest, committed or not);
        None when the table does not exist yet."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        uri = self.table_uri(part)
        # (an fsspec check: deltalake's is_deltatable hangs on a missing S3 prefix)
        if not self.fs.exists(storage.join(self.path, part, "_delta_log")):
            return None
        try:
            return DeltaTable(uri, version=version, storage_options=delta_storage_options(uri))
        except TableNotFoundError:  # a first commit killed before it wrote its log entry
            return None

    def write_part(self, part: str, data: pa.RecordBatchReader | pa.Table, whole: bool,
                   replace: set[str]) -> None:
        """One Delta commit to a part: all of it (``whole``: a rebuild, or a part not
        written yet), or the rows of the ``replace`` videos swapped for ``data`` (Delta's
        replace-where: delete and add in one commit). Readers see none of it until
        :meth:`commit` names the new version."""
        from deltalake import WriterProperties, write_deltalake

        uri = self.table_uri(part)
        options = {"storage_options": delta_storage_options(uri)}
        if part == "videos":
            options["writer_properties"] = WriterProperties(
                max_row_group_size=VIDEO_ROWS_PER_GROUP)
        if whole:  # a rebuild may change the columns (an output written before windows)
            write_deltalake(uri, data, mode="overwrite", schema_mode="overwrite", **options)
        else:
            write_deltalake(uri, data, mode="overwrite", predicate=sql_in("video_id", replace),
                            **options)

    def commit(self, record: IngestVersion) -> None:
        """Write the run's log file: the moment readers switch to the new tables.

        The write creates the file only if it does not exist, so of two runs that
        commit the same version, one wins and the other is refused, even when
        both write at once. Locally a hard link of a finished file; on S3 a single
        conditional PUT (``If-None-Match: *``, which AWS S3 and MinIO honour).
        Either way a reader finds the whole file or none.
        """
        record = IngestVersion(record.version, record.tables, record.settings, record.changes,
                               datetime.datetime.now(datetime.timezone.utc).isoformat())
        target = storage.join(self.log_path, f"{record.version:020d}.json")
        self.fs.makedirs(self.log_path, exist_ok=True)
        try:
            if "file" in self.fs.protocol:
                temporary = storage.join(self.log_path, f".{record.version:020d}.{os.getpid()}.tmp")
                self.fs.pipe_file(temporary, record.to_json())
                try:
                    os.link(temporary, target)
                finally:
                    os.remove(temporary)
            else:
                self.fs.pipe_file(target, record.to_json(), mode="create")
        except FileExistsError:
            raise RuntimeError(f"{self.output}: version {record.version} was committed by "
                               "another run meanwhile; run one ingest per output at a time"
                               ) from None

    def remove_legacy(self) -> None:
        """Delete a format-1 output's parts (``--overwrite`` of an old output)."""
        for name in (*PARTS, "_SUCCESS"):
            target = storage.join(self.path, name)
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)


@dataclass(frozen=True)
class IngestSnapshot:
    """What one committed run holds: the tables at the versions its log file names."""

    output: str
    record: IngestVersion

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def settings(self) -> dict:
        return self.record.settings

    def delta(self, part: str):
        return IngestStore(self.output).delta(part, self.record.tables[part])

    def dataset(self, part: str) -> pads.Dataset:
        """One part as a pyarrow dataset (lazy; filters and column selection push down)."""
        return self.delta(part).to_pyarrow_dataset()

    def files(self, part: str) -> list[str]:
        """The part's Parquet files, as paths for :func:`storage.arrow_filesystem` (Ray Data)."""
        return [uri.split("://", 1)[-1] for uri in self.delta(part).file_uris()]


def open_ingest(output: str, version: int | None = None) -> IngestSnapshot:
    """A committed run of an ingest output (default: the newest); raises when there is none."""
    store = IngestStore(output)
    record = store.latest() if version is None else store.record(version)
    if record is None:
        raise FileNotFoundError(f"{output}: no committed ingest run (run pipelines/ingest.py)")
    return IngestSnapshot(output, record)


def as_snapshot(data: str | IngestSnapshot) -> IngestSnapshot:
    """``data`` itself, or the newest committed run of the output it names.

    A job that reads an output more than once (captions, then frames) opens one
    snapshot and passes it on, so that a refresh committing meanwhile cannot
    mix two runs in what the job reads.
    """
    return data if isinstance(data, IngestSnapshot) else open_ingest(data)


def open_part(data: str | IngestSnapshot, part: str) -> pads.Dataset:
    """One part (``videos``, ``captions``) of a committed ingest run (see ``as_snapshot``)."""
    return as_snapshot(data).dataset(part)


def read_captions(data: str | IngestSnapshot, split: str) -> pa.Table:
    """Captions of one split (``video_id``, ``caption``, ``keywords``, and the span
    ``start_s``, ``end_s``, null for a caption of the whole video and in an output
    written before spans); a caption the manifest gives no split is in the split a
    hash of its video's id picks (``splits.with_splits``)."""
    snapshot = as_snapshot(data)
    in_split = pc.field("split") == split
    part = open_part(snapshot, "captions")
    spans = [c for c in ("start_s", "end_s") if c in part.schema.names]
    captions = with_splits(part.to_table(
        columns=["video_id", "caption", "keywords", "split", *spans],
        filter=in_split | pc.field("split").is_null()), snapshot.output)
    table = captions.filter(in_split).drop_columns(["split"])
    for name in ("start_s", "end_s"):
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.float64()))
    if table.num_rows == 0:
        raise ValueError(f"{snapshot.output}: no captions in split {split!r}")
    return table


def video_splits(snapshot: IngestSnapshot) -> dict[str, str]:
    """The split of each captioned video (its first caption's; by hash without one)."""
    captions = with_splits(snapshot.dataset("captions").to_table(columns=["video_id", "split"]),
                           snapshot.output)
    splits: dict[str, str] = {}
    for video_id, split in zip(captions.column("video_id").to_pylist(),
                               captions.column("split").to_pylist(), strict=True):
        splits.setdefault(video_id, split)
    return splits


def changes_since(snapshot: IngestSnapshot, version: int,
                  known_ids: set[str] | None = None) -> tuple[set[str], set[str]]:
    """``(written, removed)``: the video ids (re)decoded by runs after ``version``, and
    the ids gone since then, as of ``snapshot``.

    ``known_ids`` are the ids the asking reader holds (e.g. the rows of its
    table): then ``written`` also has every id the reader lacks, and ``removed``
    is what it holds that the snapshot does not. Without them, ``removed`` is
    read from the committed run ``version`` itself (Delta time travel).
    """
    table = snapshot.dataset("videos").to_table(columns=["video_id", "ingest_version"])
    ids = set(table.column("video_id").to_pylist())
    newer = pc.greater(table.column("ingest_version"), pa.scalar(version, pa.int64()))
    written = set(table.filter(newer).column("video_id").to_pylist())
    if known_ids is None:
        then = open_ingest(snapshot.output, version).dataset("videos")
        known_ids = set(then.to_table(columns=["video_id"]).column(0).to_pylist())
    return written | (ids - known_ids), known_ids - ids

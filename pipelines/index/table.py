"""The LanceDB video table: one row per window of a video, its search vector and its rerank
features.

A video no longer than the ingest's window is one row, as it is one ``videos/`` row; a
longer one is a row per window, keyed by ``video_id`` and ``window_start_s``.
Columns (see :func:`table_schema`): the video's ingest metadata and its window's span,
``split``,
``vector`` (the query-independent first-stage embedding, float32, unit
length), ``rerank_features`` (the model's per-frame features that the full
score needs, its frame and local features each ``[max_frames, dim]``, packed
in one row, float16 or int8 with per-frame scales; tables written before hold
them as ``frame_features`` and ``local_features``: ``pipelines.index.rerank_features``),
``feature_frames`` (how many of those frames are real) and ``model_id`` (the
checkpoint that wrote the row). The table opens with plain ``lancedb``; this
module turns rows back into ``VideoFeatures`` for reranking, records which
model and ingest run the rows came from (``TableState``), and decides what
may be added to a table (another model or layout means a rebuild; another
ingest output, split or keyword setup is refused).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipelines.core.failpoints import failpoint
from pipelines.core.sql import sql_in
from pipelines.index import rerank_features
from pipelines.index.rerank_features import DEFAULT_LAYOUT, FeatureLayout
from pipelines.ingestion.output import IngestSnapshot, changes_since
from vtr_models import ModelConfig, VideoFeatures

METADATA_COLUMNS = ("video_id", "uri", "duration_s", "native_fps", "width", "height",
                    "num_frames", "timestamps_s", "size_bytes", "mtime", "etag",
                    "window_start_s", "window_end_s")
#: what identifies a row: a video, and which of its windows
ROW_KEY = ["video_id", "window_start_s"]
KEYWORD_OPTIONS_KEY = "vtr.keyword_options"  # on the vector field: the ingest's KeyBERT setup
STATE_PREFIX = "vtr."  # of the transaction properties that record a TableState
# vector index types the embed job builds: product-quantised partitions, or an HNSW graph
# over 8-bit scalar-quantised or full (flat) vectors
INDEX_TYPES = ("IVF_PQ", "HNSW_SQ", "HNSW_FLAT")
#: a table's first vector index: HNSW over the full vectors. Measured (docs/search.md,
#: benchmarks/query_latency.py), it found 0.998 of the exhaustive top 100 at 100,000 rows
#: and 0.978 of the top 10 at a million, as fast as HNSW_SQ (0.976 and 0.952) and with no
#: refinement, which IVF_PQ needs (10 x the candidates re-ranked exactly); its price is a
#: build about twice HNSW_SQ's and 2.3 GB more index per million rows.
DEFAULT_INDEX_TYPE = "HNSW_FLAT"
# how Lance's list_indices() names each of them (pylance 14)
LISTED_INDEX_TYPES = {"IVF_PQ": "IVF_PQ", "IVF_HNSW_SQ": "HNSW_SQ",
                      "IVF_HNSW_FLAT": "HNSW_FLAT"}
# Lance file format of the tables the embed job writes. A search fetches its candidates'
# rerank features by row; at a million rows (float16, ViT-B-32 sizes) Lance 2.1 takes 100
# rows in 3.7 ms from memory, 2.2 (LanceDB's default) in 7.3 and 2.0 in 5.0
# (benchmarks/take_latency.py, docs/benchmarks.md). Tables keep theirs until an overwrite.
FILE_VERSION = "2.1"
TAGS_COLUMN = "tags"  # a model with semantic levels: each row's predicted tags (FTS-indexed)
log = logging.getLogger("embed")


def table_schema(videos: pa.Schema, dim: int, max_frames: int,
                 keyword_options: dict | None = None, layout: FeatureLayout = DEFAULT_LAYOUT,
                 local: bool = True, tags: bool = False) -> pa.Schema:
    """The table's Arrow schema for a model of feature size ``dim`` and ``max_frames``,
    with ``local`` features (a fine-grained part) or not, its rerank features stored in
    ``layout``, and a ``tags`` column when the model predicts tags (semantic levels);
    the ingest's keyword settings, when given, ride on the ``vector`` field's
    metadata (so they are written by the same commit that creates the table's rows)."""
    vector_metadata = ({KEYWORD_OPTIONS_KEY: json.dumps(keyword_options)}
                       if keyword_options else None)
    return pa.schema([
        *(videos.field(name) for name in METADATA_COLUMNS),
        pa.field("split", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), dim), metadata=vector_metadata),
        *layout.fields(max_frames, dim, local),
        pa.field("feature_frames", pa.int32()),
        pa.field("model_id", pa.string()),
        *([pa.field(TAGS_COLUMN, pa.list_(pa.string()))] if tags else []),
    ])


def feature_columns(video: VideoFeatures, vector: torch.Tensor, model_id: str,
                    layout: FeatureLayout = DEFAULT_LAYOUT,
                    tags: list[list[str]] | None = None) -> dict:
    """The ``vector``, rerank feature (in ``layout``), ``feature_frames`` and ``model_id``
    columns of encoded videos, and their predicted ``tags`` when the model has any."""
    columns = {
        "vector": rerank_features.fixed_list(vector.float(), pa.float32()),
        **layout.encode(video.frames, video.local),
        "feature_frames": pa.array(video.mask.sum(dim=1).cpu().numpy().astype(np.int32)),
        "model_id": pa.array([model_id] * len(video), pa.string()),
    }
    if tags is not None:
        columns[TAGS_COLUMN] = pa.array(tags, pa.list_(pa.string()))
    return columns


def video_features(rows: pa.Table, config: ModelConfig) -> VideoFeatures:
    """Rerank features of table rows, in row order, as the model's ``VideoFeatures``."""
    frames, local = rerank_features.decode_features(rows, config.max_frames,
                                                    config.fine_grained)
    counts = torch.from_numpy(rows.column("feature_frames").to_numpy().astype(np.int64))
    mask = torch.arange(config.max_frames).unsqueeze(0) < counts.unsqueeze(1)
    # the stored vector is pooled's unit-length float32 copy, which stage two need not fetch
    return VideoFeatures.of_frames(frames, local, mask)


def keyword_options_of(schema: pa.Schema) -> dict | None:
    """The ingest's keyword settings recorded on the table, if any."""
    metadata = schema.field("vector").metadata or {}
    raw = metadata.get(KEYWORD_OPTIONS_KEY.encode())
    return json.loads(raw) if raw else None


@dataclass(frozen=True)
class TableState:
    """What a table's rows are: the ingest output, committed run and split they come
    from, and the checkpoint that encoded them. Recorded as transaction properties of the
    commit that writes the rows, so the record and the rows change together; copied
    into the schema metadata afterwards (:func:`keep_state`), where the cleanup of old
    versions cannot take it."""

    ingest_output: str
    ingest_version: int
    model_id: str
    split: str | None = None  # the table holds only this split's videos

    def properties(self) -> dict[str, str]:
        return {f"{STATE_PREFIX}ingest_output": self.ingest_output,
                f"{STATE_PREFIX}ingest_version": str(self.ingest_version),
                f"{STATE_PREFIX}model_id": self.model_id,
                f"{STATE_PREFIX}split": self.split or ""}

    @classmethod
    def parse(cls, properties: dict[str, str]) -> TableState | None:
        if f"{STATE_PREFIX}ingest_version" not in properties:
            return None
        return cls(properties[f"{STATE_PREFIX}ingest_output"],
                   int(properties[f"{STATE_PREFIX}ingest_version"]),
                   properties[f"{STATE_PREFIX}model_id"],
                   properties.get(f"{STATE_PREFIX}split") or None)


def _schema_copy(dataset) -> TableState | None:
    metadata = dataset.schema.metadata or {}
    return TableState.parse({k.decode(): v.decode() for k, v in metadata.items()})


def table_state(dataset, lookback: int = 200) -> TableState | None:
    """The state the newest of the embed job's commits recorded (later commits, such as
    compaction and index updates, record none), else its copy in the schema metadata
    (the commit itself was cleaned up with old versions); None for a table without one."""
    for version in sorted((v["version"] for v in dataset.versions()), reverse=True)[:lookback]:
        try:
            transaction = dataset.read_transaction(version)
        except Exception:  # noqa: BLE001 - cleaned up, or an index rewrite pylance cannot read
            continue
        state = TableState.parse((transaction.transaction_properties or {})
                                 if transaction else {})
        if state is not None:
            return state
    return _schema_copy(dataset)


def keep_state(dataset, state: TableState) -> None:
    """Copy ``state`` into the schema metadata when the copy there differs (after each
    commit; a run killed before this is repaired by the next)."""
    if _schema_copy(dataset) != state:
        dataset.update_schema_metadata(state.properties())


def table_rows(batches: Iterable[pa.Table], schema: pa.Schema, splits: dict[str, str],
               failures: list[dict]) -> Iterator[pa.RecordBatch]:
    """Embedder outputs -> record batches of the table's schema; error rows go to ``failures``."""
    for batch in batches:
        failed = pc.is_valid(batch.column("error"))
        failures.extend(batch.filter(failed).select(["video_id", "uri", "error"]).to_pylist())
        good = batch.filter(pc.invert(failed))
        if good.num_rows == 0:
            continue
        split = pa.array([splits.get(v) for v in good.column("video_id").to_pylist()], pa.string())
        good = good.append_column("split", split)
        yield from good.select(schema.names).cast(schema).to_batches()
        failpoint("embed.rows")  # some rows with the Lance writer, none committed


def another_model(table, schema: pa.Schema, state: TableState | None,
                  wanted: TableState) -> bool:
    """Whether the checkpoint is not the one the table's rows came from (another model,
    or another layout: feature sizes, frame count)."""
    if not table.schema.remove_metadata().equals(schema.remove_metadata()):
        return True
    return state is not None and state.model_id != wanted.model_id


def check_update(table, schema: pa.Schema, state: TableState | None, wanted: TableState,
                 name: str) -> None:
    """Refuse an update that would mix two ingest outputs, splits or keyword setups in one
    table; each message says what to do."""
    rebuild = ("pass --overwrite to re-embed every video and swap the table in with one "
               "commit (queries keep the old rows until then)")
    theirs = table.schema
    if state is None:
        raise ValueError(f"table {name!r} records no ingest run (written before incremental "
                         f"updates, or its history was cleaned up); {rebuild}")
    if state.split != wanted.split:
        raise ValueError(f"table {name!r} holds the videos of split {state.split or 'all'}, "
                         f"not of {wanted.split or 'all'}; pass --split "
                         f"{state.split or '(none)'} as its first run did, or {rebuild}")
    if state.ingest_version > wanted.ingest_version:
        raise ValueError(f"table {name!r} holds ingest version {state.ingest_version}, newer "
                         f"than the output's newest ({wanted.ingest_version}): the ingest "
                         f"output was replaced; {rebuild}")
    if state.ingest_output != wanted.ingest_output:
        raise ValueError(f"table {name!r} was built from ingest output {state.ingest_output}, "
                         f"not {wanted.ingest_output}; {rebuild}, or choose another --table")
    if keyword_options_of(theirs) != keyword_options_of(schema):
        raise ValueError(f"table {name!r} records other keyword settings than the ingest "
                         f"output now has; {rebuild}")


def create_vector_index(table, index_type: str, replace: bool = False) -> None:
    """The ``vector`` column's index of ``index_type`` (one of ``INDEX_TYPES``), cosine,
    at LanceDB's default sizes for the table's rows."""
    from lancedb.index import HnswFlat, HnswSq, IvfPq

    configs = {"IVF_PQ": IvfPq, "HNSW_SQ": HnswSq, "HNSW_FLAT": HnswFlat}
    config = configs[index_type](distance_type="cosine")
    table.create_index("vector", config=config, replace=replace)


def vector_index_type(dataset) -> str | None:
    """The type of the ``vector`` index of a table's Lance ``dataset`` (one of
    ``INDEX_TYPES``, or Lance's own name for an index built otherwise); None without one."""
    listed = [i["type"] for i in dataset.list_indices() if i["fields"] == ["vector"]]
    return LISTED_INDEX_TYPES.get(listed[0], listed[0]) if listed else None


def ensure_indexes(table, min_rows: int, index_type: str | None = None) -> bool:
    """Scalar index on ``video_id`` (and a full-text index on ``tags``, when the table has
    them); a vector index of ``index_type`` once the table holds
    ``min_rows``, rebuilt when the table has another type (None: keep the table's type,
    ``DEFAULT_INDEX_TYPE`` for a first index). Returns: vector index?"""
    from lancedb.index import FTS, BTree

    indexed = {col for index in table.list_indices() for col in index.columns}
    if "video_id" not in indexed:
        table.create_index("video_id", config=BTree())
    if TAGS_COLUMN in table.schema.names and TAGS_COLUMN not in indexed:
        # tags are lemmas, and relationship tags are words a default index drops as stop
        # words ("to", "up", "then"): index every tag as it is
        table.create_index(TAGS_COLUMN, config=FTS(stem=False, remove_stop_words=False))
    current = vector_index_type(table.to_lance())
    if current is None and table.count_rows() >= min_rows:
        current = index_type or DEFAULT_INDEX_TYPE
        log.info("building a %s index on %d rows", current, table.count_rows())
        create_vector_index(table, current)
    elif current is not None and index_type is not None and current != index_type:
        log.info("replacing the table's %s index with a %s index", current, index_type)
        create_vector_index(table, index_type, replace=True)  # the rows stay as they are
    table.optimize()  # fold the run's new rows into the indexes and compact its fragments
    return current is not None


@dataclass
class TableChanges:
    """What an update does to the table's rows."""

    embed: set[str]  # new videos and videos that ingest decoded again
    remove: set[str]  # rows of videos the ingest run no longer has
    resplit: set[str]  # rows kept, whose split a caption edit changed
    unchanged: int


def plan_update(dataset, snapshot: IngestSnapshot, since: int, ids: list[str],
                splits: dict[str, str]) -> TableChanges:
    """Compare the table's rows with the ingest run: only what changed since ``since``."""
    current = dataset.to_table(columns=["video_id", "split"])
    known = dict(zip(current.column("video_id").to_pylist(),
                     current.column("split").to_pylist(), strict=True))
    written, removed = changes_since(snapshot, since, set(known))
    embed = written & set(ids)
    removed |= set(known) - set(ids)
    resplit = {v for v in set(ids) - embed if known.get(v) != splits.get(v)}
    unchanged = len(set(known) - removed - resplit - embed)
    return TableChanges(embed, removed, resplit, unchanged)


def resplit_rows(dataset, videos: set[str], splits: dict[str, str],
                  schema: pa.Schema) -> list[pa.RecordBatch]:
    """Stored rows of ``videos`` with their new split: a split change needs no encoding."""
    if not videos:
        return []
    rows = dataset.to_table(filter=sql_in("video_id", videos))
    split = pa.array([splits.get(v) for v in rows.column("video_id").to_pylist()], pa.string())
    return rows.set_column(rows.schema.get_field_index("split"), "split", split).select(
        schema.names).cast(schema).to_batches()

"""The LanceDB video table: one row per video, its search vector and its rerank features.

Columns (see :func:`table_schema`): the video's ingest metadata, ``split``,
``vector`` (the query-independent first-stage embedding, float32, unit
length), ``frame_features`` and ``local_features`` (the model's per-frame
features that the full score needs, float16, flattened ``[max_frames, dim]``),
``feature_frames`` (how many of those frames are real) and ``model_id`` (the
checkpoint that wrote the row). The table opens with plain ``lancedb``; this
module turns rows back into ``VideoFeatures`` for reranking.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from vtr_models import ModelConfig, VideoFeatures

METADATA_COLUMNS = ("video_id", "uri", "duration_s", "native_fps", "width", "height",
                    "num_frames", "timestamps_s", "size_bytes", "mtime", "etag")
KEYWORD_OPTIONS_KEY = "vtr.keyword_options"  # on the vector field: the ingest's KeyBERT setup
STATE_PREFIX = "vtr."  # of the transaction properties that record a TableState


def table_schema(videos: pa.Schema, dim: int, max_frames: int,
                 keyword_options: dict | None = None) -> pa.Schema:
    """The table's Arrow schema for a model of feature size ``dim`` and ``max_frames``;
    the ingest's keyword settings, when given, ride on the ``vector`` field's metadata
    (so they are written by the same commit that creates the table's rows)."""
    features = pa.list_(pa.float16(), max_frames * dim)
    vector_metadata = ({KEYWORD_OPTIONS_KEY: json.dumps(keyword_options)}
                       if keyword_options else None)
    return pa.schema([
        *(videos.field(name) for name in METADATA_COLUMNS),
        pa.field("split", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), dim), metadata=vector_metadata),
        pa.field("frame_features", features),
        pa.field("local_features", features),  # null when the model has no fine-grained part
        pa.field("feature_frames", pa.int32()),
        pa.field("model_id", pa.string()),
    ])


def _fixed_list(values: torch.Tensor, value_type: pa.DataType) -> pa.FixedSizeListArray:
    """``[N, ...]`` tensor -> N fixed-size lists of ``value_type`` (rows flattened)."""
    flat = values.detach().float().cpu().reshape(len(values), -1).numpy()
    flat = flat.astype(value_type.to_pandas_dtype())
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), value_type), flat.shape[1])


def feature_columns(video: VideoFeatures, vector: torch.Tensor, model_id: str) -> dict:
    """The ``vector``, feature, ``feature_frames`` and ``model_id`` columns of encoded videos."""
    count = len(video)
    local = (pa.nulls(count, pa.list_(pa.float16(), video.frames[0].numel()))
             if video.local is None else _fixed_list(video.local, pa.float16()))
    return {
        "vector": _fixed_list(vector, pa.float32()),
        "frame_features": _fixed_list(video.frames, pa.float16()),
        "local_features": local,
        "feature_frames": pa.array(video.mask.sum(dim=1).cpu().numpy().astype(np.int32)),
        "model_id": pa.array([model_id] * count, pa.string()),
    }


def _tensor(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...]) -> torch.Tensor:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False).copy()  # Arrow's is read-only
    # torch widens float16 with vector instructions, far faster than numpy's astype
    return torch.from_numpy(values).float().reshape(shape)


def video_features(rows: pa.Table, config: ModelConfig) -> VideoFeatures:
    """Rerank features of table rows, in row order, as the model's ``VideoFeatures``."""
    count = rows.num_rows
    frames = _tensor(rows.column("frame_features"), (count, config.max_frames, -1))
    local = (_tensor(rows.column("local_features"), frames.shape)
             if config.fine_grained else None)
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

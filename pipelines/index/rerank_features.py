"""How the video table stores the rerank features: one packed column, float16 or int8.

The rerank features (``frame_features`` and, for a model with a fine-grained
part, ``local_features``: ``[max_frames, dim]`` each per video) are most of
a table's bytes: 24 KB of a ViT-B-32 row's 26 at float16. A search fetches
them for each of its candidates, and Lance's take costs about a millisecond
per column whatever the bytes, so a table keeps them in one column,
``rerank_features``: each row the frame features, then the local ones. At
``int8`` each frame's feature vector is stored as int8 values times one
float32 scale (its largest magnitude / 127: an error of at most half a step,
0.4 % of the frame's largest component), and the row ends with those scales'
bytes (``4 * max_frames`` per part). At int8 the five columns a search
fetches then took 100 random rows of 300,000 in 4.7 ms, against 7.7 for the
eight of one column per feature (a side-by-side script, ``docs/benchmarks.md``,
"One feature column"; ``benchmarks/take_latency.py --feature-layout packed
columns`` measures the same).

Tables written before the packed column keep the earlier layout, one column
per feature (``frame_features``, ``local_features``, each with a ``*_scale``
column at int8; ``local_features`` null without a fine-grained part): a
scheduled update does not rebuild a table for its layout, as it does not for
its precision. A table's layout and precision are its schema; readers decode
either layout and precision from the schema alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import torch

PRECISIONS = ("float16", "int8")
PACKED_COLUMN = "rerank_features"  # the layout of new tables
FEATURE_COLUMNS = ("frame_features", "local_features")  # the earlier layout, one per feature
SCALE_SUFFIX = "_scale"
_INT8_MAX = 127
_SCALE_BYTES = 4  # a float32 scale, bit-cast into the int8 row


@dataclass(frozen=True)
class FeatureLayout:
    """How a table stores its rerank features: ``precision`` (one of ``PRECISIONS``), in
    one ``packed`` column (new tables) or one column per feature (tables written before)."""

    precision: str = "float16"
    packed: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown feature precision {self.precision!r}; choose one of "
                             f"{', '.join(PRECISIONS)}")

    @classmethod
    def of(cls, schema: pa.Schema) -> FeatureLayout:
        """The layout of a table's ``schema``."""
        packed = PACKED_COLUMN in schema.names
        stored = schema.field(PACKED_COLUMN if packed else FEATURE_COLUMNS[0]).type.value_type
        return cls("int8" if stored == pa.int8() else "float16", packed)

    def fields(self, max_frames: int, dim: int, local: bool = True) -> list[pa.Field]:
        """The schema fields of the rerank features of a model of feature size ``dim`` and
        ``max_frames``, with ``local`` features (a fine-grained part) or not."""
        if self.packed:
            parts = 2 if local else 1
            if self.precision == "float16":
                return [pa.field(PACKED_COLUMN, pa.list_(pa.float16(), parts * max_frames * dim))]
            width = parts * max_frames * (dim + _SCALE_BYTES)
            return [pa.field(PACKED_COLUMN, pa.list_(pa.int8(), width))]
        return feature_fields(self.precision, max_frames, dim)

    def encode(self, frames: torch.Tensor, local: torch.Tensor | None) -> dict[str, pa.Array]:
        """The table columns of ``[count, max_frames, dim]`` frame features and local
        features (None: the model has none)."""
        count, max_frames, dim = frames.shape
        if not self.packed:
            return {**encode("frame_features", frames, self.precision, count, max_frames, dim),
                    **encode("local_features", local, self.precision, count, max_frames, dim)}
        parts = [frames] if local is None else [frames, local]
        if self.precision == "float16":
            return {PACKED_COLUMN: fixed_list(torch.cat(parts, dim=1).float(), pa.float16())}
        quantized = [quantize(part) for part in parts]
        values = torch.cat([v.reshape(count, -1) for v, _ in quantized], dim=1)
        scales = torch.cat([s for _, s in quantized], dim=1).contiguous().view(torch.int8)
        return {PACKED_COLUMN: fixed_list(torch.cat([values, scales], dim=1), pa.int8())}


DEFAULT_LAYOUT = FeatureLayout()  # a new table's: float16, packed


def decode_features(rows: pa.Table, max_frames: int, local: bool
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The float32 ``[count, max_frames, dim]`` frame features of table rows, and their
    local features when ``local`` (the model has a fine-grained part; None otherwise),
    from either layout and precision (the rows' schema says which)."""
    count = rows.num_rows
    if PACKED_COLUMN not in rows.column_names:
        frames = decode(rows, "frame_features", (count, max_frames, -1))
        return frames, decode(rows, "local_features", frames.shape) if local else None
    parts = 2 if local else 1
    flat = _flat(rows.column(PACKED_COLUMN)).reshape(count, -1)
    size, scales = flat.shape[1], None
    if rows.schema.field(PACKED_COLUMN).type.value_type == pa.int8():
        size -= parts * max_frames * _SCALE_BYTES
        scales = flat[:, size:].contiguous().view(torch.float32).reshape(count, parts, -1, 1)
    # one contiguous tensor per part: the similarity's matrix products copy a strided
    # slice first (0.9 ms of the fine-grained score of 100 ViT-B-32 candidates).
    # torch widens float16 with vector instructions, far faster than numpy's astype, and
    # int8 times its float32 scale in one pass
    decoded = [part.reshape(count, max_frames, -1) for part in flat[:, :size].chunk(parts, 1)]
    decoded = [part.float() if scales is None else part * scales[:, i]
               for i, part in enumerate(decoded)]
    return decoded[0], decoded[1] if local else None


def feature_fields(precision: str, max_frames: int, dim: int) -> list[pa.Field]:
    """The earlier layout's schema fields of the rerank features at ``precision`` (one of
    ``PRECISIONS``); ``local_features`` (and its scale) are null for a model without a
    fine-grained part. ``FeatureLayout`` has checked ``precision``."""
    if precision == "float16":
        return [pa.field(name, pa.list_(pa.float16(), max_frames * dim))
                for name in FEATURE_COLUMNS]
    return [field for name in FEATURE_COLUMNS for field in (
        pa.field(name, pa.list_(pa.int8(), max_frames * dim)),
        pa.field(name + SCALE_SUFFIX, pa.list_(pa.float32(), max_frames)))]


def precision_of(schema: pa.Schema) -> str:
    """The precision a table's schema stores its rerank features at."""
    return FeatureLayout.of(schema).precision


def stored_columns(schema: pa.Schema) -> list[str]:
    """The columns a reader fetches to rebuild the rerank features of a table's rows."""
    return [name for name in schema.names
            if name == PACKED_COLUMN or name in FEATURE_COLUMNS
            or name.removesuffix(SCALE_SUFFIX) in FEATURE_COLUMNS]


def fixed_list(values: torch.Tensor, value_type: pa.DataType) -> pa.FixedSizeListArray:
    """``[N, ...]`` tensor -> N fixed-size lists of ``value_type`` (rows flattened)."""
    flat = values.detach().cpu().reshape(len(values), -1).numpy()
    flat = flat.astype(value_type.to_pandas_dtype(), copy=False)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), value_type), flat.shape[1])


def quantize(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., dim]`` floats -> int8 values and a float32 scale per ``dim``-vector
    (``values * scale`` restores them; an all-zero vector, a padded frame, scales 0)."""
    features = features.detach().float()
    scale = features.abs().amax(dim=-1) / _INT8_MAX
    values = torch.round(features / scale.clamp(min=torch.finfo(torch.float32).tiny)[..., None])
    return values.clamp(-_INT8_MAX, _INT8_MAX).to(torch.int8), scale


def encode(name: str, features: torch.Tensor | None, precision: str, count: int,
           frames: int, dim: int) -> dict[str, pa.Array]:
    """The table columns of one rerank feature ``[count, frames, dim]`` (None: nulls)."""
    fields = {f.name: f.type for f in feature_fields(precision, frames, dim)}
    names = [n for n in fields if n.removesuffix(SCALE_SUFFIX) == name]
    if features is None:
        return {n: pa.nulls(count, fields[n]) for n in names}
    if precision == "float16":
        return {name: fixed_list(features.float(), pa.float16())}
    values, scale = quantize(features)
    return {name: fixed_list(values, pa.int8()),
            name + SCALE_SUFFIX: fixed_list(scale, pa.float32())}


def _flat(column: pa.ChunkedArray | pa.Array) -> torch.Tensor:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return torch.from_numpy(column.flatten().to_numpy(zero_copy_only=False).copy())


def decode(rows: pa.Table, name: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """The float32 ``[count, frames, dim]`` rerank feature ``name`` of table rows, from
    either precision (the column's type says which)."""
    # torch widens float16 and int8 with vector instructions, far faster than numpy's astype
    values = _flat(rows.column(name)).float().reshape(shape)
    if rows.schema.field(name).type.value_type != pa.int8():
        return values
    return values * _flat(rows.column(name + SCALE_SUFFIX)).reshape(shape[:2]).unsqueeze(-1)

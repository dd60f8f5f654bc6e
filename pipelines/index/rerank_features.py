"""How the video table stores the rerank features: float16, or int8 with a scale per frame.

The rerank features (``frame_features``, ``local_features``: ``[max_frames,
dim]`` per video) are most of a table's bytes: 24 KB of a ViT-B-32 row's 26
at float16. ``int8`` halves them on disk and in object storage: each frame's
feature vector is stored as int8 values times one float32 scale (its largest
magnitude / 127), an error of at most half a step, 0.4 % of the frame's
largest component, in every component. It does not speed up a search:
LanceDB's take of the candidates' rows costs as much or more
(``docs/benchmarks.md``, a million rows).

A table's precision is its schema: ``int8`` tables have a ``*_scale`` column
beside each feature column. Readers decode either kind from the column type
alone, so tables written before int8 existed read as they always did.
"""

from __future__ import annotations

import pyarrow as pa
import torch

PRECISIONS = ("float16", "int8")
FEATURE_COLUMNS = ("frame_features", "local_features")
SCALE_SUFFIX = "_scale"
_INT8_MAX = 127


def feature_fields(precision: str, max_frames: int, dim: int) -> list[pa.Field]:
    """The schema fields of the rerank features at ``precision`` (one of ``PRECISIONS``);
    ``local_features`` (and its scale) are null for a model without a fine-grained part."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown feature precision {precision!r}; choose one of "
                         f"{', '.join(PRECISIONS)}")
    if precision == "float16":
        return [pa.field(name, pa.list_(pa.float16(), max_frames * dim))
                for name in FEATURE_COLUMNS]
    return [field for name in FEATURE_COLUMNS for field in (
        pa.field(name, pa.list_(pa.int8(), max_frames * dim)),
        pa.field(name + SCALE_SUFFIX, pa.list_(pa.float32(), max_frames)))]


def precision_of(schema: pa.Schema) -> str:
    """The precision a table's schema stores its rerank features at."""
    stored = schema.field(FEATURE_COLUMNS[0]).type.value_type
    return "int8" if stored == pa.int8() else "float16"


def stored_columns(schema: pa.Schema) -> list[str]:
    """The columns a reader fetches to rebuild the rerank features of a table's rows."""
    return [name for name in schema.names
            if name in FEATURE_COLUMNS or name.removesuffix(SCALE_SUFFIX) in FEATURE_COLUMNS]


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

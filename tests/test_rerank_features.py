"""Rerank features stored at float16 or int8 (per-frame scale), read back from either."""

from __future__ import annotations

import lancedb
import pyarrow as pa
import pytest
import torch

from pipelines.index import rerank_features
from pipelines.index.search import fetched_columns
from pipelines.index.table import table_schema
from pipelines.ingestion.schemas import VIDEOS

FRAMES, DIM = 4, 16


def features(count: int = 6) -> torch.Tensor:
    """Frames of very different magnitudes, and a padded (all-zero) last frame."""
    values = torch.randn(count, FRAMES, DIM, generator=torch.Generator().manual_seed(0))
    values = values * torch.logspace(-3, 2, FRAMES)[None, :, None]
    values[:, -1] = 0
    return values


def stored(values: torch.Tensor | None, precision: str) -> pa.Table:
    """``values`` as ``frame_features`` (and ``local_features``) columns written to and
    read back from a real Lance table."""
    count = 2 if values is None else len(values)
    columns = {name: column for name in rerank_features.FEATURE_COLUMNS
               for name, column in rerank_features.encode(name, values, precision, count,
                                                          FRAMES, DIM).items()}
    return pa.table(columns)


@pytest.mark.parametrize("precision", rerank_features.PRECISIONS)
def test_features_read_back_within_their_precision(tmp_path, precision):
    values = features()
    table = lancedb.connect(str(tmp_path)).create_table("t", stored(values, precision))
    rows = table.to_arrow()
    assert rerank_features.precision_of(rows.schema) == precision
    back = rerank_features.decode(rows, "frame_features", (len(values), FRAMES, DIM))
    if precision == "int8":
        # half a step of each frame's own scale: small frames keep their detail
        step = values.abs().amax(dim=-1, keepdim=True) / 127
        assert ((back - values).abs() <= step / 2 + 1e-7).all()
        assert rows.schema.field("frame_features").type == pa.list_(pa.int8(), FRAMES * DIM)
    else:
        assert torch.equal(back, values.half().float())
    assert torch.equal(back[:, -1], torch.zeros(len(values), DIM))  # padding stays zero


def test_int8_halves_the_feature_bytes_at_vit_b_32_sizes():
    values = torch.randn(10, 12, 512)
    sizes = {p: sum(c.nbytes for c in rerank_features.encode(
        "frame_features", values, p, 10, 12, 512).values()) for p in rerank_features.PRECISIONS}
    assert sizes["int8"] / sizes["float16"] == pytest.approx(0.5 + 4 / 1024)


@pytest.mark.parametrize("precision", rerank_features.PRECISIONS)
def test_a_model_without_local_features_stores_nulls(precision):
    columns = rerank_features.encode("local_features", None, precision, 3, FRAMES, DIM)
    assert set(columns) == {c for c in rerank_features.stored_columns(
        pa.schema(rerank_features.feature_fields(precision, FRAMES, DIM)))
        if c.startswith("local")}
    assert all(column.null_count == 3 for column in columns.values())


def test_the_schema_says_the_precision_and_what_a_search_fetches():
    half = table_schema(VIDEOS, DIM, FRAMES)
    eight = table_schema(VIDEOS, DIM, FRAMES, precision="int8")
    assert rerank_features.precision_of(half) == "float16"
    assert rerank_features.precision_of(eight) == "int8"
    assert set(fetched_columns(eight)) - set(fetched_columns(half)) == {
        "frame_features_scale", "local_features_scale"}
    assert set(fetched_columns(half)) <= set(half.names) | {"_distance"}
    assert set(fetched_columns(eight)) <= set(eight.names) | {"_distance"}
    with pytest.raises(ValueError, match="unknown feature precision 'int4'"):
        table_schema(VIDEOS, DIM, FRAMES, precision="int4")

"""Rerank features stored at float16 or int8 (per-frame scale), in one packed column or,
in tables written before it, one column per feature; read back from any of them."""

from __future__ import annotations

import lancedb
import pyarrow as pa
import pytest
import torch

from pipelines.index import rerank_features
from pipelines.index.rerank_features import FeatureLayout, decode_features
from pipelines.index.search import ANSWER_COLUMNS, GROUP_COLUMN, ROW_OFFSET, fetched_columns
from pipelines.index.table import table_schema
from pipelines.ingestion.schemas import VIDEOS

FRAMES, DIM = 4, 16
LAYOUTS = [FeatureLayout(p, packed) for p in rerank_features.PRECISIONS for packed in (True, False)]


def features(count: int = 6, seed: int = 0) -> torch.Tensor:
    """Frames of very different magnitudes, and a padded (all-zero) last frame."""
    values = torch.randn(count, FRAMES, DIM, generator=torch.Generator().manual_seed(seed))
    values = values * torch.logspace(-3, 2, FRAMES)[None, :, None]
    values[:, -1] = 0
    return values


def assert_within_precision(back: torch.Tensor, values: torch.Tensor, precision: str) -> None:
    if precision == "int8":
        # half a step of each frame's own scale: small frames keep their detail
        step = values.abs().amax(dim=-1, keepdim=True) / 127
        assert ((back - values).abs() <= step / 2 + 1e-7).all()
    else:
        assert torch.equal(back, values.half().float())
    assert torch.equal(back[:, -1], torch.zeros(len(values), DIM))  # padding stays zero


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_features_read_back_within_their_precision(tmp_path, layout):
    frames, local = features(), features(seed=1)
    written = pa.table(layout.encode(frames, local))
    rows = lancedb.connect(str(tmp_path)).create_table("t", written).to_arrow()
    assert FeatureLayout.of(rows.schema) == layout
    back_frames, back_local = decode_features(rows, FRAMES, local=True)
    assert_within_precision(back_frames, frames, layout.precision)
    assert_within_precision(back_local, local, layout.precision)


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_a_model_without_local_features_stores_none(layout):
    frames = features(3)
    columns = layout.encode(frames, None)
    back, local = decode_features(pa.table(columns), FRAMES, local=False)
    assert local is None
    assert_within_precision(back, frames, layout.precision)
    schema = pa.schema(layout.fields(FRAMES, DIM, local=False))
    assert set(columns) == set(schema.names)
    if layout.packed:  # frames only, no room for local features
        assert columns["rerank_features"].type == schema.field("rerank_features").type
        assert len(columns["rerank_features"][0]) == (FRAMES * DIM if layout.precision ==
                                                      "float16" else FRAMES * (DIM + 4))
    else:  # the earlier layout keeps its local columns, null
        assert all(columns[c].null_count == 3 for c in columns if c.startswith("local"))


def test_int8_halves_the_feature_bytes_at_vit_b_32_sizes():
    values = torch.randn(10, 12, 512)
    for packed in (True, False):
        sizes = {p: sum(c.nbytes for c in FeatureLayout(p, packed).encode(values, values)
                        .values()) for p in rerank_features.PRECISIONS}
        assert sizes["int8"] / sizes["float16"] == pytest.approx(0.5 + 4 / 1024)


def test_the_schema_says_the_layout_and_what_a_search_fetches():
    """New tables keep their features in one column, so a search takes one column for
    them; an int8 table written before takes four."""
    schemas = {layout: table_schema(VIDEOS, DIM, FRAMES, layout=layout) for layout in LAYOUTS}
    for layout, schema in schemas.items():
        assert FeatureLayout.of(schema) == layout
        assert rerank_features.precision_of(schema) == layout.precision
        assert set(fetched_columns(schema)) <= set(schema.names) | {ROW_OFFSET}
        # the answer columns are the top k's only, but for the video id that groups a
        # table's windows by video (search.GROUP_COLUMN)
        assert set(fetched_columns(schema)) & set(ANSWER_COLUMNS) == {GROUP_COLUMN}
    assert table_schema(VIDEOS, DIM, FRAMES) == schemas[FeatureLayout("float16", True)]
    fetched = {layout: set(fetched_columns(schema)) - {"feature_frames", ROW_OFFSET,
                                                       GROUP_COLUMN}
               for layout, schema in schemas.items()}
    assert fetched[FeatureLayout("int8", True)] == {"rerank_features"}
    assert fetched[FeatureLayout("int8", False)] == {
        "frame_features", "local_features", "frame_features_scale", "local_features_scale"}
    with pytest.raises(ValueError, match="unknown feature precision 'int4'"):
        table_schema(VIDEOS, DIM, FRAMES, layout=FeatureLayout("int4"))

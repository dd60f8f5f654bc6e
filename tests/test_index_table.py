"""The LanceDB table contract (``pipelines/index/table.py``): indexes, rebuild and refusal
rules, rows from the embedder. No Ray: LanceDB tables on a tmp folder, states by hand."""

from __future__ import annotations

from types import SimpleNamespace

import lance
import lancedb
import numpy as np
import pyarrow as pa
import pytest

from pipelines.index.search import index_refine_factor
from pipelines.index.table import (
    DEFAULT_INDEX_TYPE,
    INDEX_TYPES,
    TableState,
    another_model,
    check_update,
    create_vector_index,
    ensure_indexes,
    keep_state,
    table_rows,
    table_schema,
    table_state,
    vector_index_type,
)
from pipelines.ingestion.schemas import VIDEOS

ROWS, DIM = 300, 16
# list_indices() names of the index types ensure_indexes builds (lancedb 0.40)
LISTED = {"IVF_PQ": "IvfPq", "HNSW_SQ": "IvfHnswSq", "HNSW_FLAT": "IvfHnswFlat"}
KEYWORDS = {"model": "paraphrase-multilingual-MiniLM-L12-v2", "top_n": 5}


# ---- ensure_indexes ------------------------------------------------------------------------

def vector_table(folder, start: int = 0, rows: int = ROWS):
    rng = np.random.default_rng(start)
    vectors = rng.standard_normal((rows, DIM)).astype(np.float32)
    data = pa.table({
        "video_id": [f"v{i:04d}" for i in range(start, start + rows)],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
    })
    db = lancedb.connect(str(folder))
    if "videos" in db.list_tables().tables:
        table = db.open_table("videos")
        table.add(data)
        return table
    return db.create_table("videos", data)


def indices(table) -> dict[str, str]:
    """Indexed column -> index type, as ``list_indices`` names it."""
    return {column: index.index_type for index in table.list_indices()
            for column in index.columns}


@pytest.mark.parametrize("min_rows", [ROWS // 2, ROWS], ids=["above", "at"])
@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_a_table_of_min_rows_gets_a_cosine_vector_index_of_the_type_asked(
        tmp_path, index_type, min_rows):
    table = vector_table(tmp_path)
    assert ensure_indexes(table, min_rows=min_rows, index_type=index_type) is True
    assert indices(table) == {"vector": LISTED[index_type], "video_id": "BTree"}
    vector_index = next(i for i in table.list_indices() if i.columns == ["vector"])
    assert table.index_stats(vector_index.name).distance_type == "cosine"


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_a_table_below_min_rows_gets_only_the_video_id_index(tmp_path, index_type):
    """Below ``min_rows`` (exact search is fast there): the scalar index alone."""
    table = vector_table(tmp_path)
    assert ensure_indexes(table, min_rows=ROWS + 1, index_type=index_type) is False
    assert indices(table) == {"video_id": "BTree"}


def test_a_later_run_keeps_the_indexes_and_folds_its_new_rows_into_them(tmp_path):
    table = vector_table(tmp_path)
    assert ensure_indexes(table, min_rows=ROWS, index_type="HNSW_SQ")
    table = vector_table(tmp_path, start=ROWS, rows=20)  # an update's new rows
    names = sorted(index.name for index in table.list_indices())
    assert ensure_indexes(table, min_rows=ROWS) is True  # no type asked: the table's own
    assert sorted(index.name for index in table.list_indices()) == names
    assert indices(table)["vector"] == LISTED["HNSW_SQ"]
    for index in table.list_indices():
        assert table.index_stats(index.name).num_unindexed_rows == 0, index.name


def test_another_index_type_replaces_the_tables_vector_index(tmp_path):
    """``embed --index-type`` on an indexed table: the index is rebuilt as that type, over
    every row, and the rows stay as they were."""
    table = vector_table(tmp_path)
    assert ensure_indexes(table, min_rows=ROWS)  # a first index: DEFAULT_INDEX_TYPE
    assert indices(table)["vector"] == LISTED[DEFAULT_INDEX_TYPE] == LISTED["HNSW_FLAT"]
    before = table.to_arrow().sort_by("video_id")
    assert ensure_indexes(table, min_rows=ROWS, index_type="HNSW_SQ") is True
    assert indices(table) == {"vector": LISTED["HNSW_SQ"], "video_id": "BTree"}
    vector_index = next(i for i in table.list_indices() if i.columns == ["vector"])
    assert table.index_stats(vector_index.name).num_unindexed_rows == 0
    assert table.to_arrow().sort_by("video_id").equals(before)


def test_the_refine_factor_follows_the_vector_index(tmp_path):
    """Product quantisation needs its candidates re-ranked by exact distance; 8-bit scalar
    quantisation, full vectors and exact search do not. Each type is built as asked and
    recognised as that type."""
    table = vector_table(tmp_path)
    assert index_refine_factor(table.to_lance()) == 1  # no index: exact search
    for index_type, factor in [("IVF_PQ", 10), ("HNSW_SQ", 1), ("HNSW_FLAT", 1)]:
        create_vector_index(table, index_type, replace=True)
        assert indices(table)["vector"] == LISTED[index_type]
        assert vector_index_type(table.to_lance()) == index_type
        assert index_refine_factor(table.to_lance()) == factor, index_type


# ---- another_model and check_update --------------------------------------------------------

def schema(dim: int = DIM, max_frames: int = 4, keywords: dict | None = KEYWORDS) -> pa.Schema:
    return table_schema(VIDEOS, dim, max_frames, keywords)


def state(**changes) -> TableState:
    values = {"ingest_output": "/data/ingest", "ingest_version": 3, "model_id": "a" * 16,
              "split": "test"}
    return TableState(**{**values, **changes})


def fake_table(table_schema_: pa.Schema):
    return SimpleNamespace(schema=table_schema_)


@pytest.mark.parametrize("layout", [{"dim": 32}, {"max_frames": 8}], ids=["dim", "max_frames"])
def test_another_layout_is_another_model(layout):
    assert another_model(fake_table(schema()), schema(**layout), state(), state())
    assert another_model(fake_table(schema()), schema(**layout), None, state())


def test_another_checkpoint_is_another_model():
    assert another_model(fake_table(schema()), schema(), state(), state(model_id="b" * 16))


@pytest.mark.parametrize("wanted", [state(), state(ingest_version=4),
                                    state(split="val", ingest_output="/elsewhere")],
                         ids=["same", "newer_ingest_run", "other_split_and_output"])
def test_the_same_layout_and_checkpoint_is_the_same_model(wanted):
    """Other ingest runs, splits or keyword settings are check_update's to refuse, not
    reasons to rebuild; schema metadata (the state copy) is not part of the layout."""
    table = fake_table(schema().with_metadata(state().properties()))
    assert not another_model(table, schema(), state(), wanted)
    assert not another_model(table, schema(keywords=None), state(), wanted)
    assert not another_model(table, schema(), None, wanted)  # no state: nothing says another


def test_check_update_accepts_the_same_or_a_newer_run_of_the_same_output():
    for wanted in (state(), state(ingest_version=4), state(model_id="b" * 16)):
        check_update(fake_table(schema()), schema(), state(), wanted, "videos")
    check_update(fake_table(schema(keywords=None)), schema(keywords=None), state(split=None),
                 state(split=None), "videos")


REBUILD = "pass --overwrite to re-embed every video"


@pytest.mark.parametrize("theirs, wanted, table_keywords, says", [
    (None, state(), KEYWORDS, ["records no ingest run", REBUILD]),
    (state(split="train"), state(), KEYWORDS,
     ["holds the videos of split train, not of test", "pass --split train", REBUILD]),
    (state(split=None), state(), KEYWORDS, ["split all, not of test", "--split (none)", REBUILD]),
    (state(), state(split=None), KEYWORDS, ["split test, not of all", "--split test", REBUILD]),
    (state(ingest_version=5), state(), KEYWORDS,
     ["holds ingest version 5, newer than the output's newest (3)", "replaced", REBUILD]),
    (state(ingest_output="/old/ingest"), state(), KEYWORDS,
     ["built from ingest output /old/ingest, not /data/ingest", "choose another --table",
      REBUILD]),
    (state(), state(), {**KEYWORDS, "top_n": 3}, ["other keyword settings", REBUILD]),
    (state(), state(), None, ["other keyword settings", REBUILD]),
], ids=["no_state", "other_split", "table_of_all_splits", "wanted_all_splits",
        "newer_ingest_version", "other_ingest_output", "other_keywords", "keywords_added"])
def test_check_update_refuses_with_a_message_that_says_what_to_do(
        theirs, wanted, table_keywords, says):
    with pytest.raises(ValueError, match="table 'videos'") as refused:
        check_update(fake_table(schema(keywords=table_keywords)), schema(), theirs, wanted,
                     "videos")
    for part in says:
        assert part in str(refused.value)


def test_a_real_table_of_the_schema_is_the_same_model_and_accepts_an_update(tmp_path):
    """The rules on a table as embed writes it (Lance commit with the state as transaction
    properties, the state copied into the schema metadata), read back through LanceDB: the
    schema LanceDB returns must compare equal to the one embed builds."""
    written = state()
    dataset = lance.write_dataset(pa.RecordBatchReader.from_batches(schema(), []),
                                  str(tmp_path / "videos.lance"), schema=schema(),
                                  transaction_properties=written.properties())
    keep_state(dataset, written)
    table = lancedb.connect(str(tmp_path)).open_table("videos")
    recorded = table_state(table.to_lance())
    assert recorded == written
    assert not another_model(table, schema(), recorded, state(ingest_version=4))
    assert another_model(table, schema(max_frames=8), recorded, state(ingest_version=4))
    check_update(table, schema(), recorded, state(ingest_version=4), "videos")
    with pytest.raises(ValueError, match="other keyword settings"):
        check_update(table, schema(keywords={"top_n": 1}), recorded, state(), "videos")


# ---- table_rows ----------------------------------------------------------------------------

def embedder_output(ids: list[str], errors: list[str | None]) -> pa.Table:
    """Rows as the embedder yields them: the table's columns but ``split``, plus ``error``."""
    target = schema(dim=2, max_frames=1)
    count = len(ids)
    columns = {field.name: pa.nulls(count, field.type) for field in target
               if field.name != "split"}
    columns["video_id"] = pa.array(ids)
    columns["uri"] = pa.array([f"/videos/{v}.mp4" for v in ids])
    columns["vector"] = pa.array([[1.0, 0.0]] * count, pa.list_(pa.float64()))
    columns["feature_frames"] = pa.array([1] * count, pa.int64())
    columns["error"] = pa.array(errors, pa.string())
    return pa.table(columns)


def test_table_rows_sends_error_rows_to_failures_and_adds_the_split():
    target = schema(dim=2, max_frames=1)
    failures: list[dict] = []
    batches = [embedder_output(["a", "bad", "b"], [None, "not a jpeg", None]),
               embedder_output(["worse"], ["empty"]),  # only failures: no rows
               embedder_output(["c"], [None])]
    rows = pa.Table.from_batches(list(table_rows(batches, target, {"a": "test", "c": "train"},
                                                 failures)))
    assert rows.schema.equals(target, check_metadata=True)
    assert rows.column("video_id").to_pylist() == ["a", "b", "c"]
    assert rows.column("split").to_pylist() == ["test", None, "train"]
    assert rows.column("vector").to_pylist() == [[1.0, 0.0]] * 3
    assert failures == [{"video_id": "bad", "uri": "/videos/bad.mp4", "error": "not a jpeg"},
                        {"video_id": "worse", "uri": "/videos/worse.mp4", "error": "empty"}]

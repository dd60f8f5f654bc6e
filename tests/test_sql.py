"""SQL that requests bring: quoted values, and a ``where`` that cannot undo a filter."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipelines.core.sql import checked_where, sql_equals


@pytest.mark.parametrize("where", [
    "duration_s < 30", "split = 'test' AND (duration_s > 1 OR num_frames > 2)",
    "caption = 'a (left) turn'", "video_id = 'it''s'"])
def test_a_self_contained_where_passes(where):
    assert checked_where(where) == where


@pytest.mark.parametrize("where, reason", [
    ("true) OR (true", "unbalanced"),
    ("(split = 'test'", "unclosed"),
    ("split = 'test", "unclosed"),
    ("true -- the rest", "comments"),
    ("true /* x */", "comments"),
    ("true; DROP TABLE videos", "';' are not allowed"),
])
def test_a_where_that_could_escape_its_parentheses_is_refused(where, reason):
    with pytest.raises(ValueError, match=reason):
        checked_where(where)


def test_joined_with_and_a_checked_where_only_narrows(tmp_path):
    """What the service does with a request's filter and where, on a real Lance table."""
    import lance

    rows = pa.table({"split": ["test", "train", "test"], "n": [1, 2, 3]})
    dataset = lance.write_dataset(rows, str(tmp_path / "t.lance"))
    joined = f"({sql_equals('split', 'test')}) AND ({checked_where('n > 1 OR n < 1')})"
    assert dataset.to_table(filter=joined).column("n").to_pylist() == [3]

"""Splits for a manifest without a ``split`` column: by a hash of each video's id."""

from __future__ import annotations

import logging
from collections import Counter

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from pipelines.ingestion.output import (
    IngestStore,
    IngestVersion,
    open_ingest,
    read_captions,
    video_splits,
)
from pipelines.ingestion.schemas import CAPTIONS
from pipelines.ingestion.splits import HASH_SPLITS, hash_split


def test_hash_split_is_fixed_per_id_and_keeps_the_shares():
    ids = [f"video{i:05d}" for i in range(20_000)]
    splits = [hash_split(v) for v in ids]
    assert splits == [hash_split(v) for v in ids]  # the same on every call and machine
    assert hash_split("video00000") == splits[0]
    counts = Counter(splits)
    for split, share in HASH_SPLITS:
        assert counts[split] / len(ids) == pytest.approx(share, abs=0.01), split


def output_with_captions(folder, splits: list[str | None]) -> str:
    rows = [{"video_id": f"v{i}", "caption": f"caption {i}", "keywords": ["k"], "split": s}
            for i, s in enumerate(splits)]
    write_deltalake(str(folder / "captions"), pa.Table.from_pylist(rows, schema=CAPTIONS))
    store = IngestStore(str(folder))
    store.commit(IngestVersion(1, {"captions": store.delta("captions").version()}, {}))
    return str(folder)


def test_captions_without_splits_are_split_by_hash_with_one_note(tmp_path, caplog):
    output = output_with_captions(tmp_path, [None] * 200)
    with caplog.at_level(logging.WARNING):
        parts = {split: read_captions(output, split) for split, _ in HASH_SPLITS}
        snapshot = open_ingest(output)
        by_video = video_splits(snapshot)
    assert sum(t.num_rows for t in parts.values()) == 200 and all(
        t.num_rows for t in parts.values())
    for split, table in parts.items():
        assert {hash_split(v) for v in table.column("video_id").to_pylist()} == {split}
        assert table.column_names == ["video_id", "caption", "keywords", "start_s", "end_s"]
    assert by_video == {f"v{i}": hash_split(f"v{i}") for i in range(200)}
    notes = [r.getMessage() for r in caplog.records if "hash of its video_id" in r.getMessage()]
    assert len(notes) == 1 and "80% train, 10% val, 10% test" in notes[0]
    assert "200 caption(s) have no split" in notes[0]


def test_a_manifests_own_splits_are_kept_and_only_missing_ones_hashed(tmp_path):
    given = ["test", "val", "test", "train"] * 25
    output = output_with_captions(tmp_path, [*given, None, None])
    expected = {split: [f"v{i}" for i, s in enumerate(given) if s == split]
                for split in ("train", "val", "test")}
    for i in (100, 101):
        expected[hash_split(f"v{i}")].append(f"v{i}")
    for split, ids in expected.items():
        assert read_captions(output, split).column("video_id").to_pylist() == ids, split
    with pytest.raises(ValueError, match="no captions in split 'holdout'"):
        read_captions(output, "holdout")

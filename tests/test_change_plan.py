"""The refresh's rules without Ray or storage: what is decoded, deleted, re-keyworded."""

from __future__ import annotations

import pyarrow as pa

from pipelines.core.sql import sql_in
from pipelines.core.storage import UNREADABLE, Fingerprint
from pipelines.ingestion.change_plan import plan_captions, plan_videos
from pipelines.ingestion.schemas import VIDEOS

LOCAL = Fingerprint(100, 1700000000.5, None)


def committed(rows: list[tuple[str, str, Fingerprint]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"video_id": v, "uri": u, "size_bytes": f.size_bytes, "mtime": f.mtime, "etag": f.etag}
         for v, u, f in rows],
        schema=pa.schema([VIDEOS.field(c) for c in ("video_id", "uri", "size_bytes", "mtime",
                                                     "etag")]))


def source(rows: list[tuple[str, str, Fingerprint | None]]) -> list[dict]:
    return [{"video_id": v, "uri": u, "fingerprint": f} for v, u, f in rows]


def test_videos_sorted_by_what_happens_to_them():
    touched = Fingerprint(100, 1700000999.0, None)  # same size, rewritten in place
    plan = plan_videos(
        source([("same", "/a/same.mp4", LOCAL), ("new", "/a/new.mp4", LOCAL),
                ("edited", "/a/edited.mp4", touched), ("moved", "/b/moved.mp4", LOCAL),
                ("failed", "/a/failed.mp4", LOCAL), ("unreadable", "/a/u.mp4", None)]),
        committed([("same", "/a/same.mp4", LOCAL), ("edited", "/a/edited.mp4", LOCAL),
                   ("moved", "/a/moved.mp4", LOCAL), ("unreadable", "/a/u.mp4", LOCAL),
                   ("gone", "/a/gone.mp4", LOCAL)]),
        failed_before={"failed"})
    assert [v["video_id"] for v in plan.added] == ["new"]
    assert [v["video_id"] for v in plan.changed] == ["edited", "moved", "unreadable"]
    assert [v["video_id"] for v in plan.retried] == ["failed"]
    assert plan.deleted == ["gone"] and plan.unchanged == ["same"]
    assert [v["video_id"] for v in plan.to_decode] == [
        "new", "edited", "moved", "unreadable", "failed"]


def test_s3_objects_compare_by_etag_not_by_rounded_times():
    listed = Fingerprint(100, 1700000000.123, "abc")  # a listing's millisecond time
    headed = Fingerprint(100, 1700000000.0, "abc")  # a HEAD's whole-second time
    assert listed.matches(headed)
    assert not listed.matches(Fingerprint(100, 1700000000.123, "abd"))
    assert not listed.matches(Fingerprint(101, 1700000000.123, "abc"))
    assert not LOCAL.matches(Fingerprint(100, 1700000001.5, None))
    assert not LOCAL.matches(None)


def test_captions_edited_in_the_manifest_keep_known_keywords():
    current = [
        {"video_id": "a", "caption": "a dog runs", "keywords": ["dog"], "split": "train"},
        {"video_id": "a", "caption": "a dog plays", "keywords": ["play"], "split": "train"},
        {"video_id": "b", "caption": "a cat sits", "keywords": ["cat"], "split": "test"},
        {"video_id": "gone", "caption": "rain", "keywords": ["rain"], "split": "test"},
    ]
    desired = [
        {"video_id": "a", "caption": "a dog runs", "split": "train"},
        {"video_id": "a", "caption": "a dog jumps", "split": "train"},  # edited
        {"video_id": "b", "caption": "a cat sits", "split": "test"},  # as before
        {"video_id": "c", "caption": "a bird flies", "split": "val"},  # a new video
        {"video_id": "failed", "caption": "broken", "split": "val"},  # not decoded
    ]
    plan = plan_captions(desired, current, videos={"a", "b", "c"})
    assert plan.rewrite == {"a", "c", "gone"}
    assert plan.known == [{"video_id": "a", "caption": "a dog runs", "split": "train",
                           "start_s": None, "end_s": None, "keywords": ["dog"]}]
    assert sorted(r["caption"] for r in plan.to_extract) == ["a bird flies", "a dog jumps"]


def test_a_split_change_alone_rewrites_the_video_captions():
    current = [{"video_id": "a", "caption": "x", "keywords": ["x"], "split": "train"}]
    plan = plan_captions([{"video_id": "a", "caption": "x", "split": "test"}], current, {"a"})
    assert plan.rewrite == {"a"} and plan.known[0]["split"] == "test" and not plan.to_extract


def test_a_span_change_alone_rewrites_the_caption_and_keeps_its_keywords():
    current = [{"video_id": "a", "caption": "x", "keywords": ["x"], "split": "train",
                "start_s": 1.0, "end_s": 4.0}]
    desired = [{"video_id": "a", "caption": "x", "split": "train", "start_s": 2.0,
                "end_s": 4.0}]
    plan = plan_captions(desired, current, {"a"})
    assert plan.rewrite == {"a"} and not plan.to_extract
    assert (plan.known[0]["start_s"], plan.known[0]["keywords"]) == (2.0, ["x"])
    assert not plan_captions(current, current, {"a"}).rewrite  # unchanged: nothing to do


def test_a_folder_source_keeps_the_captions_of_remaining_videos():
    current = [{"video_id": "a", "caption": "x", "keywords": ["x"], "split": None},
               {"video_id": "b", "caption": "y", "keywords": ["y"], "split": None}]
    plan = plan_captions(None, current, videos={"a"})
    assert plan.rewrite == {"b"} and not plan.known and not plan.to_extract


def test_sql_literals_are_quoted():
    assert sql_in("video_id", ["b", "it's"]) == "video_id IN ('b', 'it''s')"


def test_a_failed_metadata_call_keeps_a_committed_video():
    plan = plan_videos(source([("known", "/a/known.mp4", UNREADABLE),
                               ("new", "/a/new.mp4", UNREADABLE)]),
                       committed([("known", "/a/known.mp4", LOCAL)]), failed_before=set())
    assert plan.unchanged == ["known"] and not plan.deleted and not plan.changed
    assert [v["video_id"] for v in plan.added] == ["new"]  # tried: it fails with its reason


def test_predicates_select_ids_with_quotes_and_backslashes_in_delta_and_lance(tmp_path):
    import lance
    from deltalake import DeltaTable, write_deltalake

    ids = ["it's", "a\\b", "plain", "100% 'x'"]
    gone = ["it's", "a\\b"]
    table = pa.table({"video_id": ids})
    write_deltalake(str(tmp_path / "delta"), table)
    DeltaTable(str(tmp_path / "delta")).delete(sql_in("video_id", gone))
    kept = DeltaTable(str(tmp_path / "delta")).to_pyarrow_dataset().to_table()
    assert sorted(kept.column(0).to_pylist()) == ["100% 'x'", "plain"]
    dataset = lance.write_dataset(table, str(tmp_path / "lance"))
    assert sorted(dataset.to_table(filter=sql_in("video_id", gone)).column(0).to_pylist()) == (
        sorted(gone))

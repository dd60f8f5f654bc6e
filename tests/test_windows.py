"""Long videos as windows: ingest's rows, the table's rows, search by video, and refresh."""

from __future__ import annotations

import itertools
import json
import shutil

import lancedb
import pandas as pd
import pyarrow as pa
import pytest
import torch
from conftest import make_checkpoint, run
from deltalake import DeltaTable, write_deltalake

from pipelines.index.search import VideoSearch, best_per_video
from pipelines.ingestion.output import open_ingest
from pipelines.ingestion.video_decode import window_spans
from pipelines.sources.samples import write_clip
from pipelines.training.data import best_window, captions_by_window, frames_in_span
from pipelines.training.evaluation import load_split
from vtr_models.checkpoint import load_checkpoint

WINDOW = ["--segment-seconds", "8", "--segment-stride", "4"]


def test_best_per_video_keeps_each_videos_best_window():
    ids = ["a", "a", "b", "c", "b"]
    assert best_per_video([1, 0, 4, 2, 3], ids, 2) == [[1], [4]]  # a's second window dropped
    assert best_per_video([1, 0, 4, 2, 3], ids, 5) == [[1], [4], [3]]  # fewer videos than k
    assert best_per_video([1, 0, 4, 2, 3], ids, 2, per_video=2) == [[1, 0], [4, 2]]
    assert best_per_video([3, 1, 0], None, 2) == [[3], [1]]  # a table of one row per video


@pytest.fixture(scope="module")
def windowed(tmp_path_factory, keyword_model) -> dict:
    """Two videos (a 26 s one and a 6 s clip) ingested with 8 s windows every 4 s, and
    embedded with a tiny random model."""
    root = tmp_path_factory.mktemp("windows")
    videos = root / "videos"
    videos.mkdir()
    write_clip(videos / "long.mp4", num_frames=26 * 4, fps=4, seed=1)
    write_clip(videos / "short.mp4", num_frames=6 * 4, fps=4, seed=2)
    data, db = root / "ingest", root / "db"
    checkpoint = make_checkpoint(root / "ckpt", 0)
    ingest = run(["pipelines/ingest.py", "--videos", str(videos), "--data", str(data),
                  "--frame-size", "64", "--keyword-model", keyword_model, *WINDOW])
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    embed = run(["pipelines/embed.py", "--data", str(data), "--checkpoint", str(checkpoint),
                 "--db", str(db), "--table", "videos"])
    assert embed.returncode == 0, embed.stderr[-3000:]
    return {"root": root, "videos": videos, "data": data, "db": db, "checkpoint": checkpoint,
            "keyword_model": keyword_model}


def spans_of(rows: list[dict], video: str) -> list[tuple[float, float]]:
    return sorted((r["window_start_s"], r["window_end_s"]) for r in rows
                  if r["video_id"].startswith(video))


def test_a_long_video_is_a_row_per_window_and_a_clip_one_row(windowed):
    rows = open_ingest(str(windowed["data"])).dataset("videos").to_table(columns=[
        "video_id", "window_start_s", "window_end_s", "duration_s", "timestamps_s"]).to_pylist()
    long = [r for r in rows if r["video_id"].startswith("long")]
    assert spans_of(rows, "long") == window_spans(long[0]["duration_s"], 8.0, 4.0)
    assert len(long) == 6  # 0, 4, 8, 12, 16 and the last one ending with the video
    assert spans_of(rows, "short") == [(0.0, pytest.approx(6.0, abs=0.3))]
    for row in rows:  # each row holds its window's frames, at most 8 at 1 fps
        assert all(row["window_start_s"] - 0.05 <= t < row["window_end_s"]
                   for t in row["timestamps_s"])
        assert len(row["timestamps_s"]) <= 8
    table = lancedb.connect(str(windowed["db"])).open_table("videos").to_arrow().to_pylist()
    assert spans_of(table, "long") == spans_of(rows, "long")  # a table row per window


def test_search_answers_each_video_once_with_a_moment_in_its_window(windowed):
    search = VideoSearch(str(windowed["db"]), "videos", str(windowed["checkpoint"]),
                         keyword_model=windowed["keyword_model"])
    ids = set(open_ingest(str(windowed["data"])).dataset("videos").to_table(
        columns=["video_id"]).column(0).to_pylist())
    assert len(ids) == 2
    # every row is a candidate: the long video's six windows and the clip
    result = search.search("a bar moves across a coloured background", k=2, candidates=7)
    assert set(result["video_id"]) == ids and len(result) == 2
    for row in result.itertuples():
        assert 0.0 <= row.start_s < row.end_s
    short = result[result["video_id"].str.startswith("short")].iloc[0]
    assert short.end_s <= 6.5
    # on request, each video's other windows' moments too, best first, none overlapping
    more = search.search("a bar moves across a coloured background", k=2, candidates=7,
                         moments=3)
    assert list(more["video_id"]) == list(result["video_id"])
    for row in more.itertuples():
        first = row.moments[0]
        assert (first["start_s"], first["end_s"]) == (row.start_s, row.end_s)
        assert [m["score"] for m in row.moments] == sorted(
            (m["score"] for m in row.moments), reverse=True)
        spans = sorted((m["start_s"], m["end_s"]) for m in row.moments)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
        assert len(row.moments) <= (3 if row.video_id.startswith("long") else 1)


def test_a_changed_long_video_replaces_all_its_windows(windowed):
    """The long video shortened to 14 s: ingest --update and embed --update leave exactly
    its new windows (3), none of the old ones; the clip's row is untouched."""
    write_clip(windowed["videos"] / "long.mp4", num_frames=14 * 4, fps=4, seed=3)
    ingest = run(["pipelines/ingest.py", "--videos", str(windowed["videos"]), "--data",
                  str(windowed["data"]), "--frame-size", "64", "--keyword-model",
                  windowed["keyword_model"], "--update", *WINDOW])
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    table = lancedb.connect(str(windowed["db"])).open_table("videos")
    before = table.to_arrow().to_pylist()
    short_before = [r["vector"] for r in before if r["video_id"].startswith("short")]
    old, version = spans_of(before, "long"), table.version
    embed = run(["pipelines/embed.py", "--data", str(windowed["data"]), "--checkpoint",
                 str(windowed["checkpoint"]), "--db", str(windowed["db"]), "--table", "videos",
                 "--update"])
    assert embed.returncode == 0, embed.stderr[-3000:]
    new = [(0.0, 8.0), (4.0, 12.0), (pytest.approx(6.0, abs=0.3), pytest.approx(14.0, abs=0.3))]
    ingested = open_ingest(str(windowed["data"])).dataset("videos").to_table(
        columns=["video_id", "window_start_s", "window_end_s"]).to_pylist()
    assert spans_of(ingested, "long") == new
    table = lancedb.connect(str(windowed["db"])).open_table("videos")
    latest = table.version
    # every version a reader can open holds all of the old windows or all of the new
    for number in range(version, latest + 1):
        table.checkout(number)
        assert spans_of(table.to_arrow().to_pylist(), "long") in (old, new), number
    table.checkout_latest()
    rows = table.to_arrow().to_pylist()
    assert spans_of(rows, "long") == new
    assert [r["vector"] for r in rows if r["video_id"].startswith("short")] == short_before


def test_a_caption_trains_on_its_span_from_the_window_that_holds_most_of_it():
    windows = [(0.0, 8.0), (4.0, 12.0), (8.0, 16.0), (10.0, 18.0)]
    assert best_window(None, windows) == 0.0  # the whole video: its first window
    assert best_window((9.0, 15.0), windows) == 8.0  # 6 s of 6 in [8, 16), 5 in [10, 18)
    assert best_window((5.0, 7.0), windows) == 0.0  # whole in two: the earlier
    captions = pa.table({"video_id": ["v", "v", "w"], "caption": ["all of v", "late", "w"],
                         "keywords": [None, ["k"], None], "start_s": [None, 9.0, None],
                         "end_s": [None, 15.0, None]})
    table = pa.table({"video_id": ["v"] * 4, "window_start_s": [w[0] for w in windows],
                      "window_end_s": [w[1] for w in windows]})
    grouped = captions_by_window(captions, table)
    assert grouped == {("v", 0.0): [("v", "all of v", [], None)],
                       ("v", 8.0): [("v@9-15", "late", ["k"], (9.0, 15.0))],
                       ("w", 0.0): [("w", "w", [], None)]}
    jpegs = [bytes([i]) for i in range(8, 16)]
    times = [float(t) for t in range(8, 16)]
    assert frames_in_span(jpegs, times, (9.0, 15.0)) == jpegs[1:7]
    assert frames_in_span(jpegs, times, None) == jpegs
    assert frames_in_span(jpegs, times, (12.2, 12.6)) == [jpegs[4]]  # none inside: nearest


def test_spans_in_a_manifest_reach_captions_and_evaluation(windowed, tmp_path):
    """A manifest of the long video with spans: ingest keeps them (and refuses, naming
    the row, a span past the video's end); evaluation scores each span as a clip of
    the frames inside it."""
    long = str(windowed["videos"] / "long.mp4")
    manifest = tmp_path / "m.csv"
    pd.DataFrame([
        {"video_id": "long", "uri": long, "caption": "the start", "split": "test",
         "start_s": 0.0, "end_s": 5.0},
        {"video_id": "long", "uri": long, "caption": "later on", "split": "test",
         "start_s": 7.0, "end_s": 12.0},
        {"video_id": "long", "uri": long, "caption": "after the end", "split": "test",
         "start_s": 30.0, "end_s": 40.0},
    ]).to_csv(manifest, index=False)
    data = tmp_path / "ingest"
    result = run(["pipelines/ingest.py", "--manifest", str(manifest), "--data", str(data),
                  "--frame-size", "64", "--keyword-model", windowed["keyword_model"], *WINDOW])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "manifest row 3: the span 30-40 s of video long's caption ends after the video" \
        in result.stderr
    captions = open_ingest(str(data)).dataset("captions").to_table().to_pylist()
    assert sorted((c["caption"], c["start_s"], c["end_s"]) for c in captions) == [
        ("later on", 7.0, 12.0), ("the start", 0.0, 5.0)]
    model = load_checkpoint(windowed["checkpoint"])
    inputs = load_split(model, str(data), "test")
    assert sorted(inputs.video_ids) == ["long@0-5", "long@7-12"]
    masks = {clip: int(mask.sum()) for clip, mask in zip(
        inputs.video_ids, torch.cat([m for _, m in inputs.video_batches]), strict=True)}
    assert masks == {"long@0-5": 5, "long@7-12": 5}  # 1 fps frames inside each span


def test_an_output_written_before_windows_is_rebuilt_not_mixed(windowed, tmp_path):
    """An output as the ingest wrote it before windows (no window columns, no window
    settings): --update and embed refuse it in one line; --overwrite rebuilds it."""
    data = tmp_path / "ingest"
    shutil.copytree(windowed["data"], data)
    videos = DeltaTable(str(data / "videos")).to_pyarrow_table()
    write_deltalake(str(data / "videos"), videos.drop_columns(["window_start_s", "window_end_s"]),
                    mode="overwrite", schema_mode="overwrite")
    for log in (data / "_ingest_log").glob("*.json"):
        record = json.loads(log.read_text())
        for name in ("segment_seconds", "segment_stride"):
            record["settings"]["sampling"].pop(name)
        record["tables"]["videos"] = DeltaTable(str(data / "videos")).version()
        log.write_text(json.dumps(record))
    source = ["pipelines/ingest.py", "--videos", str(windowed["videos"]), "--data", str(data),
              "--frame-size", "64", "--keyword-model", windowed["keyword_model"], *WINDOW]
    update = run([*source, "--update"])
    assert update.returncode == 2
    assert "written before videos had windows" in update.stderr and "--overwrite" in update.stderr
    embed = run(["pipelines/embed.py", "--data", str(data), "--checkpoint",
                 str(windowed["checkpoint"]), "--db", str(tmp_path / "db")])
    assert embed.returncode == 2 and "written before videos had windows" in embed.stderr
    rebuilt = run([*source, "--overwrite"])
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert "window_start_s" in open_ingest(str(data)).dataset("videos").schema.names

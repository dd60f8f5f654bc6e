"""Manifest formats, the MSR-VTT adapter, and validation errors that name the row."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.core.job_config import parse_config
from pipelines.ingest import IngestConfig, load_inputs
from pipelines.ingestion.manifest import ManifestError, manifest_from_folder, read_manifest
from pipelines.sources.msrvtt import DATA_JSON, TEST_CSV, TRAIN_CSV, read_msrvtt

ROWS = [
    {"video_id": "007", "uri": "/data/a.mp4", "caption": "a dog runs", "split": "train"},
    {"video_id": "007", "uri": "/data/a.mp4", "caption": "a dog is running", "split": "train"},
    {"video_id": "b", "uri": "s3://bucket/b.mp4", "caption": "a cat sleeps", "split": "test"},
]


def _write(path, rows, fmt):
    df = pd.DataFrame(rows)
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        df.to_parquet(path)
    return str(path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_formats_give_the_same_manifest(tmp_path, fmt):
    manifest = read_manifest(_write(tmp_path / f"m.{fmt}", ROWS, fmt))
    assert manifest.videos == [
        {"video_id": "007", "uri": "/data/a.mp4"},
        {"video_id": "b", "uri": "s3://bucket/b.mp4"},
    ]
    assert [c["caption"] for c in manifest.captions] == [r["caption"] for r in ROWS]
    assert [c["split"] for c in manifest.captions] == ["train", "train", "test"]


def test_relative_local_uris_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [{"video_id": "a", "uri": "clips/a.mp4", "caption": "a dog"}]
    manifest = read_manifest(_write(tmp_path / "m.csv", rows, "csv"))
    assert manifest.videos[0]["uri"] == str(tmp_path / "clips" / "a.mp4")


def test_split_is_optional(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "split"} for r in ROWS]
    manifest = read_manifest(_write(tmp_path / "m.csv", rows, "csv"))
    assert all(c["split"] is None for c in manifest.captions)


def test_missing_column(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "uri"} for r in ROWS]
    with pytest.raises(ManifestError, match="missing column.*uri"):
        read_manifest(_write(tmp_path / "m.csv", rows, "csv"))


def test_empty_file(tmp_path):
    (tmp_path / "m.csv").write_text("")
    with pytest.raises(ManifestError, match="empty"):
        read_manifest(str(tmp_path / "m.csv"))


def test_header_only_file(tmp_path):
    (tmp_path / "m.csv").write_text("video_id,uri,caption\n")
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(str(tmp_path / "m.csv"))


def test_one_video_id_two_uris_names_both_rows(tmp_path):
    rows = [*ROWS, {"video_id": "b", "uri": "/other/b.mp4", "caption": "x", "split": "test"}]
    with pytest.raises(ManifestError, match=r"'b' has two uris.*row 3.*row 4"):
        read_manifest(_write(tmp_path / "m.jsonl", rows, "jsonl"))


@pytest.mark.parametrize("column", ["video_id", "uri", "caption"])
def test_an_empty_required_value_names_the_row(tmp_path, column):
    row = {"video_id": "c", "uri": "/c.mp4", "caption": "a caption", "split": "test",
           column: "  "}
    with pytest.raises(ManifestError, match=f"row 4 has an empty {column}"):
        read_manifest(_write(tmp_path / "m.parquet", [*ROWS, row], "parquet"))


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(ManifestError, match="unknown extension"):
        read_manifest(str(tmp_path / "m.xlsx"))
    with pytest.raises(ManifestError, match="no such file"):
        read_manifest(str(tmp_path / "absent.csv"))


def test_unparseable_file(tmp_path):
    (tmp_path / "m.jsonl").write_text("{not json\n")
    with pytest.raises(ManifestError, match="cannot parse as jsonl"):
        read_manifest(str(tmp_path / "m.jsonl"))


def test_folder_listing_derives_ids_from_paths(tmp_path):
    for name in ["a.mp4", "sub/b c.MP4", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    manifest = manifest_from_folder(str(tmp_path))
    assert [(v["video_id"], v["uri"]) for v in manifest.videos] == [
        ("a", str(tmp_path / "a.mp4")),
        ("sub/b c", str(tmp_path / "sub/b c.MP4")),
    ]
    assert manifest.captions == []
    assert manifest.fingerprints[str(tmp_path / "a.mp4")].size_bytes == 1


def test_folder_listing_refuses_two_files_for_one_id(tmp_path):
    for name in ["clip.mp4", "clip.mkv"]:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ManifestError, match="would both be video 'clip'"):
        manifest_from_folder(str(tmp_path))


def write_msrvtt(folder, skip: str | None = None) -> str:
    """A tiny MSR-VTT annotation folder: 4 videos of 3 captions; video0 and video1 in
    the 9k training list, video2 the one JSFUSION test video, video3 in neither.
    ``skip``: the one file not to write."""
    sentences = [
        {"video_id": f"video{i}", "caption": f"caption {j} of video {i}", "sen_id": 10 * i + j}
        for i in range(4)
        for j in range(3)
    ]
    files = {
        DATA_JSON: lambda path: path.write_text(
            json.dumps({"videos": [], "sentences": sentences})),
        TRAIN_CSV: lambda path: pd.DataFrame({"video_id": ["video0", "video1"]}).to_csv(
            path, index=False),
        TEST_CSV: lambda path: pd.DataFrame(
            {"key": ["ret0"], "vid_key": ["msr2"], "video_id": ["video2"],
             "sentence": ["a test one"]}
        ).to_csv(path, index=False),
    }
    for name, write in files.items():
        if name != skip:
            write(folder / name)
    return str(folder)


def test_msrvtt_adapter(tmp_path):
    manifest = read_msrvtt(write_msrvtt(tmp_path))
    assert [v["video_id"] for v in manifest.videos] == ["video0", "video1", "video2"]
    assert manifest.videos[2]["uri"] == f"{tmp_path}/videos/all/video2.mp4"
    train = [c for c in manifest.captions if c["split"] == "train"]
    test = [c for c in manifest.captions if c["split"] == "test"]
    assert len(train) == 6 and {c["video_id"] for c in train} == {"video0", "video1"}
    assert test == [{"video_id": "video2", "caption": "a test one", "split": "test",
                     "start_s": None, "end_s": None, "row": 7}]


@pytest.mark.parametrize("missing", [DATA_JSON, TRAIN_CSV, TEST_CSV])
def test_msrvtt_missing_file_is_named(tmp_path, missing):
    with pytest.raises(ManifestError, match=f"MSR-VTT folder {tmp_path}: {missing} not found"):
        read_msrvtt(write_msrvtt(tmp_path, skip=missing))


def _ingest_inputs(*flags: str):
    """What the ingest job reads for these flags (no Ray: only the config and the manifest)."""
    return load_inputs(parse_config(IngestConfig, "x", [*flags, "--data", "out"]))


def test_msrvtt_through_the_job_config_with_and_without_video_root(tmp_path):
    folder = write_msrvtt(tmp_path)
    ids = ["video0", "video1", "video2"]
    rooted = _ingest_inputs("--manifest", folder, "--manifest-format", "msrvtt",
                            "--video-root", "/v")
    assert [v["uri"] for v in rooted.videos] == [f"/v/{i}.mp4" for i in ids]
    default = _ingest_inputs("--manifest", folder, "--manifest-format", "msrvtt")
    assert [v["uri"] for v in default.videos] == [f"{tmp_path}/videos/all/{i}.mp4" for i in ids]
    assert [c["split"] for c in default.captions] == ["train"] * 6 + ["test"]
    with pytest.raises(ManifestError):  # without the format flag the folder is no manifest
        _ingest_inputs("--manifest", folder)


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_text_that_is_not_utf8_is_named(tmp_path, ext):
    path = tmp_path / f"latin1.{ext}"
    rows = ('video_id,uri,caption\nv1,a.mp4,un café\n' if ext == "csv"
            else '{"video_id": "v1", "uri": "a.mp4", "caption": "un café"}\n')
    path.write_bytes(rows.encode("latin-1"))
    with pytest.raises(ManifestError, match=f"manifest {path}: not UTF-8 text"):
        read_manifest(str(path))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_caption_may_give_the_span_it_tells_of(tmp_path, fmt):
    rows = [{**ROWS[0], "start_s": 12.5, "end_s": 20.0},
            {**ROWS[2], "start_s": None, "end_s": None}]
    manifest = read_manifest(_write(tmp_path / f"m.{fmt}", rows, fmt))
    assert [(c["start_s"], c["end_s"]) for c in manifest.captions] == [(12.5, 20.0),
                                                                       (None, None)]


@pytest.mark.parametrize(("start", "end", "message"), [
    (5.0, 5.0, "row 1's span 5-5 s is not a span"),
    (-1.0, 3.0, "row 1's span -1-3 s is not a span"),
    (2.0, None, "row 1 has start_s '2.0' and end_s '': give both"),
])
def test_a_span_that_is_not_one_is_refused_with_its_row(tmp_path, start, end, message):
    rows = [{**ROWS[0], "start_s": start, "end_s": end}]
    with pytest.raises(ManifestError, match=message):
        read_manifest(_write(tmp_path / "m.csv", rows, "csv"))


def test_a_span_needs_both_columns(tmp_path):
    rows = [{**ROWS[0], "start_s": 1.0}]
    with pytest.raises(ManifestError, match="needs both start_s and end_s"):
        read_manifest(_write(tmp_path / "m.csv", rows, "csv"))

"""The ingest job end to end on a local Ray: good and broken inputs, local and S3."""

from __future__ import annotations

import io
import shutil

import pandas as pd
import pytest
from conftest import make_audio_only
from PIL import Image

from pipelines.ingest import main
from pipelines.ingestion.output import open_ingest
from pipelines.sources.samples import write_clip

pytestmark = pytest.mark.slow


def read_part(output: str, part: str) -> pd.DataFrame:
    return open_ingest(output).dataset(part).to_table().to_pandas()


@pytest.fixture(scope="module")
def archive(tmp_path_factory, sample_videos, s3_bucket):
    """A manifest mixing good videos (odd file names, local and S3) with every bad case."""
    import s3fs

    root = tmp_path_factory.mktemp("archive")
    good = {
        "city bikes": shutil.copy(sample_videos / "bikes.mp4", root / "city bikes.mp4"),
        "plage": write_clip(root / "vidéo à la plage.mp4", seed=1),
        "kanji": write_clip(root / "日本語 clip.mp4", num_frames=30, seed=2),
    }
    s3 = s3fs.S3FileSystem()
    s3.put_file(str(write_clip(root / "remote.mp4", seed=3)), f"{s3_bucket}/videos/good.mp4")
    good["s3 good"] = f"s3://{s3_bucket}/videos/good.mp4"

    (root / "zero.mp4").write_bytes(b"")
    clip = write_clip(root / "full.mp4", seed=4).read_bytes()
    (root / "truncated.mp4").write_bytes(clip[: len(clip) // 2])
    (root / "text.mp4").write_text("this is not a video\n")
    Image.new("RGB", (64, 48), "red").save(root / "image.mp4", format="JPEG")
    (root / "a folder.mp4").mkdir()
    bad = {
        "missing": (root / "missing.mp4", "read"),
        "zero bytes": (root / "zero.mp4", "read"),
        "truncated": (root / "truncated.mp4", "decode"),
        "text": (root / "text.mp4", "decode"),
        "image": (root / "image.mp4", "decode"),
        "audio only": (make_audio_only(root / "audio.mp4"), "decode"),
        "folder": (root / "a folder.mp4", "read"),
        "one frame": (write_clip(root / "one.mp4", num_frames=1), "decode"),
        "s3 missing": (f"s3://{s3_bucket}/videos/absent.mp4", "read"),
    }
    rows = []
    for vid, uri in [*good.items(), *((v, u) for v, (u, _) in bad.items())]:
        for n in range(2):
            rows.append({"video_id": vid, "uri": str(uri), "split": "train" if n else "test",
                         "caption": f"a person rides a bicycle past parked cars, take {n}"})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return {"root": root, "manifest": str(manifest), "good": good, "bad": bad, "rows": rows}


@pytest.fixture(scope="module")
def ingested(archive, keyword_model, ray_local):
    output = str(archive["root"] / "out")
    code = main(["--manifest", archive["manifest"], "--data", output,
                 "--keyword-model", keyword_model, "--max-error-rate", "0.5",
                 "--local-max-videos", "0"])  # the decode actors, not the driver
    return {"code": code, "output": output}


def test_more_failures_than_allowed_exits_non_zero(ingested, capsys):
    assert ingested["code"] == 1  # 9 of 13 videos are broken, above --max-error-rate 0.5


def test_every_good_video_is_written(ingested, archive):
    videos = read_part(ingested["output"], "videos")
    assert sorted(videos["video_id"]) == sorted(archive["good"])
    for row in videos.itertuples():
        assert row.num_frames == len(row.frames) == len(row.timestamps_s) >= 1
        first = Image.open(io.BytesIO(row.frames[0]))
        assert first.format == "JPEG" and min(first.size) == 224
        assert row.size_bytes > 0
    by_id = videos.set_index("video_id")
    assert by_id.loc["city bikes", "num_frames"] == 10
    assert by_id.loc["city bikes", "width"] == 640 and by_id.loc["city bikes", "height"] == 272
    assert by_id.loc["s3 good", "etag"] and pd.isna(by_id.loc["city bikes", "etag"])
    assert by_id.loc["city bikes", "mtime"] > 0


def test_every_bad_input_is_an_error_row_with_its_stage(ingested, archive):
    errors = read_part(ingested["output"], "errors").set_index("video_id")
    assert sorted(errors.index) == sorted(archive["bad"])
    for vid, (uri, stage) in archive["bad"].items():
        assert errors.loc[vid, "stage"] == stage, vid
        assert errors.loc[vid, "uri"] == str(uri)
        assert errors.loc[vid, "error_type"] and errors.loc[vid, "message"], vid
    assert "no such file" in errors.loc["missing", "message"]
    assert "0 bytes" in errors.loc["zero bytes", "message"]
    assert "folder" in errors.loc["folder", "message"]
    assert "no video stream" in errors.loc["audio only", "message"]
    assert "1 decodable frame" in errors.loc["one frame", "message"]


def test_counts_reconcile_and_failed_captions_are_dropped(ingested, archive):
    out = ingested["output"]
    videos, captions, errors = (read_part(out, p) for p in ("videos", "captions", "errors"))
    manifest_ids = {r["video_id"] for r in archive["rows"]}
    assert len(manifest_ids) == len(videos) + errors["video_id"].nunique()
    assert set(captions["video_id"]) == set(archive["good"])
    assert len(captions) == 2 * len(archive["good"])
    for keywords in captions["keywords"]:
        assert len(keywords) >= 1
        assert "bicycle" in " ".join(keywords) or "car" in " ".join(keywords)
    assert set(captions["split"]) == {"train", "test"}


def test_output_is_published_whole(ingested):
    out = ingested["output"]
    names = sorted(p.name for p in __import__("pathlib").Path(out).iterdir())
    assert names == ["_ingest_log", "captions", "errors", "videos"]


def test_existing_output_needs_overwrite(ingested, archive, keyword_model, capsys):
    before = sorted(read_part(ingested["output"], "videos")["video_id"])
    code = main(["--manifest", archive["manifest"], "--data", ingested["output"],
                 "--keyword-model", keyword_model])
    assert code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(read_part(ingested["output"], "videos")["video_id"]) == before


def test_unloadable_keyword_model_stops_before_any_work(archive, tmp_path, capsys, ray_local):
    output = tmp_path / "never"
    code = main(["--manifest", archive["manifest"], "--data", str(output),
                 "--keyword-model", str(tmp_path / "no-model")])
    assert code == 2
    assert "--keyword-model" in capsys.readouterr().err
    assert not output.exists()


def test_s3_prefix_in_s3_output_out(archive, s3_bucket, ray_local):
    output = f"s3://{s3_bucket}/ingest-out"
    code = main(["--videos", f"s3://{s3_bucket}/videos/", "--data", output, "--fps", "2"])
    assert code == 0
    videos = read_part(output, "videos")
    assert list(videos["video_id"]) == ["good"]
    assert videos["num_frames"][0] == 4  # 2 s clip at 2 fps
    assert read_part(output, "captions").empty and read_part(output, "errors").empty

"""Incremental refresh on a local Ray: ingest --update, embed --update, refresh.py, S3.

Every run is followed by the checks a reader relies on: one row per video, one
model in the table, every row's video present in the ingest run the table names.
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import lancedb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from conftest import make_checkpoint
from deltalake import write_deltalake

from pipelines import ingest, refresh
from pipelines.core.storage import object_store_options
from pipelines.embed import EmbedConfig, run_embed
from pipelines.index.search import ModelMismatchError, VideoSearch
from pipelines.index.table import table_state
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.ingestion.output import (
    IngestStore,
    IngestVersion,
    changes_since,
    open_ingest,
    read_captions,
)
from pipelines.ingestion.schemas import VIDEOS
from pipelines.sources.samples import write_clip
from vtr_models.checkpoint import checkpoint_id

pytestmark = pytest.mark.slow


def clip(folder: Path, name: str, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_clip(folder / f"{name}.mp4", num_frames=24, size=(64, 48), seed=seed)


def ingest_update(output: Path | str, **source) -> ingest.IngestSummary:
    return run_ingest(IngestConfig(data=str(output), frame_size=64, update=True, **source))


def embed_update(output: Path | str, checkpoint: Path, db: Path | str, **flags):
    flags.setdefault("update", True)
    return run_embed(EmbedConfig(data=str(output), checkpoint=str(checkpoint), db=str(db),
                                 batch_size=8, **flags))


def open_table(db: Path | str):
    return lancedb.connect(str(db), storage_options=object_store_options(str(db))).open_table(
        "videos")


def checked_table(db: Path | str, output: Path | str) -> pd.DataFrame:
    """The table's rows, after checking the rules that hold after every commit."""
    table = open_table(db)
    rows = table.to_arrow().to_pandas()
    assert rows["video_id"].is_unique
    assert rows["model_id"].nunique() <= 1
    state = table_state(table.to_lance())
    named = open_ingest(str(output), state.ingest_version).dataset("videos").to_table(
        columns=["video_id"]).column(0).to_pylist()
    assert set(rows["video_id"]) <= set(named)
    return rows


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "a", seed=0)


def test_refresh_decodes_and_encodes_only_what_changed(tmp_path, checkpoint, ray_local):
    archive, output, db = tmp_path / "archive", tmp_path / "ingest", tmp_path / "db"
    for i in range(8):
        clip(archive, f"c{i}", seed=i)
    built = ingest_update(output, videos=str(archive))
    assert (built.version, built.added, built.failed) == (1, 8, 0)
    table = embed_update(output, checkpoint, db)
    assert table.rebuilt and table.embedded == 8 and table.table_rows == 8
    checked_table(db, output)

    idle = ingest_update(output, videos=str(archive))
    assert idle.version is None and idle.attempted == 0 and idle.unchanged == 8
    idle_table = embed_update(output, checkpoint, db)
    assert (idle_table.embedded, idle_table.deleted, idle_table.unchanged) == (0, 0, 8)
    version_before = open_table(db).version

    clip(archive, "new", seed=100)
    clip(archive, "c0", seed=200)  # modified in place
    (archive / "c1.mp4").unlink()
    on_ray = {"local_max_videos": 0}  # the actor pools; small updates run in the driver
    update = ingest_update(output, videos=str(archive), **on_ray)
    assert (update.version, update.added, update.changed, update.deleted,
            update.unchanged, update.attempted) == (2, 1, 1, 1, 6, 2)
    assert update.frames == 4  # two 2 s clips at 1 fps
    assert changes_since(open_ingest(str(output)), 1) == ({"new", "c0"}, {"c1"})
    table = embed_update(output, checkpoint, db, **on_ray)
    assert (table.embedded, table.deleted, table.unchanged) == (2, 1, 6)
    assert open_table(db).version > version_before
    rows = checked_table(db, output)
    assert sorted(rows["video_id"]) == sorted(p.stem for p in archive.iterdir())

    # the refreshed table equals a from-scratch build of the changed archive
    scratch_output, scratch_db = tmp_path / "scratch-ingest", tmp_path / "scratch-db"
    ingest_update(scratch_output, videos=str(archive))
    embed_update(scratch_output, checkpoint, scratch_db)
    scratch = checked_table(scratch_db, scratch_output).set_index("video_id")
    rows = rows.set_index("video_id").loc[scratch.index]
    np.testing.assert_allclose(np.stack(rows["vector"]), np.stack(scratch["vector"]), atol=1e-5)
    assert (rows["size_bytes"] == scratch["size_bytes"]).all()


def test_caption_edits_need_no_decoding_and_move_splits_without_encoding(
        tmp_path, checkpoint, keyword_model, ray_local):
    archive, output, db = tmp_path / "archive", tmp_path / "ingest", tmp_path / "db"
    captions = {"a": ("a red bar slides to the right", "train"),
                "b": ("a bright stripe crosses a gradient", "train"),
                "c": ("colours fade behind a moving line", "test")}
    rows = [{"video_id": v, "uri": str(clip(archive, v, seed=i)), "caption": text,
             "split": split} for i, (v, (text, split)) in enumerate(captions.items())]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    source = {"manifest": str(manifest), "keyword_model": keyword_model}
    assert ingest_update(output, **source).captions == 3
    embed_update(output, checkpoint, db)

    rows[0]["caption"] = "a white bar sweeps across the frame"
    rows[1]["split"] = "test"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    update = ingest_update(output, **source)
    assert update.attempted == 0 and update.captions == 2 and update.version == 2
    stored = open_ingest(str(output)).dataset("captions").to_table().to_pandas()
    edited = stored.set_index("video_id").loc["a"]
    assert edited["caption"] == rows[0]["caption"] and len(edited["keywords"]) >= 1
    pinned = read_captions(open_ingest(str(output), 1), "train")  # what a job opened before
    assert "a red bar slides to the right" in pinned.column("caption").to_pylist()
    table = embed_update(output, checkpoint, db)
    assert table.embedded == 0 and table.deleted == 0
    splits = checked_table(db, output).set_index("video_id")["split"]
    assert splits.to_dict() == {"a": "train", "b": "test", "c": "test"}
    with pytest.raises(ValueError, match="holds the videos of split all, not of test"):
        embed_update(output, checkpoint, db, split="test")  # one table, one selection
    test_db = tmp_path / "test-db"  # --split: a table of one split's videos only
    assert embed_update(output, checkpoint, test_db, split="test").embedded == 2
    assert set(checked_table(test_db, output)["video_id"]) == {"b", "c"}
    assert table_state(open_table(test_db).to_lance()).split == "test"


def test_failed_videos_are_retried_and_a_refresh_of_only_failures_exits_non_zero(
        tmp_path, ray_local):
    archive, output = tmp_path / "archive", tmp_path / "ingest"
    clip(archive, "good", seed=1)
    (archive / "bad.mp4").write_text("not a video\n")
    base = ["--videos", str(archive), "--data", str(output), "--frame-size", "64", "--update"]
    assert ingest.main(base) == 0  # one of two failed: within --max-error-rate 1.0
    again = ingest_update(output, videos=str(archive))  # the same failure commits nothing
    assert (again.retried, again.failed, again.failed_again, again.version) == (1, 1, 1, None)
    assert ingest.main(base) == 0  # and fails no run: only new or changed videos can
    shutil.copy(clip(tmp_path / "spare", "fixed", seed=3), archive / "bad.mp4")
    fixed = ingest_update(output, videos=str(archive))
    assert (fixed.retried, fixed.failed) == (1, 0)
    assert open_ingest(str(output)).dataset("errors").count_rows() == 0
    assert open_ingest(str(output)).dataset("videos").count_rows() == 2
    (archive / "worse.mp4").write_bytes(b"")
    assert ingest.main(base) == 1  # every video tried failed


def test_refusals_name_the_problem_and_touch_nothing(tmp_path, checkpoint, capsys, ray_local):
    archive, output, db = tmp_path / "archive", tmp_path / "ingest", tmp_path / "db"
    clip(archive, "a", seed=1)
    base = ["--videos", str(archive), "--data", str(output), "--frame-size", "64"]
    assert ingest.main(base) == 0
    embed_update(output, checkpoint, db)

    def refused(argv: list[str], message: str) -> None:
        version = open_ingest(str(output)).version
        assert ingest.main(argv) == 2
        assert message in capsys.readouterr().err
        assert open_ingest(str(output)).version == version

    def frames_per_video(version: int | None = None) -> list[int]:
        videos = open_ingest(str(output), version).dataset("videos")
        return videos.to_table(columns=["num_frames"]).column(0).to_pylist()

    refused(base, "pass --update")
    refused([*base, "--update", "--fps", "2"], "other sampling or keyword settings")
    # --overwrite rebuilds with the new settings as the next version; readers of the
    # old one keep it
    assert ingest.main([*base, "--overwrite", "--fps", "2"]) == 0
    rebuilt = open_ingest(str(output))
    assert rebuilt.version == 2 and rebuilt.settings["sampling"]["fps"] == 2
    assert frames_per_video() == [2 * n for n in frames_per_video(1)]
    assert open_ingest(str(output), 1).settings["sampling"]["fps"] == 1
    base = [*base, "--fps", "2"]
    clip(archive, "dup", seed=2)
    shutil.copy(archive / "dup.mp4", archive / "dup.mkv")
    refused([*base, "--update"], "would both be video 'dup'")
    for path in archive.iterdir():
        path.unlink()
    refused([*base, "--update"], "--allow-empty")
    emptied = ingest_update(output, videos=str(archive), allow_empty=True, fps=2)
    assert emptied.deleted == 1 and embed_update(output, checkpoint, db).table_rows == 0

    legacy = tmp_path / "legacy"
    (legacy / "videos").mkdir(parents=True)
    (legacy / "_SUCCESS").write_text("")
    assert ingest.main(["--videos", str(tmp_path), "--data", str(legacy), "--update"]) == 2
    assert "format 1" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no committed ingest run"):
        open_ingest(str(tmp_path / "nothing"))


def test_a_new_checkpoint_rebuilds_the_table_with_one_commit(
        tmp_path, checkpoint, keyword_model, ray_local):
    archive, output, db = tmp_path / "archive", tmp_path / "ingest", tmp_path / "db"
    for i in range(3):
        clip(archive, f"c{i}", seed=i)
    ingest_update(output, videos=str(archive))
    embed_update(output, checkpoint, db)
    # another model and another layout: seqtransf has no local features, 4 frames not 8
    other = make_checkpoint(tmp_path / "b", seed=1, model="seqtransf", max_frames=4)
    # a search pinned to the version it opened, and one that follows new commits
    before = VideoSearch(str(db), "videos", str(checkpoint), keyword_model=keyword_model,
                         consistency_interval_s=None)
    following = VideoSearch(str(db), "videos", str(checkpoint), keyword_model=keyword_model,
                            consistency_interval_s=0)
    swapped = embed_update(output, other, db)  # a plain update with the new checkpoint
    assert swapped.rebuilt and swapped.embedded == 3 and swapped.table_rows == 3
    rows = checked_table(db, output)
    assert set(rows["model_id"]) == {checkpoint_id(other)}
    # no local features: 4 frames of vtr-tiny's 64, the frame features alone
    assert {len(f) for f in rows["rerank_features"]} == {4 * 64}
    # a non-lfemi checkpoint searches its table (no keyword model: it has no S3)
    found = VideoSearch(str(db), "videos", str(other)).search("a moving bar", k=3, candidates=3)
    assert sorted(found["video_id"]) == sorted(rows["video_id"])
    assert len(before.search("a moving bar", k=3, candidates=3)) == 3  # its version stays
    with pytest.raises(ModelMismatchError, match="re-run pipelines/embed.py"):
        following.search("a moving bar", k=3, candidates=3)  # sees the swap, refuses
    with pytest.raises(ModelMismatchError, match="re-run pipelines/embed.py"):
        VideoSearch(str(db), "videos", str(checkpoint), keyword_model=keyword_model)
    again = embed_update(output, other, db, update=False, overwrite=True)
    assert again.rebuilt and again.table_rows == 3


def test_refresh_job_on_s3(tmp_path, checkpoint, s3_bucket, ray_local, capsys):
    import s3fs

    s3 = s3fs.S3FileSystem()
    prefix = f"{s3_bucket}/refresh"
    for i in range(3):
        s3.put_file(str(clip(tmp_path / "clips", f"c{i}", seed=i)), f"{prefix}/archive/c{i}.mp4")
    flags = ["--videos", f"s3://{prefix}/archive/", "--data", f"s3://{prefix}/ingest",
             "--db", f"s3://{prefix}/db", "--checkpoint", str(checkpoint), "--frame-size", "64",
             "--batch-size", "8"]
    assert refresh.main(flags) == 0
    assert "3 added" in capsys.readouterr().out
    s3.rm(f"{prefix}/archive/c0.mp4")
    s3.put_file(str(clip(tmp_path / "clips", "c1-new", seed=50)), f"{prefix}/archive/c1.mp4")
    s3.put_file(str(clip(tmp_path / "clips", "c3", seed=3)), f"{prefix}/archive/c3.mp4")
    assert refresh.main(flags) == 0
    out = capsys.readouterr().out
    assert ("videos 1 added, 1 changed, 1 deleted, 1 skipped, 0 failed; "
            "table: 2 embedded, 1 deleted, 1 skipped") in out
    assert refresh.main(flags) == 0
    assert "table: 0 embedded, 0 deleted, 3 skipped" in capsys.readouterr().out
    rows = checked_table(f"s3://{prefix}/db", f"s3://{prefix}/ingest")
    assert sorted(rows["video_id"]) == ["c1", "c2", "c3"]
    unlisted = ["--videos", "s3://no-such-bucket/clips/", "--data", str(tmp_path / "never")]
    assert ingest.main(unlisted) == 2
    assert "cannot list it" in capsys.readouterr().err and not (tmp_path / "never").exists()


def test_a_changed_video_that_fails_to_embed_loses_its_old_row_and_is_retried(
        tmp_path, checkpoint, ray_local):
    archive, output, db = tmp_path / "archive", tmp_path / "ingest", tmp_path / "db"
    for i in range(3):
        clip(archive, f"c{i}", seed=i)
    ingest_update(output, videos=str(archive))
    embed_update(output, checkpoint, db)
    # a later run re-decoded c0 into frames the embedder cannot read
    store = IngestStore(str(output))
    latest = store.latest()
    row = store.delta("videos").to_pyarrow_dataset().to_table(
        filter=pads.field("video_id") == "c0").to_pylist()[0]
    row.update(frames=[b"not a jpeg"], ingest_version=latest.version + 1)
    write_deltalake(str(output / "videos"), pa.Table.from_pylist([row], schema=VIDEOS),
                    mode="overwrite", predicate="video_id = 'c0'")
    store.commit(IngestVersion(latest.version + 1, {**latest.tables, "videos": store.delta(
        "videos").version()}, latest.settings))
    for _ in range(2):  # and again: a video missing from the table is tried every run
        table = embed_update(output, checkpoint, db)
        assert (table.embedded, table.failed) == (0, 1)
        assert sorted(checked_table(db, output)["video_id"]) == ["c1", "c2"]


def test_the_table_state_survives_the_cleanup_of_old_versions(tmp_path, checkpoint, ray_local):
    archive, output, db = tmp_path / "archive", tmp_path / "ingest", tmp_path / "db"
    clip(archive, "c0", seed=0)
    ingest_update(output, videos=str(archive))
    embed_update(output, checkpoint, db)
    recorded = table_state(open_table(db).to_lance())
    # the cleanup LanceDB's optimize runs, as it would a week later: every old version goes
    open_table(db).optimize(cleanup_older_than=datetime.timedelta(0))
    assert len(open_table(db).to_lance().versions()) == 1
    assert table_state(open_table(db).to_lance()) == recorded
    assert embed_update(output, checkpoint, db).unchanged == 1  # updates go on

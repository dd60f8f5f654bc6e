"""Refresh jobs killed with SIGKILL at every stage, driver and Ray processes together.

After each kill, readers see the last committed state (the ingest run the log
names; the table's rows of the run it names); the next refresh completes the
work with no lost videos, no duplicates and no orphaned rows.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import psutil
import pytest
from conftest import REPO, make_checkpoint, run
from test_refresh import checked_table, clip, open_table

from pipelines.index.table import table_state
from pipelines.ingestion.output import open_ingest

pytestmark = pytest.mark.slow


def kill_at(failpoint: str, args: list[str]) -> list[str]:
    """Run the refresh job until it reaches ``failpoint``, then SIGKILL its whole process
    tree (the driver, the local Ray's raylet and GCS, every worker); returns its output."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(VTR_FAILPOINT=failpoint, PYTHONUNBUFFERED="1")
    job = subprocess.Popen([sys.executable, "pipelines/refresh.py", *args], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(600, job.kill)
    watchdog.start()
    lines = []
    for line in job.stdout:
        lines.append(line)
        if f"failpoint {failpoint} reached" in line:
            break
    watchdog.cancel()
    assert job.poll() is None, f"the job ended before {failpoint}:\n{''.join(lines[-40:])}"
    tree = psutil.Process(job.pid)
    for process in [tree, *tree.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    job.wait(timeout=60)
    job.stdout.close()
    return lines


def write_manifest(path: Path, archive: Path, edited: dict[str, str]) -> None:
    """One caption per video file of ``archive`` (``edited`` replaces some texts)."""
    rows = [{"video_id": p.stem, "uri": str(p), "split": "train",
             "caption": edited.get(p.stem, f"a white bar crosses colour field {p.stem}")}
            for p in sorted(archive.iterdir())]
    pd.DataFrame(rows).to_csv(path, index=False)


def good_ids(archive: Path) -> list[str]:
    return sorted(p.stem for p in archive.iterdir() if p.stem != "bad")


def caption_of(output: Path, video_id: str) -> list[str]:
    captions = open_ingest(str(output)).dataset("captions").to_table().to_pandas()
    return captions[captions["video_id"] == video_id]["caption"].tolist()


def test_a_refresh_killed_anywhere_is_completed_by_the_next(tmp_path, keyword_model):
    archive, output, db = tmp_path / "archive", tmp_path / "ingest", tmp_path / "db"
    manifest = tmp_path / "manifest.csv"
    for i in range(6):
        clip(archive, f"c{i}", seed=i)
    (archive / "bad.mp4").write_text("not a video\n")  # fails, and is retried, every run
    write_manifest(manifest, archive, {})
    checkpoint = make_checkpoint(tmp_path / "ckpt", seed=0)
    args = ["--manifest", str(manifest), "--data", str(output), "--checkpoint",
            str(checkpoint), "--db", str(db), "--frame-size", "64", "--batch-size", "2",
            "--keyword-model", keyword_model,
            "--local-max-videos", "0"]  # decode and embed in Ray actors: kill those too
    first = run(["pipelines/refresh.py", *args])
    assert first.returncode == 0, first.stderr[-3000:]
    committed = good_ids(archive)

    for i in (6, 7):
        clip(archive, f"c{i}", seed=i)
    clip(archive, "c0", seed=100)  # modified in place
    (archive / "c1.mp4").unlink()
    edit = "a white bar sweeps to the right"
    write_manifest(manifest, archive, {"c2": edit})
    for failpoint, ingest_committed in (
            ("ingest.decode", False), ("ingest.captions", False), ("ingest.commit", False),
            ("refresh.between", True), ("embed.rows", True)):
        lines = kill_at(failpoint, args)
        if failpoint == "refresh.between":  # the run after the kill between commits and log
            done_line = next(line for line in lines if "ingest done:" in line)
            assert "version 2 committed" in done_line and "0 decoded ok" in done_line, (
                done_line)  # built on the killed run's table versions: nothing decoded again
        snapshot = open_ingest(str(output))
        videos = snapshot.dataset("videos").to_table(columns=["video_id"]).column(0)
        assert snapshot.version == (2 if ingest_committed else 1), failpoint
        assert sorted(videos.to_pylist()) == (good_ids(archive) if ingest_committed
                                              else committed), failpoint
        assert (caption_of(output, "c2") == [edit]) == ingest_committed, failpoint
        assert caption_of(output, "c1") == ([] if ingest_committed else [
            "a white bar crosses colour field c1"]), failpoint
        rows = checked_table(db, output)  # the table still holds the first run, whole
        assert sorted(rows["video_id"]) == committed, failpoint

    done = run(["pipelines/refresh.py", *args])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "table: 3 embedded, 1 deleted, 4 skipped" in done.stdout  # c0, c6, c7; c1
    rows = checked_table(db, output)
    assert sorted(rows["video_id"]) == good_ids(archive)
    assert table_state(open_table(db).to_lance()).ingest_version == 2
    snapshot = open_ingest(str(output))
    assert snapshot.dataset("errors").to_table().column("video_id").to_pylist() == ["bad"]
    captions = snapshot.dataset("captions").to_table(columns=["video_id"]).column(0)
    assert sorted(captions.to_pylist()) == good_ids(archive)

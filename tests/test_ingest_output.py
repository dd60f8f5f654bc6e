"""The ingest output's commit: one run's log file per version, created exclusively."""

from __future__ import annotations

import uuid

import pytest

from pipelines.ingestion.output import IngestStore, IngestVersion


@pytest.mark.parametrize("where", ["local", "s3"])
def test_of_two_runs_committing_one_version_one_wins(where, tmp_path, request, monkeypatch):
    if where == "local":
        output = str(tmp_path / "output")
    else:
        output = f"s3://{request.getfixturevalue('s3_bucket')}/race-{uuid.uuid4().hex}"
    first, second = IngestStore(output), IngestStore(output)
    # both runs looked for version 1 before either wrote it: only the write can tell them apart
    monkeypatch.setattr(second.fs, "exists", lambda *args, **kwargs: False)
    first.commit(IngestVersion(1, {"videos": 0}, changes={"run": "first"}))
    with pytest.raises(RuntimeError, match="committed by another run meanwhile"):
        second.commit(IngestVersion(1, {"videos": 0}, changes={"run": "second"}))
    monkeypatch.undo()
    reader = IngestStore(output)
    assert reader.record(1).changes == {"run": "first"}  # the winner's file, whole
    assert [p.rsplit("/", 1)[-1] for p in reader.fs.ls(reader.log_path, detail=False)] == [
        f"{1:020d}.json"]  # no temporary file left behind

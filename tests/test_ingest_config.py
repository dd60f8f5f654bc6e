"""The ingest job's exit code, its --max-error-rate check, and the output formats it
refuses: pure unit tests (no Ray, no decoding)."""

from __future__ import annotations

import json

import pytest

from pipelines import ingest
from pipelines.core.job_config import parse_config
from pipelines.ingest import IngestConfig, IngestSummary, exit_code
from pipelines.ingestion.output import (
    LOG_FOLDER,
    IngestFormatError,
    IngestStore,
    IngestVersion,
    open_ingest,
)


def summary(added=0, changed=0, retried=0, failed=0, failed_again=0) -> IngestSummary:
    return IngestSummary(version=1, added=added, changed=changed, retried=retried, deleted=0,
                         unchanged=5, failed=failed, failed_again=failed_again, captions=0,
                         frames=0, wall_s=1.0)


def config(tmp_path, max_error_rate: float) -> IngestConfig:
    return IngestConfig(data=str(tmp_path / "out"), videos=str(tmp_path),
                        max_error_rate=max_error_rate)


@pytest.mark.parametrize("rate, counts, code", [
    # the rate: failed / tried (added + changed + retried), exit 1 only when above
    (0.5, {"added": 2, "failed": 1}, 0),  # exactly at the threshold
    (0.5, {"added": 3, "failed": 2}, 1),  # just above
    (0.0, {"added": 2, "failed": 1}, 1),  # 0.0: any failure
    (0.0, {"added": 2}, 0),
    (0.0, {}, 0),  # nothing tried (every video unchanged)
    (1.0, {"added": 2, "failed": 1}, 0),  # the default: only every-video-failed exits 1
    # every new or changed video failed: exit 1 whatever --max-error-rate says
    (1.0, {"added": 1, "failed": 1}, 1),
    (1.0, {"changed": 2, "failed": 2}, 1),
    (1.0, {"added": 1, "retried": 1, "failed": 2, "failed_again": 1}, 1),
    (1.0, {"added": 1, "retried": 1, "failed": 1}, 1),  # the retried one was fixed
    # a video that fails again unchanged fails no run on its own ...
    (1.0, {"retried": 1, "failed": 1, "failed_again": 1}, 0),
    (1.0, {"added": 1, "retried": 1, "failed": 1, "failed_again": 1}, 0),
    # ... but retried videos count in the rate, tried and failed
    (0.5, {"added": 1, "retried": 2, "failed": 2, "failed_again": 2}, 1),
    (0.5, {"added": 1, "retried": 1, "failed": 1, "failed_again": 1}, 0),
])
def test_exit_code_at_the_max_error_rate_boundaries(tmp_path, capsys, rate, counts, code):
    cfg = config(tmp_path, rate)
    assert exit_code(summary(**counts), cfg) == code
    err = capsys.readouterr().err
    if code:
        tried = sum(counts.get(k, 0) for k in ("added", "changed", "retried"))
        assert f"{counts['failed']} of the {tried} videos tried failed" in err
        assert f"see {cfg.data}/errors" in err
    else:
        assert err == ""


@pytest.mark.parametrize("rate", [1.5, -0.1, float("nan")])
def test_an_out_of_range_max_error_rate_is_refused(tmp_path, capsys, rate):
    with pytest.raises(ValueError, match="--max-error-rate must be between 0 and 1"):
        config(tmp_path, rate)
    with pytest.raises(SystemExit) as excinfo:  # on the command line: one line, exit 2
        parse_config(IngestConfig, "x", ["--videos", str(tmp_path), "--data", "o",
                                         "--max-error-rate", str(rate)])
    assert excinfo.value.code == 2
    assert "--max-error-rate must be between 0 and 1" in capsys.readouterr().err


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_the_max_error_rate_range_includes_its_ends(tmp_path, rate):
    assert config(tmp_path, rate).max_error_rate == rate


def test_bad_flags_end_the_job_with_exit_2_before_ray(capsys):
    with pytest.raises(SystemExit) as excinfo:
        ingest.main(["--data", "o"])  # neither --manifest nor --videos
    assert excinfo.value.code == 2
    assert "exactly one of --manifest or --videos" in capsys.readouterr().err


def test_a_format_1_output_is_refused_and_left_alone(tmp_path):
    legacy = tmp_path / "legacy"  # as the job wrote it before the Delta tables
    (legacy / "videos").mkdir(parents=True)
    (legacy / "videos" / "part-0.parquet").write_bytes(b"PAR1")
    (legacy / "_SUCCESS").write_text("")
    before = sorted(p.relative_to(legacy) for p in legacy.rglob("*"))
    with pytest.raises(IngestFormatError, match="format 1.*new --data.*--overwrite"):
        open_ingest(str(legacy))
    with pytest.raises(IngestFormatError, match="format 1"):
        IngestStore(str(legacy)).latest()
    assert sorted(p.relative_to(legacy) for p in legacy.rglob("*")) == before


def _committed(output) -> str:
    """An output whose run log holds one format-2 record (the tables are not needed to
    read the log)."""
    IngestStore(str(output)).commit(
        IngestVersion(1, {"videos": 0, "captions": 0, "errors": 0}))
    return str(output / LOG_FOLDER / f"{1:020d}.json")


def test_a_run_log_of_this_format_is_read(tmp_path):
    _committed(tmp_path)
    assert open_ingest(str(tmp_path)).version == 1
    assert open_ingest(str(tmp_path), version=1).record.tables["videos"] == 0


@pytest.mark.parametrize("value", [1, 3, None])
def test_a_run_log_record_of_another_format_is_refused(tmp_path, value):
    path = _committed(tmp_path)
    with open(path) as f:
        record = json.load(f)
    if value is None:
        del record["format"]
    else:
        record["format"] = value
    with open(path, "w") as f:
        json.dump(record, f)
    message = f"written by ingest format {value}, and this version reads format 2"
    with pytest.raises(IngestFormatError, match=message):
        open_ingest(str(tmp_path))
    with pytest.raises(IngestFormatError, match=message):
        open_ingest(str(tmp_path), version=1)

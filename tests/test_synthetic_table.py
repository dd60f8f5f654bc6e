"""benchmarks/synthetic_table.py: a run's name is the model its train job builds."""

from __future__ import annotations

import re

import pytest

from pipelines.core.job_config import parse_config
from pipelines.train import TrainConfig


@pytest.fixture
def table(benchmark):
    return benchmark("synthetic_table")


def job(table, tmp_path, name: str) -> TrainConfig:
    """The train job's config for run ``name``, as the table launches it."""
    return parse_config(TrainConfig, "", ["--data", str(tmp_path), "--checkpoint",
                                          str(tmp_path / "out"), *table.run_flags(name)])


def test_a_run_name_says_what_it_changes_from_the_defaults(table, tmp_path) -> None:
    """``-PART`` and ``+PART`` switch parts off and on, the other words name flag sets;
    a model's name alone is the job at its defaults."""
    full = job(table, tmp_path, "lfemi")
    assert full.augment_shift == 0 and full.disabled_parts == full.enabled_parts == []
    assert (full.model, full.hard_negatives) == ("lfemi", 0)
    run = job(table, tmp_path, "lfemi -motion +shift -temporal +mined_negatives +spatial")
    assert run.disabled_parts == ["motion", "temporal"] and run.enabled_parts == ["spatial"]
    assert (run.augment_shift, run.hard_negatives, run.hard_negatives_by) == (
        0.15, 5, "videos")
    assert job(table, tmp_path, "meanp").model == "meanp"
    assert job(table, tmp_path, "meanp +motion").enabled_parts == ["motion"]
    for name in table.DEFAULT_RUNS:  # every run the table makes by default is a valid job
        job(table, tmp_path, name)


@pytest.mark.parametrize("name, word", [("lfemi +colour", "'+colour'"),
                                        ("clip4clip", "'clip4clip' is not a model")])
def test_a_name_it_cannot_read_is_refused(table, name, word) -> None:
    with pytest.raises(ValueError, match=re.escape(word)):
        table.run_flags(name)

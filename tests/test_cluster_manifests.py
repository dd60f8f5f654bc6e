"""The cluster manifests parse, and the refresh they schedule takes every flag they pass."""

from __future__ import annotations

import shlex

import yaml
from conftest import REPO

from pipelines.job_config import parse_config
from pipelines.refresh import RefreshConfig


def refresh_flags(argv: list[str]) -> list[str]:
    start = next(i for i, arg in enumerate(argv) if arg.endswith("pipelines/refresh.py"))
    return argv[start + 1:]


def test_cronjob_and_rayjob_run_refresh_with_valid_flags():
    cron = yaml.safe_load((REPO / "cluster" / "refresh-cronjob.yaml").read_text())
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    rayjob = yaml.safe_load((REPO / "cluster" / "refresh-rayjob.yaml").read_text())
    assert cron["kind"] == "CronJob" and rayjob["kind"] == "RayJob"
    for argv in (container["command"], shlex.split(rayjob["spec"]["entrypoint"])):
        config = parse_config(RefreshConfig, "refresh", refresh_flags(argv))
        assert config.ingest.update and config.embed.update
        assert config.ingest.videos == "s3://bucket/clips/"
        assert config.ingest.output == "s3://bucket/ingest/"
        assert config.embed.data == "s3://bucket/ingest"  # one spelling in the table state

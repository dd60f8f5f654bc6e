"""Config dataclasses filled from flags and YAML/JSON files."""

from __future__ import annotations

import json
import os

import pytest

from pipelines.ingest import IngestConfig
from pipelines.job_config import build_parser, parse_config


def test_flags_fill_the_dataclass():
    cfg = parse_config(IngestConfig, "x", ["--manifest", "m.csv", "--output", "o", "--fps", "2",
                                          "--no-keyword-mmr", "--overwrite"])
    assert (cfg.manifest, cfg.output, cfg.fps, cfg.keyword_mmr, cfg.overwrite) == (
        "m.csv", os.path.abspath("o"), 2.0, False, True)  # Ray workers need absolute paths
    assert cfg.max_frames == 12 and cfg.frame_size == 224


def test_config_file_then_flags_override(tmp_path):
    path = tmp_path / "ingest.json"
    path.write_text(json.dumps({"manifest": "m.csv", "output": "o", "max-frames": 8, "fps": 3}))
    cfg = parse_config(IngestConfig, "x", ["--config", str(path), "--fps", "0.5"])
    assert (cfg.max_frames, cfg.fps, cfg.output) == (8, 0.5, os.path.abspath("o"))


def test_yaml_config_and_unknown_key(tmp_path, capsys):
    path = tmp_path / "ingest.yaml"
    path.write_text("manifest: m.csv\noutput: o\nframe_rate: 3\n")
    with pytest.raises(SystemExit):
        parse_config(IngestConfig, "x", ["--config", str(path)])
    assert "unknown setting(s)" in capsys.readouterr().err


def test_required_and_invalid_settings(capsys):
    with pytest.raises(SystemExit):
        parse_config(IngestConfig, "x", ["--manifest", "m.csv"])
    assert "--output" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(IngestConfig, "x", ["--output", "o"])
    assert "exactly one of --manifest or --videos" in capsys.readouterr().err


def test_help_documents_every_field():
    text = build_parser(IngestConfig, "x").format_help()
    for flag in ["--manifest", "--videos", "--fps", "--max-frames", "--frame-size",
                 "--keyword-model", "--num-keywords", "--keyword-ngram", "--max-error-rate",
                 "--decode-concurrency", "--keyword-concurrency", "--overwrite"]:
        assert flag in text

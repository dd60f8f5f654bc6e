"""Config dataclasses filled from flags and YAML/JSON files."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

from pipelines.core.job_config import build_parser, parse_config
from pipelines.embed import EmbedConfig
from pipelines.ingest import IngestConfig


def test_flags_fill_the_dataclass():
    cfg = parse_config(IngestConfig, "x", ["--manifest", "m.csv", "--data", "o", "--fps", "2",
                                          "--no-keyword-mmr", "--overwrite"])
    assert (cfg.manifest, cfg.data, cfg.fps, cfg.keyword_mmr, cfg.overwrite) == (
        "m.csv", os.path.abspath("o"), 2.0, False, True)  # Ray workers need absolute paths
    assert cfg.max_frames == 12 and cfg.frame_size == 224


def test_config_file_then_flags_override(tmp_path):
    path = tmp_path / "ingest.json"
    path.write_text(json.dumps({"manifest": "m.csv", "output": "o", "max-frames": 8, "fps": 3}))
    cfg = parse_config(IngestConfig, "x", ["--config", str(path), "--fps", "0.5"])
    assert (cfg.max_frames, cfg.fps, cfg.data) == (8, 0.5, os.path.abspath("o"))


def test_yaml_config_and_unknown_key(tmp_path, capsys):
    path = tmp_path / "ingest.yaml"
    path.write_text("manifest: m.csv\noutput: o\nframe_rate: 3\n")
    with pytest.raises(SystemExit) as excinfo:
        parse_config(IngestConfig, "x", ["--config", str(path)])
    assert excinfo.value.code == 2
    assert f"unknown setting(s) in {path}: frame_rate" in capsys.readouterr().err


def test_required_and_invalid_settings(capsys):
    with pytest.raises(SystemExit) as excinfo:
        parse_config(IngestConfig, "x", ["--manifest", "m.csv"])
    assert excinfo.value.code == 2
    assert "the following arguments are required: --data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as excinfo:
        parse_config(IngestConfig, "x", ["--data", "o"])
    assert excinfo.value.code == 2
    assert "exactly one of --manifest or --videos" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--fps", "ten"], "argument --fps: invalid float value: 'ten'"),
    (["--frame-rate", "3"], "unrecognized arguments: --frame-rate 3"),
    (["--manifest-format", "webvid"], "argument --manifest-format: invalid choice: 'webvid'"),
    (["--fps", "0"], "--fps must be > 0"),
])
def test_a_bad_flag_exits_2_in_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as excinfo:
        parse_config(IngestConfig, "x", ["--manifest", "m.csv", "--data", "o", *argv])
    err = capsys.readouterr().err
    assert excinfo.value.code == 2 and message in err and "Traceback" not in err


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as excinfo:
        parse_config(IngestConfig, "x", ["--help"])
    assert excinfo.value.code == 0 and "--max-error-rate" in capsys.readouterr().out


def test_help_documents_every_field():
    text = build_parser(IngestConfig, "x").format_help()
    for flag in ["--manifest", "--videos", "--fps", "--max-frames", "--frame-size",
                 "--keyword-model", "--num-keywords", "--keyword-ngram", "--max-error-rate",
                 "--decode-workers", "--keyword-workers", "--overwrite"]:
        assert flag in text


def test_help_lists_required_flags_apart_with_choices_and_examples():
    import pipelines.embed

    text = build_parser(EmbedConfig, pipelines.embed.__doc__).format_help()
    assert text.splitlines()[0].endswith(" --data DATA --checkpoint CHECKPOINT --db DB [options]")
    required = text[text.index("required:"):text.index("vtr embed --data")]
    assert "--data" in required and "--db" in required and "--checkpoint" in required
    assert "--table" not in required  # optional, with its default
    assert "{IVF_PQ,HNSW_SQ,HNSW_FLAT}" in text  # the choices shown
    assert "    vtr embed --data" in text  # the docstring's usage example


@pytest.mark.parametrize("job", ["ingest", "train", "embed", "query", "evaluate", "refresh"])
def test_each_jobs_help_keeps_its_usage_examples(job, capsys):
    """What a user sees: the job's own ``main``, not the parser alone (each ``main`` once
    passed only the docstring's first line, dropping its examples). The examples read as
    written in the source, line continuations and indentation kept (a docstring that is
    not raw once turned each backslash-newline into a run of spaces), with no markup."""
    module = importlib.import_module(f"pipelines.{job}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert f"    vtr {job} --" in out and "required:" in out
    source = Path(module.__file__).read_text().split('"""')[1]
    examples = [line for line in source.splitlines() if line.startswith("    ")]
    assert any(line.endswith("\\") for line in examples)  # a continued example line
    for line in examples:
        assert line in out.splitlines(), line
    assert "``" not in out and ":class:" not in out and ":func:" not in out


@pytest.mark.parametrize("content, message", [
    ("manifest: m.csv\noutput: o\nmax_frames: ten\n", "max_frames: expected int, got str"),
    ("manifest: m.csv\noutput: o\nfps: [1, 2]\n", "fps: expected float, got list"),
    ("manifest: m.csv\noutput: o\nkeyword_mmr: 3\n", "keyword_mmr: expected bool, got int"),
    ("manifest: [unclosed\n", "config file"),
])
def test_a_bad_config_file_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "ingest.yaml"
    path.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        parse_config(IngestConfig, "x", ["--config", str(path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        parse_config(IngestConfig, "x", ["--config", str(tmp_path / "missing.yaml")])
    assert exit_info.value.code == 2
    assert "missing.yaml: No such file or directory" in capsys.readouterr().err


def test_an_int_is_a_valid_float_setting(tmp_path):
    path = tmp_path / "ingest.yaml"
    path.write_text("manifest: m.csv\noutput: o\nfps: 2\nmax_frames: 8\n")
    cfg = parse_config(IngestConfig, "x", ["--config", str(path)])
    assert (cfg.fps, cfg.max_frames) == (2, 8)

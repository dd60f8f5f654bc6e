"""The ``vtr`` command, one name per setting across jobs (old names as aliases), and the
``--device`` setting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines import cli
from pipelines.core.devices import cluster_device, resolve_device
from pipelines.core.job_config import build_parser, parse_config
from pipelines.embed import EmbedConfig
from pipelines.train import TrainConfig

VTR = Path(sys.executable).parent / "vtr"  # installed by pip with the project


def test_the_installed_command_lists_every_job_and_runs_one():
    listing = subprocess.run([str(VTR), "--help"], capture_output=True, text=True, check=True)
    for job in cli.JOBS:
        assert f"\n  {job} " in listing.stdout, job
    shown = subprocess.run([str(VTR), "query", "--help"], capture_output=True, text=True,
                           check=True).stdout
    assert shown.startswith("usage: vtr query --db DB --checkpoint CHECKPOINT --text TEXT")
    wrong = subprocess.run([str(VTR), "ingets"], capture_output=True, text=True)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines() == [
        f"vtr: error: unknown job 'ingets'; choose from {', '.join(cli.JOBS)}"]


@pytest.mark.parametrize("job", [j for j in cli.JOBS if j != "serve"])
def test_each_subcommand_is_the_jobs_own_parser(job, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([job, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: vtr {job}")
    module = __import__(cli.JOBS[job][0], fromlist=["main"])
    with pytest.raises(SystemExit):  # the same flags as the script's own --help
        module.main(["--help"])
    assert capsys.readouterr().out.split("\n\n", 1)[1] == out.split("\n\n", 1)[1]


def test_ingest_usage_shows_its_one_required_choice(capsys):
    with pytest.raises(SystemExit):
        cli.main(["ingest", "--help"])
    first = capsys.readouterr().out.splitlines()[0]
    assert first == ("usage: vtr ingest --data DATA (--manifest MANIFEST | --videos VIDEOS) "
                     "[options]")


def test_serve_help_lists_every_application_argument(capsys):
    from pipelines.serve import SearchArgs

    assert cli.main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for name in SearchArgs.model_fields:
        assert f"  {name}=" in out, name
    assert "db=...  LanceDB database" in out and "(required)" in out


def test_old_flag_names_still_work_with_one_deprecation_line(tmp_path, capsys):
    config = parse_config(TrainConfig, "x", [
        "--data", "d", "--output", str(tmp_path / "run"), "--num-workers", "2", "--use-gpu",
        "--batch-size", "32"])
    assert (config.checkpoint, config.workers, config.device) == (
        str(tmp_path / "run"), 2, "cuda")
    notes = [line.split(": ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert notes == ["note: --num-workers is deprecated; use --workers",
                     "note: --output is deprecated; use --checkpoint",
                     "note: --use-gpu is deprecated; use --device cuda"]
    settings = tmp_path / "embed.json"
    settings.write_text(json.dumps({"data": "d", "checkpoint": "c", "db": "db",
                                    "concurrency": 3, "num_gpus_per_worker": 0.5}))
    config = parse_config(EmbedConfig, "x", ["--config", str(settings)])
    assert (config.workers, config.gpus_per_worker, config.device) == (3, 0.5, "auto")
    assert len(capsys.readouterr().err.splitlines()) == 2
    config = parse_config(TrainConfig, "x", ["--data", "d", "--checkpoint", "c"])
    assert config.device == "auto" and capsys.readouterr().err == ""  # new names: no note
    config = parse_config(TrainConfig, "x", ["--data", "d", "--checkpoint", "c",
                                             "--no-use-gpu"])
    assert config.device == "cpu"
    shown = build_parser(TrainConfig, "x").format_help()
    assert "--workers" in shown and not {"--output", "--num-workers", "--use-gpu"} & set(
        shown.split())  # --help teaches the new names only


@pytest.mark.parametrize("argv, error", [
    (["--out", "o"], "unrecognized arguments: --out o"),  # no abbreviations, old or new
    (["--checkpoint-e", "2"], "unrecognized arguments"),
    (["--output", "o"], "given under two names: --checkpoint (--checkpoint and --output)"),
    (["--use-gpu", "--device", "cpu"], "given under two names: --device"),
])
def test_abbreviations_and_one_setting_under_two_names_are_refused(argv, error, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(TrainConfig, "x", ["--data", "d", "--checkpoint", "c", *argv])
    assert exit_info.value.code == 2
    assert error in capsys.readouterr().err


@pytest.mark.parametrize("settings, error", [
    ({"device": "gpu"}, "device: 'gpu' is not one of auto, cpu, cuda"),
    ({"use_gpu": "no"}, "use_gpu: expected true or false, got 'no'"),
])
def test_a_config_files_values_are_checked_as_flags_are(settings, error, tmp_path, capsys):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"data": "d", "checkpoint": "c", **settings}))
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, "x", ["--config", str(path)])
    assert error in capsys.readouterr().err


def test_refresh_takes_the_old_names_of_both_steps(tmp_path, capsys):
    from pipelines.refresh import RefreshConfig

    config = parse_config(RefreshConfig, "x", [
        "--videos", str(tmp_path), "--output", str(tmp_path / "ingest"), "--checkpoint", "c",
        "--db", "db", "--concurrency", "2", "--decode-concurrency", "3"])
    assert config.ingest.data == config.embed.data == str(tmp_path / "ingest")
    assert (config.embed.workers, config.ingest.decode_workers) == (2, 3)
    assert len(capsys.readouterr().err.splitlines()) == 3


def test_ray_jobs_take_the_gpus_the_cluster_has_or_stop():
    assert cluster_device("auto", cluster_gpus=0, gpus_needed=2) == "cpu"
    assert cluster_device("auto", cluster_gpus=4, gpus_needed=2) == "cuda"
    assert cluster_device("cpu", cluster_gpus=4, gpus_needed=2) == "cpu"
    with pytest.raises(ValueError, match="need 2 GPU.*has 1"):
        cluster_device("cuda", cluster_gpus=1, gpus_needed=2)
    embed = EmbedConfig(data="d", checkpoint="c", db="db")
    on_gpus = embed.on_cluster(cluster_gpus=4)
    assert (on_gpus.device, on_gpus.gpus_per_worker) == ("cuda", 1.0)
    assert embed.on_cluster(cluster_gpus=0).device == "cpu"
    shared = EmbedConfig(data="d", checkpoint="c", db="db", gpus_per_worker=0.5)
    assert shared.on_cluster(cluster_gpus=1).gpus_per_worker == 0.5
    with pytest.raises(ValueError, match="needs --device cuda or auto"):
        EmbedConfig(data="d", checkpoint="c", db="db", device="cpu", gpus_per_worker=1)


def test_device_names_resolve_or_stop_with_one_line():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="--device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            resolve_device("cuda")


def test_vtr_serve_is_serve_run_of_the_search_app(monkeypatch):
    from ray.serve import scripts

    calls = []
    monkeypatch.setattr(scripts.cli, "main", lambda args, prog_name: calls.append(args))
    assert cli.main(["serve", "--non-blocking", "db=lancedb/", "checkpoint=ckpt/"]) == 0
    assert cli.main(["serve", "cluster/serve-search.yaml"]) == 0
    assert cli.main(["serve", "--runtime-env-json", '{"env_vars": {"A": "x=y"}}',
                     "db=s3://b/db?region=x", "device=cpu"]) == 0
    assert calls == [["run", "--non-blocking", cli.SERVE_APP, "db=lancedb/", "checkpoint=ckpt/"],
                     ["run", "cluster/serve-search.yaml"],
                     ["run", "--runtime-env-json", '{"env_vars": {"A": "x=y"}}', cli.SERVE_APP,
                      "db=s3://b/db?region=x", "device=cpu"]]

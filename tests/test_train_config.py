"""The train job's settings and errors, without Ray: the ``--lr-clip`` default, the warm-up
schedule, ``--model``/``--disable``, an ingest output with no committed run, and an
exhausted ``--max-failures``.

``job`` runs ``train.main`` up to ``trainer.fit()`` with Ray Train's ``TorchTrainer``
replaced by a stand-in that records what the job gives it, so these tests see the very
settings a run would send its workers.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray.train
import ray.train.torch
import torch

from pipelines import train
from pipelines.core.job_config import parse_config
from pipelines.ingestion.output import IngestStore, IngestVersion
from pipelines.train import PARTS, TrainConfig
from pipelines.training.loop import cosine_with_warmup
from vtr_models import ModelConfig, create_model


def committed(folder: Path, settings: dict) -> str:
    """An ingest output whose one committed run records ``settings`` (no tables)."""
    IngestStore(str(folder)).commit(IngestVersion(1, {}, settings))
    return str(folder)


def config(tmp_path: Path, **flags) -> TrainConfig:
    return TrainConfig(data=str(tmp_path / "data"), checkpoint=str(tmp_path / "out"), **flags)


def job_model(c: TrainConfig) -> ModelConfig:
    """The model config the job builds from its flags, as ``run_training`` does."""
    return ModelConfig.from_dict({"name": c.model, **c.model_overrides})


def worker_failure() -> Exception:
    """What Ray Train's ``fit()`` raises once a worker group failed more than
    ``--max-failures`` times: a message of several lines with the workers' tracebacks."""
    return ray.train.WorkerGroupError(
        "[Rank 1 Error Snippet]:\nTraceback (most recent call last):\n  File \"loop.py\"\n"
        "RuntimeError: worker lost", {1: RuntimeError("node lost\nmore"),
                                      0: RuntimeError("worker lost\nmore")})


@pytest.fixture
def job(tmp_path, monkeypatch):
    """``job.run(*flags, error=...)`` runs ``train.main`` on a committed ingest output with
    no Ray: joining Ray does nothing, the captions and the dataset are stand-ins,
    and the trainer records its arguments (``job.trainer``) and raises ``error`` from fit."""
    data = committed(tmp_path / "data", {"sampling": {"max_frames": 6}})
    trainer: dict = {}
    fit_error: list[Exception] = []

    class Trainer:
        def __init__(self, loop, **kwargs) -> None:
            trainer.clear()
            trainer.update(kwargs, loop=loop)

        def fit(self):
            raise fit_error[-1]

    monkeypatch.setattr(train, "join_ray", lambda config: config)
    monkeypatch.setattr(train, "quiet_ray_data", lambda: None)
    monkeypatch.setattr(train, "read_captions",
                        lambda snapshot, split: SimpleNamespace(num_rows=16))
    monkeypatch.setattr(train, "training_data", lambda *args: ("train pairs", True))
    monkeypatch.setattr(ray.train.torch, "TorchTrainer", Trainer)
    cluster = {"CPU": 2.0}  # what ray.cluster_resources() answers; a test may add GPUs
    monkeypatch.setattr(ray, "cluster_resources", lambda: dict(cluster))

    def run(*flags: str, error: Exception) -> int:
        fit_error.append(error)
        return train.main(["--data", data, "--checkpoint", str(tmp_path / "out"), *flags])

    def settings(*flags: str):
        """The LoopSettings the job sends its workers."""
        run(*flags, error=worker_failure())
        return trainer["train_loop_config"]["settings"]

    return SimpleNamespace(run=run, settings=settings, trainer=trainer, cluster=cluster)


# --lr-clip


@pytest.mark.parametrize("backbone, flags, expected", [
    ("vtr-tiny", {}, 3e-4),  # random init: the backbone learns from scratch, at --lr
    ("ViT-B-32:openai", {}, 1e-6),  # pretrained: parsed only, nothing is downloaded
    ("vtr-tiny", {"lr_clip": 5e-5}, 5e-5),  # given: kept
    ("ViT-B-32:openai", {"lr_clip": 5e-5}, 5e-5),
])
def test_lr_clip_default(tmp_path, backbone, flags, expected):
    assert config(tmp_path, backbone=backbone, lr=3e-4, **flags).lr_clip == expected


def test_lr_clip_reaches_the_workers(job):
    assert job.settings("--lr", "3e-4").lr_clip == 3e-4
    assert job.settings("--backbone", "ViT-B-32:openai").lr_clip == 1e-6
    assert job.settings("--backbone", "ViT-B-32:openai", "--lr-clip", "2e-5").lr_clip == 2e-5


def test_device_follows_the_clusters_gpus(job, capsys):
    """auto trains on GPUs when the cluster has one per worker; cuda without them stops
    with one line before Ray Train starts (it would wait for them for ever)."""
    job.run("--workers", "2", error=worker_failure())
    assert job.trainer["scaling_config"].use_gpu is False
    assert job.run("--device", "cuda", error=worker_failure()) == 2
    assert capsys.readouterr().err.strip().endswith(
        "--device cuda: the workers need 1 GPU(s) and the Ray cluster has 0")
    job.cluster["GPU"] = 2.0
    job.run("--workers", "2", error=worker_failure())
    scaling = job.trainer["scaling_config"]
    assert scaling.use_gpu is True and scaling.resources_per_worker["GPU"] == 1
    job.run("--workers", "2", "--device", "cpu", error=worker_failure())
    assert job.trainer["scaling_config"].use_gpu is False


# warm-up


def test_linear_warmup_then_cosine_to_zero():
    factor = cosine_with_warmup(10, 2)
    # steps 0-1 warm up to 1; steps 2-10 follow 0.5 (1 + cos(pi k / 8)), k = 0..8
    expected = [0.5, 1.0, 1.0, 0.9619397662556434, 0.8535533905932737, 0.6913417161825449,
                0.5, 0.3086582838174551, 0.14644660940672627, 0.03806023374435663, 0.0]
    assert [factor(s) for s in range(11)] == pytest.approx(expected, abs=1e-12)
    assert factor(11) == factor(50) == 0.0  # stays at 0 past the end
    assert [factor(s) for s in range(4)] == pytest.approx(
        [0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 8))], abs=1e-12)


def test_no_warmup_starts_at_the_full_rate():
    factor = cosine_with_warmup(4, 0)
    assert [factor(s) for s in range(5)] == pytest.approx(
        [1.0, 0.8535533905932737, 0.5, 0.14644660940672627, 0.0], abs=1e-12)


def test_the_optimiser_follows_the_schedule():
    """As the loop uses it: LambdaLR, one scheduler step per optimiser step."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(10, 2))
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == pytest.approx([0.05, 0.1, 0.1], abs=1e-12)
    assert rates == sorted(rates[:2]) + sorted(rates[2:], reverse=True)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


# --model and --disable


@pytest.mark.parametrize("disable", ["motion", "video_enhance", "text_enhance,interaction",
                                     "fine_grained", ",".join(PARTS)])
def test_disable_switches_lfemi_parts_off(tmp_path, disable):
    off = set(disable.split(","))
    model_cfg = job_model(config(tmp_path, model="lfemi", disable=disable))
    assert model_cfg.name == "lfemi"
    assert {p: getattr(model_cfg, p) for p in PARTS} == {p: p not in off for p in PARTS}
    model = create_model(model_cfg)
    for part in ("motion", "temporal", "interaction"):
        assert (getattr(model, part) is None) == (part in off), part
    for part in ("video_enhance", "text_enhance"):  # they feed the fine term alone
        assert (getattr(model, part) is None) == bool({part, "fine_grained"} & off), part
    assert (model.fine_gate is None) == ("fine_grained" in off)


@pytest.mark.parametrize("name, temporal", [("meanp", False), ("seqtransf", True)])
def test_baselines_have_every_part_off(tmp_path, name, temporal):
    model_cfg = job_model(config(tmp_path, model=name))
    assert model_cfg.name == name and model_cfg.temporal == temporal
    assert not any(getattr(model_cfg, p) for p in PARTS if p != "temporal")
    model = create_model(model_cfg)
    assert (model.temporal is not None) == temporal
    assert model.video_enhance is None and model.text_enhance is None
    assert model.interaction is None and not model.config.fine_grained


def test_the_job_trains_the_model_its_flags_name(job):
    model_cfg = job.settings("--model", "lfemi", "--disable", "interaction, fine_grained").model
    assert (model_cfg.name, model_cfg.max_frames) == ("lfemi", 6)  # 6: the ingest output's
    assert not model_cfg.interaction and not model_cfg.fine_grained
    assert model_cfg.video_enhance and model_cfg.text_enhance
    assert job.settings("--model", "seqtransf").model == ModelConfig.from_dict(
        {"name": "seqtransf", "max_frames": 6})


@pytest.mark.parametrize("model", ["meanp", "seqtransf"])
def test_disable_is_refused_for_the_baselines(tmp_path, capsys, model):
    with pytest.raises(ValueError, match=rf"^--disable: model {model} has no interaction to "):
        config(tmp_path, model=model, disable="interaction")
    # the job: one error line, exit status 2, before Ray starts
    with pytest.raises(SystemExit) as exit_info:
        parse_config(TrainConfig, train.__doc__, [
            "--data", str(tmp_path), "--checkpoint", str(tmp_path / "out"), "--model", model,
            "--disable", "video_enhance,fine_grained"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    [line] = [line for line in err.splitlines() if "error:" in line]
    assert line.endswith(f"error: --disable: model {model} has no video_enhance, fine_grained "
                         "to switch off (only lfemi has these parts)")
    assert config(tmp_path, model=model, disable="").disabled_parts == []


def test_a_shift_must_keep_the_content_on_screen(tmp_path):
    """0 (the default) trains on the clips as they are; half a frame or more would move
    the content off screen."""
    assert config(tmp_path).augment_shift == 0
    assert config(tmp_path, augment_shift=0.15).augment_shift == 0.15
    for bad in (-0.1, 0.5):
        with pytest.raises(ValueError, match=rf"^--augment-shift {bad}: a fraction of the "):
            config(tmp_path, augment_shift=bad)


def test_mined_negatives_need_a_count(tmp_path):
    with pytest.raises(ValueError, match=r"^--hard-negatives-by videos .* needs --hard-neg"):
        config(tmp_path, hard_negatives_by="videos")
    assert config(tmp_path, hard_negatives_by="videos", hard_negatives=3).hard_negatives == 3


def test_an_unknown_part_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^--disable: unknown part\(s\) colour, vision; choose "
                       r"from motion, temporal, video_enhance, text_enhance, interaction, "
                       r"fine_grained$"):
        config(tmp_path, disable="vision,interaction,colour")


def test_enable_adds_a_part_to_a_model_without_it(tmp_path):
    """lfemi's parts can be switched on in a baseline (meanp with motion frames), beside the
    parts no model has by default; an unknown one is named."""
    assert job_model(config(tmp_path, model="meanp", enable="motion")).motion
    assert not job_model(config(tmp_path, model="meanp")).motion
    assert job_model(config(tmp_path, enable="relations")).relations
    with pytest.raises(ValueError, match=r"^--enable: unknown part\(s\) colour; choose from "
                       r"motion, .*, spatial$"):
        config(tmp_path, enable="colour")


# an ingest output with no committed run


def no_log(folder: Path) -> None:
    (folder / "videos").mkdir(parents=True)  # tables, but no _ingest_log: no committed run


def format_1(folder: Path) -> None:
    folder.mkdir()
    (folder / "_SUCCESS").touch()


def other_format(folder: Path) -> None:
    (folder / "_ingest_log").mkdir(parents=True)
    (folder / "_ingest_log" / f"{1:020d}.json").write_text('{"format": 99, "version": 1}')


@pytest.mark.parametrize("make, message", [
    (Path.mkdir, "no committed ingest run"),
    (lambda folder: None, "no committed ingest run"),  # no folder at all
    (no_log, "no committed ingest run"),
    (format_1, "holds an ingest output of format 1"),
    (other_format, "was written by ingest format 99"),
], ids=["empty", "missing", "no-log", "format-1", "format-99"])
def test_no_committed_ingest_run_is_one_line_before_ray(tmp_path, monkeypatch, capsys, make,
                                                        message):
    def join_ray(config):
        raise AssertionError("Ray started")

    monkeypatch.setattr(train, "join_ray", join_ray)
    data = tmp_path / "data"
    make(data)
    assert train.main(["--data", str(data), "--checkpoint", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"train: error: {data}") and message in err
    assert len(err.strip().splitlines()) == 1, err


# --max-failures


def test_max_failures_reaches_ray_trains_failure_config(job, tmp_path):
    job.run("--max-failures", "3", error=worker_failure())
    run_config = job.trainer["run_config"]
    assert run_config.failure_config.max_failures == 3
    assert run_config.storage_path == str((tmp_path / "out" / "ray").resolve())
    assert job.trainer["scaling_config"].num_workers == 1
    assert job.trainer["loop"] is train.train_loop_per_worker
    job.run(error=worker_failure())
    assert job.trainer["run_config"].failure_config.max_failures == 2  # the default


@pytest.mark.parametrize("error, cause", [
    (worker_failure(), "worker 0: RuntimeError: worker lost"),
    (ray.train.ControllerError(ValueError("placement group timed out\nmore")),
     "ValueError: placement group timed out"),
], ids=["worker", "controller"])
def test_exhausted_max_failures_is_one_line(job, capsys, error, cause):
    assert job.run("--max-failures", "3", error=error) == 1
    err = capsys.readouterr().err
    assert err == ("train: error: training failed after 3 restart(s) (--max-failures): "
                   f"{cause}\n")

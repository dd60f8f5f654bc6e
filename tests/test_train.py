"""Training: global-batch gradients across workers, the Ray Train job, recovery, evaluation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port, run

from pipelines.ingest import IngestConfig
from pipelines.ingest_store import IngestStore, IngestVersion, open_ingest
from pipelines.train import TrainConfig, resolve_max_frames
from pipelines.training_loop import MODEL_DIR, contrastive_step, first_occurrences
from vtr_models.checkpoint import WEIGHTS_FILE
from vtr_models.factory import create_model
from vtr_models.model_config import model_config

REPO = Path(__file__).resolve().parents[1]


def make_batch(n: int = 8) -> dict:
    torch.manual_seed(5)
    model = create_model("lfemi")
    captions = [f"a shape number {i} moves" for i in range(n)]
    kw, kw_mask = model.tokenizer.keywords([["shape"]] * n, 5)
    keys = torch.tensor([10, 11, 12, 10, 13, 14, 15, 16][:n])  # video 10 captioned twice
    return {"frames": torch.randn(n, 4, 3, 64, 64), "frame_mask": torch.ones(n, 4, dtype=bool),
            "tokens": model.tokenizer.captions(captions), "keyword_tokens": kw,
            "keyword_mask": kw_mask, "video_key": keys}


def gradients(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    torch.manual_seed(0)
    model = create_model("lfemi").eval()  # eval: no dropout, so both runs are deterministic
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    batch = {k: v[rank * 4 : (rank + 1) * 4] for k, v in make_batch().items()}
    loss = contrastive_step(model, ddp, batch)
    loss.backward()
    if rank == 0:
        torch.save({"loss": loss.detach(), "grads": gradients(model)}, out)
    dist.destroy_process_group()


def test_first_occurrences():
    assert first_occurrences(torch.tensor([7, 3, 7, 9, 3])).tolist() == [0, 1, 3]


def test_two_workers_give_the_single_worker_gradient(tmp_path):
    torch.manual_seed(0)
    model = create_model("lfemi").eval()
    loss = contrastive_step(model, model, make_batch())
    loss.backward()
    single = gradients(model)
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(free_port(), out), nprocs=2, join=True)
    double = torch.load(out, weights_only=True)
    assert torch.allclose(double["loss"], loss.detach(), atol=1e-5)
    assert single.keys() == double["grads"].keys()
    for name, grad in single.items():
        assert torch.allclose(double["grads"][name], grad, atol=1e-5, rtol=1e-3), name


def first_stage_loss(model, batch: dict) -> float:
    """The contrastive loss of the first-stage vectors on ``batch`` (no gradient)."""
    with torch.no_grad():
        text, video = model(batch["frames"], batch["frame_mask"], batch["tokens"],
                            batch["keyword_tokens"], batch["keyword_mask"])
        keys = batch["video_key"]
        return model.loss(model.first_stage_score(text, video), keys, keys).item()


def test_first_stage_loss_trains_the_index_vectors():
    """Steps with --first-stage-loss align the first-stage vectors better than without."""
    batch = {k: v[1:5] for k, v in make_batch().items()}  # 4 distinct videos
    after = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = create_model("lfemi").eval()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for _ in range(15):
            optimizer.zero_grad()
            contrastive_step(model, model, batch, first_stage_weight=weight).backward()
            optimizer.step()
        after[weight] = first_stage_loss(model, batch)
    assert after[1.0] < 0.5 * after[0.0], after


def committed_output(folder: Path, settings: dict) -> str:
    """An ingest output whose one committed run records ``settings`` (no tables needed)."""
    IngestStore(str(folder)).commit(IngestVersion(1, {}, settings))
    return str(folder)


def test_max_frames_defaults_to_the_ingest_outputs(tmp_path, caplog):
    settings = IngestConfig(output=str(tmp_path), videos="v/", max_frames=7).output_settings
    data = committed_output(tmp_path / "data", settings)
    snapshot = open_ingest(data)

    def resolved(*flags: int) -> TrainConfig:
        given = {"max_frames": flags[0]} if flags else {}
        return resolve_max_frames(TrainConfig(data=data, output=str(tmp_path / "o"), **given),
                                  snapshot)

    config = resolved()
    assert config.max_frames == 7
    assert model_config(config.model, **config.model_overrides).max_frames == 7
    with caplog.at_level("INFO", logger="train"):
        assert resolved(4).max_frames == 4  # fewer: frames thinned evenly, no remark
        assert "padding" not in caplog.text
        assert resolved(20).max_frames == 20  # more: allowed, said
        assert "--max-frames 20 exceeds the 7 frames" in caplog.text
    # a run log without sampling settings: the model config's default
    bare = open_ingest(committed_output(tmp_path / "bare", {}))
    config = resolve_max_frames(TrainConfig(data=data, output=str(tmp_path / "o")), bare)
    assert config.max_frames is None and "max_frames" not in config.model_overrides
    with pytest.raises(ValueError, match="--max-frames"):
        TrainConfig(data=data, output=str(tmp_path / "o"), max_frames=0)


def train_args(data: Path, output: Path, *extra: str) -> list[str]:
    return ["pipelines/train.py", "--data", str(data), "--output", str(output),
            "--max-frames", "8", "--batch-size", "8", "--lr", "3e-4", *extra]


def read_metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def assert_final_is_best_epoch(output: Path, rows: list[dict]) -> None:
    """``final/`` holds the weights of the epoch best on val (ties: the later epoch)."""
    best = max(rows, key=lambda r: (r["val_t2v_R@1"], r["epoch"]))["epoch"]
    kept = {json.loads((c / "history.json").read_text())["epoch"]: c
            for c in (output / "ray" / "train").glob("checkpoint_*") if c.is_dir()}
    assert best in kept, (best, sorted(kept))
    final = (output / "final" / WEIGHTS_FILE).read_bytes()
    assert final == (kept[best] / MODEL_DIR / WEIGHTS_FILE).read_bytes()


def expected_checkpoints(rows: list[dict], every: int) -> list[bool]:
    """Epochs that must have a checkpoint: every ``every``-th, each new best on val, the last."""
    best = float("-inf")
    expected = []
    for row in rows:
        improved = row["val_t2v_R@1"] >= best
        best = max(best, row["val_t2v_R@1"])
        expected.append(improved or row["epoch"] % every == 0 or row is rows[-1])
    return expected


@pytest.mark.slow
def test_one_and_two_workers_agree(synthetic_data, tmp_path):
    results = {}
    for workers in (1, 2):
        output = tmp_path / f"w{workers}"
        # 2 workers: checkpoints only at new bests on val and at the end
        every = {1: "1", 2: "5"}[workers]
        result = run(train_args(synthetic_data, output, "--epochs", "3", "--num-workers",
                                str(workers), "--cpus-per-worker", "0.5",
                                "--checkpoint-every", every, "--hard-negatives", "2"))
        assert result.returncode == 0, result.stderr[-3000:]
        assert "train done" in result.stdout
        rows = read_metrics(output)
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        assert all(r["steps"] == 2 for r in rows)  # 18 pairs // global batch 8, either way
        assert all(r["train_s"] > 0 and r["val_s"] > 0 for r in rows)
        assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
        assert [r["checkpointed"] for r in rows] == expected_checkpoints(rows, int(every))
        assert_final_is_best_epoch(output, rows)
        assert (output / "final" / "config.json").exists() and (output / "curves.png").exists()
        results[workers] = rows
    # Batches are drawn in a different order, so the losses differ by sampling noise only;
    # a loss over each worker's half batch (no all-gather) would sit about log(2) = 0.69 lower.
    mean = {w: sum(r["loss"] for r in rows) / len(rows) for w, rows in results.items()}
    assert abs(mean[1] - mean[2]) < 0.35, mean


def test_streaming_needs_a_cpu_beside_the_workers(synthetic_data, tmp_path):
    result = run(train_args(synthetic_data, tmp_path / "starved", "--cache-data", "never",
                            "--cpus-per-worker", str(os.cpu_count()), "--ray-address", "local"))
    assert result.returncode == 2
    assert "leave none to stream the data" in result.stderr
    result = run(train_args(synthetic_data, tmp_path / "streamed", "--cache-data", "never",
                            "--hard-negatives", "2", "--ray-address", "local"))
    assert result.returncode == 2
    assert "--hard-negatives needs the pairs cached" in result.stderr


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint(synthetic_data, tmp_path):
    output = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, *train_args(synthetic_data, output, "--epochs", "6")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    killed = None
    deadline = time.monotonic() + 600
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        if list((output / "ray" / "train").glob("checkpoint_*")):
            for p in psutil.Process(proc.pid).children(recursive=True):
                if "RayTrainWorker" in " ".join(p.cmdline()):
                    p.kill()
                    killed = p.pid
                    break
        time.sleep(0.2)
    log, _ = proc.communicate(timeout=900)
    assert killed is not None, "no training worker to kill:\n" + log[-3000:]
    assert proc.returncode == 0, log[-3000:]
    rows = read_metrics(output)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]  # every epoch, once


@pytest.mark.slow
def test_resume_flag_and_evaluate(synthetic_data, tmp_path):
    output = tmp_path / "resumed"
    first = run(train_args(synthetic_data, output, "--epochs", "1"))
    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stdout + first.stderr  # one compact line per epoch, no metrics dicts
    assert re.search(r"epoch 1/1: loss \d+\.\d{3}, val R@1 \d+\.\d %, \d+\.\d s", log), log[-3000:]
    assert "Reporting training result" not in log and "Checkpoint successfully" not in log
    again = run(train_args(synthetic_data, output, "--epochs", "2"))
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = run(train_args(synthetic_data, output, "--epochs", "2", "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["epoch"] for r in read_metrics(output)] == [1, 2]
    metrics_path = tmp_path / "test.json"
    evaluated = run(["pipelines/evaluate.py", "--data", str(synthetic_data), "--checkpoint",
                     str(output / "final"), "--split", "test", "--json", str(metrics_path)])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads(metrics_path.read_text())
    assert metrics["num_videos"] == 6 and metrics["num_captions"] == 6
    for direction in ("t2v", "v2t", "first_stage"):
        assert set(metrics[direction]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
        assert 1 <= metrics[direction]["MdR"] <= 6
    assert "R@1" in evaluated.stdout and "first_stage" in evaluated.stdout
    assert all("val_first_stage_R@10" in row for row in read_metrics(output))

"""Training: global-batch gradients across workers, the Ray Train job, resuming, evaluation.

Recovery from a lost worker (its node killed mid-run) is in ``test_multinode.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port, run, wake

from pipelines.ingest import IngestConfig
from pipelines.ingestion.output import IngestStore, IngestVersion, open_ingest
from pipelines.train import TrainConfig, cache_pairs, resolve_max_frames
from pipelines.training.loop import MODEL_DIR, contrastive_step, first_occurrences
from vtr_models.checkpoint import WEIGHTS_FILE
from vtr_models.factory import create_model
from vtr_models.model_config import model_config

SAME_RANK = [10, 11, 12, 10, 13, 14, 15, 16]  # video 10 captioned twice, both on rank 0
ACROSS_RANKS = [10, 11, 12, 13, 10, 14, 15, 16]  # its captions on ranks 0 and 1


def make_batch(n: int = 8, keys: list[int] = SAME_RANK) -> dict:
    torch.manual_seed(5)
    model = create_model("lfemi")
    captions = [f"a shape number {i} moves" for i in range(n)]
    kw, kw_mask = model.tokenizer.keywords([["shape"]] * n, 5)
    keys = torch.tensor(keys[:n])
    return {"frames": torch.randn(n, 4, 3, 64, 64), "frame_mask": torch.ones(n, 4, dtype=bool),
            "tokens": model.tokenizer.captions(captions), "keyword_tokens": kw,
            "keyword_mask": kw_mask, "video_key": keys}


def gradients(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, port: int, out: str, cases: dict[str, list[int]]) -> None:
    """One step per batch of ``cases`` on 2 workers of 4 pairs each; rank 0 saves the
    loss and gradients of each."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    results = {}
    for case, keys in cases.items():
        torch.manual_seed(0)
        # eval: no dropout, so both runs are deterministic; awake: every gradient non-zero
        model = wake(create_model("lfemi").eval())
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        batch = {k: v[rank * 4 : (rank + 1) * 4] for k, v in make_batch(keys=keys).items()}
        loss = contrastive_step(model, ddp, batch)
        loss.backward()
        results[case] = {"loss": loss.detach(), "grads": gradients(model)}
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def test_first_occurrences():
    assert first_occurrences(torch.tensor([7, 3, 7, 9, 3])).tolist() == [0, 1, 3]


def test_a_video_captioned_twice_is_one_column(monkeypatch):
    """Both captions of video 10 score against one column of it, as positives."""
    torch.manual_seed(0)
    model = create_model("lfemi").eval()
    seen = {}

    def loss(sim, text_ids, video_ids):
        seen.update(shape=tuple(sim.shape), text=text_ids.tolist(), video=video_ids.tolist())
        return sim.sum()

    monkeypatch.setattr(model.loss, "forward", loss)
    contrastive_step(model, model, make_batch(keys=ACROSS_RANKS))
    assert seen == {"shape": (8, 7), "text": ACROSS_RANKS,
                    "video": [10, 11, 12, 13, 14, 15, 16]}


GRADIENT_CASES = {"same-rank": SAME_RANK, "across-ranks": ACROSS_RANKS}


@pytest.fixture(scope="module")
def two_worker_steps(tmp_path_factory) -> dict:
    """Loss and gradients of one step on 2 workers for each of ``GRADIENT_CASES`` (one
    spawn for all: starting the processes is most of the cost)."""
    out = str(tmp_path_factory.mktemp("gloo") / "rank0.pt")
    mp.spawn(_worker, args=(free_port(), out, GRADIENT_CASES), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("case", GRADIENT_CASES)
def test_two_workers_give_the_single_worker_gradient(two_worker_steps, case):
    """One step on 2 workers (gloo, 4 pairs each) equals one step on 1 worker with all 8,
    also when a video's two captions sit on different workers (``across-ranks``)."""
    torch.manual_seed(0)
    model = wake(create_model("lfemi").eval())
    loss = contrastive_step(model, model, make_batch(keys=GRADIENT_CASES[case]))
    loss.backward()
    single = gradients(model)
    double = two_worker_steps[case]
    assert torch.allclose(double["loss"], loss.detach(), atol=1e-6, rtol=1e-5)
    assert single.keys() == double["grads"].keys()
    for name, grad in single.items():
        diff = (double["grads"][name] - grad).abs().max().item()
        assert torch.allclose(double["grads"][name], grad, atol=1e-6, rtol=1e-5), (name, diff)


def committed_output(folder: Path, settings: dict) -> str:
    """An ingest output whose one committed run records ``settings`` (no tables needed)."""
    IngestStore(str(folder)).commit(IngestVersion(1, {}, settings))
    return str(folder)


def test_max_frames_defaults_to_the_ingest_outputs(tmp_path, caplog):
    settings = IngestConfig(data=str(tmp_path), videos="v/", max_frames=7).output_settings
    data = committed_output(tmp_path / "data", settings)
    snapshot = open_ingest(data)

    def resolved(*flags: int) -> TrainConfig:
        given = {"max_frames": flags[0]} if flags else {}
        return resolve_max_frames(TrainConfig(data=data, checkpoint=str(tmp_path / "o"), **given),
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
    config = resolve_max_frames(TrainConfig(data=data, checkpoint=str(tmp_path / "o")), bare)
    assert config.max_frames is None and "max_frames" not in config.model_overrides
    with pytest.raises(ValueError, match="--max-frames"):
        TrainConfig(data=data, checkpoint=str(tmp_path / "o"), max_frames=0)


def train_args(data: Path, output: Path, *extra: str) -> list[str]:
    return ["pipelines/train.py", "--data", str(data), "--checkpoint", str(output),
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


@pytest.fixture(scope="module")
def one_worker(synthetic_data, tmp_path_factory) -> dict:
    """A 1-worker run of 2 epochs, then the same run resumed to 3 (``--resume``): the
    metrics before the resume, and each call's result."""
    output = tmp_path_factory.mktemp("one-worker") / "run"
    flags = ("--workers", "1", "--cpus-per-worker", "0.5", "--checkpoint-every", "1")
    first = run(train_args(synthetic_data, output, "--epochs", "2", *flags))
    assert first.returncode == 0, first.stderr[-3000:]
    before = (output / "metrics.jsonl").read_text().splitlines()
    again = run(train_args(synthetic_data, output, "--epochs", "3", *flags))
    resumed = run(train_args(synthetic_data, output, "--epochs", "3", "--resume", *flags))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {"output": output, "first": first, "before": before, "again": again,
            "resumed": resumed}


@pytest.mark.slow
def test_resume_continues_without_rerunning_epochs(one_worker):
    output = one_worker["output"]
    again = one_worker["again"]
    assert again.returncode == 2 and "--resume" in again.stderr  # refused before Ray starts
    assert "Started a local Ray instance" not in again.stderr
    rows = read_metrics(output)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # epochs 1 and 2 come back from the checkpoint as written, end times included: a
    # resume that started over would rewrite them (and log them again)
    lines = (output / "metrics.jsonl").read_text().splitlines()
    assert lines[:2] == one_worker["before"]
    resumed_log = one_worker["resumed"].stdout + one_worker["resumed"].stderr
    assert "epoch 3/3" in resumed_log and "epoch 1/3" not in resumed_log
    assert "epoch 2/3" not in resumed_log
    log = one_worker["first"].stdout + one_worker["first"].stderr
    # one compact line per epoch, once each: no metrics dicts, no open_clip build steps
    for epoch in (1, 2):
        assert len(re.findall(rf"epoch {epoch}/2: loss \d+\.\d{{3}}, val R@1 \d+\.\d %, "
                              r"\d+\.\d s", log)) == 1, log[-3000:]
    for chatter in ("Reporting training result", "Checkpoint successfully",
                    "Parsing model identifier", "Execution plan of Dataset"):
        assert chatter not in log, chatter
    assert [r["checkpointed"] for r in rows] == expected_checkpoints(rows, 1)
    assert_final_is_best_epoch(output, rows)
    assert (output / "final" / "config.json").exists() and (output / "curves.png").exists()


@pytest.mark.slow
def test_one_and_two_workers_agree(synthetic_data, one_worker, tmp_path):
    output = tmp_path / "w2"
    # 2 workers that stream the pairs every epoch (1 of 2 CPUs held by the workers);
    # checkpoints only at new bests on val and at the end
    result = run(train_args(synthetic_data, output, "--epochs", "3", "--workers", "2",
                            "--cpus-per-worker", "0.5", "--cache-data", "never",
                            "--checkpoint-every", "5"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train done" in result.stdout and "caching" not in result.stderr
    rows = read_metrics(output)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(r["train_s"] > 0 and r["val_s"] > 0 for r in rows)
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    assert [r["checkpointed"] for r in rows] == expected_checkpoints(rows, 5)
    assert_final_is_best_epoch(output, rows)
    results = {1: read_metrics(one_worker["output"]), 2: rows}
    # 18 pairs // global batch 8 = 2 steps, either way
    assert all(r["steps"] == 2 for rows in results.values() for r in rows)
    # Batches are drawn in a different order, so the losses differ by sampling noise only;
    # a loss over each worker's half batch (no all-gather) would sit about log(2) = 0.69 lower.
    mean = {w: sum(r["loss"] for r in rows) / len(rows) for w, rows in results.items()}
    assert abs(mean[1] - mean[2]) < 0.35, mean


def test_pairs_are_cached_when_they_fit_and_streamed_only_where_they_can_be(tmp_path):
    def config(**flags) -> TrainConfig:
        return TrainConfig(data=str(tmp_path / "data"), checkpoint=str(tmp_path / "o"), **flags)

    cluster = {"CPU": 2.0, "object_store_memory": 1000.0}
    assert cache_pairs(config(), 500, cluster)  # auto: fits in half the object store
    assert not cache_pairs(config(), 501, cluster)
    assert cache_pairs(config(cache_data="always"), 10**9, cluster)
    assert not cache_pairs(config(cache_data="never", cpus_per_worker=0.5), 1, cluster)
    with pytest.raises(ValueError, match="--hard-negatives needs the pairs cached"):
        cache_pairs(config(cache_data="never", hard_negatives=2), 1, cluster)
    with pytest.raises(ValueError, match="leave none to stream the data"):
        cache_pairs(config(cache_data="never", cpus_per_worker=2), 1, cluster)
    with pytest.raises(ValueError, match="leave none to stream the data"):  # too big: streams
        cache_pairs(config(workers=2, batch_size=8), 501, cluster)


@pytest.mark.slow
def test_evaluate_a_trained_checkpoint(synthetic_data, one_worker, tmp_path):
    output = one_worker["output"]
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

"""The per-worker training loop of ``pipelines/train.py`` (runs inside Ray Train workers).

Contrastive loss over the *global* batch: every worker encodes its share, then
text features, video features (pooled, per-frame and enhanced local ones) and
video keys are all-gathered with gradients (``torch.distributed.nn``), so that
text-conditioned pooling and fine-grained matching see every video of the
global batch and each worker computes the same loss. With DDP averaging the
parameter gradients, one step equals a single-worker step on the whole batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn

from pipelines.ingestion.output import open_ingest
from pipelines.training.batch_sampling import (
    caption_neighbours,
    neighbour_batches,
    random_batches,
    video_neighbours,
)
from pipelines.training.evaluation import evaluate_split, load_split
from vtr_models import (
    ModelConfig,
    PretrainingHeads,
    RetrievalModel,
    create_model,
    load_weights,
    optimizer_groups,
    random_placement,
    random_shift,
    save_checkpoint,
)

MODEL_DIR = "model"  # inside each Ray Train checkpoint: a vtr_models checkpoint folder
STATE_FILE = "training_state.pt"  # optimiser and scheduler state dicts (tensors only)
HISTORY_FILE = "history.json"  # epoch, per-epoch metrics, best so far


@dataclass(frozen=True)
class LoopSettings:
    """What every worker's loop needs: built by ``pipelines/train.py`` from its flags and
    the ingest output it opened, and sent to the workers as one typed object."""

    data: str  # the ingest output
    data_version: int  # the committed run the job opened: every worker reads that one
    val_split: str
    model: ModelConfig
    epochs: int
    batch_size: int  # global: split evenly between the workers
    num_pairs: int  # training pairs, for the steps of the learning-rate schedule
    cached: bool  # pairs cached in memory (random order, hard negatives) or streamed
    hard_negatives: int
    hard_negatives_by: str  # captions (TF-IDF, once) or videos (the model's vectors, each epoch)
    shuffle_buffer: int
    augment_shift: float
    augment_placement: float
    pretrain_tasks: tuple[str, ...]  # seed 004's tasks (vtr_models.pretraining), run first
    pretrain_epochs: int
    first_stage_loss: float
    lr: float
    lr_clip: float
    weight_decay: float
    warmup_ratio: float
    grad_clip: float
    checkpoint_every: int
    seed: int


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from every worker along dim 0, keeping gradients."""
    if _world() == 1:
        return tensor
    if tensor.dtype == torch.bool or not tensor.requires_grad:
        parts = [torch.empty_like(tensor) for _ in range(_world())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)
    return torch.cat(dist_nn.all_gather(tensor.contiguous()))


def gather_features(features):
    """All-gather every tensor of a TextFeatures / VideoFeatures (None stays None)."""
    values = [getattr(features, f) for f in features.__dataclass_fields__]
    return type(features)(*[None if v is None else gather(v) for v in values])


def first_occurrences(keys: torch.Tensor) -> torch.Tensor:
    """Indices of the first row of each distinct key, in order of first appearance."""
    _, inverse = torch.unique(keys, return_inverse=True)
    positions = torch.arange(len(keys), device=keys.device)
    first = torch.full((int(inverse.max()) + 1,), len(keys), device=keys.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return first.sort().values


def contrastive_step(model: RetrievalModel, module, batch: dict,
                     first_stage_weight: float = 0.0) -> torch.Tensor:
    """Loss of one global batch; ``module`` is the (DDP-wrapped) model to call forward on.

    A video captioned twice in the global batch becomes one column, so its
    captions are positives of the same video, never each other's negatives.
    ``first_stage_weight`` adds that weight times the same loss over the
    first-stage vectors (``RetrievalModel.first_stage_score``): the
    full score never trains them directly, yet the vector index finds the
    candidates with them. Seed 000's alignment term and seeds 001/003's tag
    losses (``RetrievalModel.auxiliary_loss``) are over every caption and its video.
    """
    text, video = module(batch["frames"], batch["frame_mask"], batch["tokens"],
                         batch["keyword_tokens"], batch["keyword_mask"])
    text, video = gather_features(text), gather_features(video)
    keys = gather(batch["video_key"])
    columns = first_occurrences(keys)
    tags = gather(batch["tags"]) if "tags" in batch else None
    loss = model.auxiliary_loss(text, video, tags)  # row i of video is caption i's (0: none)
    video = video[columns]
    loss = loss + model.loss(model.score(text, video, chunk_size=max(len(keys), 1)), keys,
                             keys[columns])
    if first_stage_weight:
        first_stage = model.first_stage_score(text, video)
        loss = loss + first_stage_weight * model.loss(first_stage, keys, keys[columns])
    return loss


def cosine_with_warmup(total_steps: int, warmup_steps: int):
    """LR multiplier: linear warm-up, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _save(model: RetrievalModel, optimizer, scheduler, history: dict, folder: Path,
          settings: LoopSettings) -> None:
    save_checkpoint(model, folder / MODEL_DIR, training_record(settings))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
               folder / STATE_FILE)
    (folder / HISTORY_FILE).write_text(json.dumps(history))


def training_record(settings: LoopSettings) -> dict:
    """What a checkpoint records of its training (``training.json``): the settings its
    users act on (embed warns when the first stage was not trained) and the recipe."""
    return {"first_stage_loss": settings.first_stage_loss, "epochs": settings.epochs,
            "batch_size": settings.batch_size, "lr": settings.lr, "lr_clip": settings.lr_clip,
            "weight_decay": settings.weight_decay, "seed": settings.seed,
            "pretrain_tasks": list(settings.pretrain_tasks),
            "pretrain_epochs": settings.pretrain_epochs if settings.pretrain_tasks else 0,
            "data": settings.data, "data_version": settings.data_version}


def _restore(model: RetrievalModel, optimizer, scheduler, folder: Path) -> dict:
    load_weights(model, folder / MODEL_DIR)
    state = torch.load(folder / STATE_FILE, weights_only=True)
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as exc:  # another number or size of parameter groups
        raise ValueError(f"checkpoint {folder} holds the optimiser state of another parameter "
                         "grouping (a run begun before the gates had their own learning "
                         "rate, or of another model): it cannot be resumed; start a new run "
                         "from its final/ weights or from scratch") from exc
    scheduler.load_state_dict(state["scheduler"])
    return json.loads((folder / HISTORY_FILE).read_text())


class CachedShard:
    """A worker's shard of training pairs, read once into memory (``--cache-data``).

    Batches then come from memory in a full random order each epoch, or as
    hard-negative batches (``--hard-negatives``), which need random access.
    """

    def __init__(self, shard, hard_negatives: int, by: str = "captions") -> None:
        parts = list(shard.iter_torch_batches(batch_size=256, device="cpu"))
        self.pairs = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        self.hard_negatives = hard_negatives
        self.mines_videos = bool(hard_negatives) and by == "videos"  # each epoch
        self.neighbours = (caption_neighbours(self.pairs["tokens"], hard_negatives)
                           if hard_negatives and by == "captions" else None)

    @torch.no_grad()
    def mine_videos(self, model: RetrievalModel, batch_size: int, seed: int,
                    device: torch.device) -> None:
        """Each row's neighbours for this epoch: captions of the videos nearest its own
        by ``model``'s first-stage video vector, the model as it stands (eval mode)."""
        def vectors(rows: torch.Tensor) -> torch.Tensor:
            frames, mask = (self.pairs[k][rows].to(device) for k in ("frames", "frame_mask"))
            return model.video_embedding(model.encode_video(frames, mask)).cpu()

        model.eval()
        self.neighbours = video_neighbours(self.pairs["video_key"], vectors, self.hard_negatives,
                                           torch.Generator().manual_seed(seed), batch_size)
        model.train()

    def batches(self, batch_size: int, seed: int, device: torch.device):
        generator = torch.Generator().manual_seed(seed)
        size = len(self.pairs["video_key"])
        indices = (random_batches(size, batch_size, generator) if self.neighbours is None
                   else neighbour_batches(self.neighbours, batch_size, generator))
        for index in indices:
            yield {k: v[index].to(device, non_blocking=True) for k, v in self.pairs.items()}


def epoch_batches(shard, memory: CachedShard | None, settings: LoopSettings, batch_size: int,
                  device: torch.device, epoch: int):
    """One epoch of a worker's batches: from memory when cached, else streamed by Ray Data."""
    seed = settings.seed * 1000 + epoch
    if memory is not None:
        return memory.batches(batch_size, seed, device)
    return shard.iter_torch_batches(
        batch_size=batch_size, drop_last=True, device=device,
        local_shuffle_buffer_size=settings.shuffle_buffer or None, local_shuffle_seed=seed)


def average_gradients(parameters) -> None:
    """Average each gradient over the workers (what DDP does inside its forward; the
    pre-training step calls the towers and its heads outside it)."""
    if _world() > 1:
        for parameter in parameters:
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad)
                parameter.grad /= _world()


def pretrain(model: RetrievalModel, shard, memory: CachedShard | None, settings: LoopSettings,
             batch_size: int, device: torch.device, rank: int) -> None:
    """Seed 004's pre-training (``settings.pretrain_tasks``) for ``pretrain_epochs``
    before contrastive training, at the new modules' rate held constant; the heads are
    dropped after. One line per epoch, as training's."""
    heads = PretrainingHeads(model.backbone.embed_dim, settings.pretrain_tasks,
                             sum(len(v) for v in settings.model.tag_vocab),
                             model.backbone.clip.token_embedding.num_embeddings).to(device)
    parameters = [*model.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW([
        *optimizer_groups(model, model.backbone, settings.lr_clip, settings.lr,
                          settings.weight_decay),
        {"params": list(heads.parameters()), "lr": settings.lr, "weight_decay": 0.0}])
    generator = torch.Generator().manual_seed(settings.seed * 1000 + 999 + rank)
    for epoch in range(settings.pretrain_epochs):
        model.train()
        started, losses = time.perf_counter(), []
        # epochs -1, -2, ...: other batch orders than the contrastive epochs'
        for batch in epoch_batches(shard, memory, settings, batch_size, device, -1 - epoch):
            video = (model.encode_video(batch["frames"], batch["frame_mask"])
                     if "tap" in settings.pretrain_tasks else None)
            loss = heads.loss(model, video, batch["tokens"], batch.get("tags"), generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(parameters)
            torch.nn.utils.clip_grad_norm_(parameters, settings.grad_clip)
            optimizer.step()
            losses.append(loss.item())
        if rank == 0:
            sys.stdout.write(f"pretrain epoch {epoch + 1}/{settings.pretrain_epochs} "
                             f"({', '.join(settings.pretrain_tasks)}): loss "
                             f"{sum(losses) / max(1, len(losses)):.3f}, "
                             f"{time.perf_counter() - started:.1f} s\n")
            sys.stdout.flush()


def quiet_ray_train_logs() -> None:
    """Ray Train logs every report's whole metrics dict and every checkpoint at INFO,
    from each worker; the loop prints one line per epoch instead (``epoch_line``)."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("ray.train") or f"{os.sep}ray{os.sep}train{os.sep}" in name:
            logging.getLogger(name).setLevel(logging.WARNING)


def epoch_line(metrics: dict, epochs: int) -> str:
    """``epoch 3/30: loss 0.812, val R@1 23.9 %, 10.6 s``: what a run's log shows per epoch."""
    val = metrics.get("val_t2v_R@1")
    parts = [f"epoch {metrics['epoch']}/{epochs}: loss {metrics['loss']:.3f}"]
    if val is not None:
        parts.append(f"val R@1 {val:.1f} %")
    parts.append(f"{metrics['train_s'] + metrics.get('val_s', 0.0):.1f} s")
    return ", ".join(parts)


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry point; ``loop_config["settings"]`` is the run's ``LoopSettings``."""
    import ray.train
    import ray.train.torch

    quiet_ray_train_logs()
    context = ray.train.get_context()
    rank = context.get_world_rank()
    settings: LoopSettings = loop_config["settings"]
    torch.manual_seed(settings.seed)
    model = create_model(settings.model)
    optimizer = torch.optim.AdamW(optimizer_groups(
        model, model.backbone, settings.lr_clip, settings.lr, settings.weight_decay))
    steps_per_epoch = max(1, settings.num_pairs // settings.batch_size)
    total = steps_per_epoch * settings.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(total, int(settings.warmup_ratio * total)))
    history = {"epoch": 0, "epochs": [], "best": None}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            history = _restore(model, optimizer, scheduler, Path(folder))
    torch.manual_seed(settings.seed * 1000 + history["epoch"] * 10 + rank)
    module = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    per_worker = settings.batch_size // context.get_world_size()
    use_amp = device.type == "cuda"
    shard = ray.train.get_dataset_shard("train")
    memory = (CachedShard(shard, settings.hard_negatives, settings.hard_negatives_by)
              if settings.cached else None)
    blank = model.preprocess.blank().to(device)
    val_inputs = (load_split(model, open_ingest(settings.data, settings.data_version),
                             settings.val_split) if rank == 0 else None)

    if settings.pretrain_tasks and history["epoch"] == 0:  # not again on a resume
        pretrain(model, shard, memory, settings, per_worker, device, rank)
    for epoch in range(history["epoch"], settings.epochs):
        model.train()
        losses = []
        started = time.perf_counter()
        if memory is not None and memory.mines_videos:
            memory.mine_videos(model, per_worker, settings.seed * 1000 + epoch, device)
        batches = iter(epoch_batches(shard, memory, settings, per_worker, device, epoch))
        data_s = 0.0  # time blocked on the data pipeline: a data-bound run shows it here
        while True:
            waited = time.perf_counter()
            batch = next(batches, None)
            data_s += time.perf_counter() - waited
            if batch is None:
                break
            shift = round(settings.augment_shift * batch["frames"].shape[-1])
            batch["frames"] = random_shift(batch["frames"], shift)
            batch["frames"], batch["frame_mask"] = random_placement(
                batch["frames"], batch["frame_mask"], blank, settings.augment_placement)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = contrastive_step(model, module, batch, settings.first_stage_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        new_rate = next(g["lr"] for g in optimizer.param_groups if g["name"] == "new")
        metrics = {"epoch": epoch + 1, "loss": sum(losses) / max(1, len(losses)),
                   "steps": len(losses), "lr": new_rate,  # the new modules' (--lr) rate
                   "train_s": time.perf_counter() - started, "data_s": data_s}
        if rank == 0:
            started = time.perf_counter()
            val = evaluate_split(model, val_inputs)
            metrics["val_s"] = time.perf_counter() - started
            metrics.update({f"val_t2v_{k}": v for k, v in val["t2v"].items()})
            metrics.update({f"val_v2t_{k}": v for k, v in val["v2t"].items()})
            metrics.update({f"val_first_stage_{k}": v for k, v in val["first_stage"].items()})
        metrics["time"] = time.time()  # epoch end: benchmarks time whole epochs from it
        score = metrics.get("val_t2v_R@1", -1.0)
        # ties go to the later epoch, as Ray's checkpoint retention keeps the later one
        improved = rank == 0 and (history["best"] is None
                                  or score >= history["best"]["val_t2v_R@1"])
        due = (epoch + 1) % settings.checkpoint_every == 0 or epoch + 1 == settings.epochs
        metrics["checkpointed"] = rank == 0 and (due or improved)  # final/ needs the best
        history["epoch"] = epoch + 1
        history["epochs"].append(metrics)
        if improved:
            history["best"] = metrics
        if rank == 0:
            # not print(): Ray Train turns a worker's print into a root-logger record,
            # which its handlers then write twice
            sys.stdout.write(epoch_line(metrics, settings.epochs) + "\n")
            sys.stdout.flush()
        with tempfile.TemporaryDirectory() as tmp:
            report_checkpoint = None
            if metrics["checkpointed"]:
                _save(model, optimizer, scheduler, history, Path(tmp), settings)
                report_checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=report_checkpoint)

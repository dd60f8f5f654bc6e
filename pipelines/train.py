r"""Train job: distributed contrastive training on Ray Train, from an ingest output.

    vtr train --data ingest_out/ --checkpoint ckpt/ --model lfemi \
        --backbone ViT-B-32:openai --epochs 5 --batch-size 128 --workers 4 --device cuda

Ray Data streams (video, caption) pairs of the ``train`` split from the ingest
output, decoding JPEGs and tokenizing in its read tasks; a ``TorchTrainer`` runs
``training.loop.train_loop_per_worker`` on every worker. Each epoch reports a
checkpoint (model, optimiser, scheduler, history); ``--resume`` continues the
run under ``CHECKPOINT/ray/``, and a failed worker group restarts from the last
checkpoint. At the end the checkpoint best on the validation split is written
to ``CHECKPOINT/final/`` in the vtr_models format, with ``CHECKPOINT/metrics.jsonl``
and ``CHECKPOINT/curves.png``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.core import storage
from pipelines.core.devices import DEVICES, cluster_device
from pipelines.core.job_config import flag, parse_config
from pipelines.core.ray_job import join_ray, quiet_ray_data
from pipelines.ingestion.output import IngestSnapshot, open_ingest, read_captions
from pipelines.training.data import pair_dataset, pair_nbytes
from pipelines.training.loop import HISTORY_FILE, MODEL_DIR, LoopSettings, train_loop_per_worker
from vtr_models import (
    FINAL_FOLDER,
    MODEL_CONFIGS,
    PRETRAIN_TASKS,
    TAG_LEVELS,
    BackboneSpec,
    ModelConfig,
    tag_vocabulary,
)

log = logging.getLogger("train")
PARTS = ("motion", "temporal", "video_enhance", "text_enhance", "interaction", "fine_grained")
# parts no model has by default, for experiments
EXTRA_PARTS = ("relations", "spatial")


def listed(value: str) -> list[str]:
    """The names a comma-separated flag value lists, in order, blanks dropped."""
    return [name.strip() for name in value.split(",") if name.strip()]


def check_known(flag_name: str, kind: str, given: list[str], known: tuple[str, ...]) -> None:
    """One line naming what ``given`` holds that is not ``known`` (ValueError), if any."""
    unknown = set(given) - set(known)
    if unknown:
        raise ValueError(f"{flag_name}: unknown {kind}(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(known)}")


@dataclass
class TrainConfig:
    """Every setting of the train job; each field is a CLI flag of the same name."""

    data: str = field(metadata=flag("ingest output folder (videos/, captions/)"))
    checkpoint: str = field(metadata=flag(
        "the training run's folder: ray/ (run state), final/ (the model, which every job's "
        "--checkpoint takes as final/ or as this folder), metrics.jsonl, curves.png",
        aliases=("--output",)))
    model: str = field(default="lfemi", metadata=flag(
        "model to train", choices=tuple(MODEL_CONFIGS)))
    backbone: str = field(default="vtr-tiny", metadata=flag(
        "open_clip NAME[:PRETRAINED], e.g. ViT-B-32:openai, or vtr-tiny (random init)"))
    disable: str = field(default="", metadata=flag(
        f"comma-separated parts of lfemi to switch off for ablations: {', '.join(PARTS)} "
        "(motion: each frame's difference to the one before, through the image tower, "
        "twice its work in training)"))
    enable: str = field(default="", metadata=flag(
        "comma-separated parts to switch on: a part of lfemi's for a model without it "
        "(meanp --enable motion), or one no model has by default: "
        "relations (seed 000's recurrent and multi-scale relation features of frames and "
        "words, a gated score term; --model rrn is meanp with them), spatial (each "
        "frame's patch tokens in grid order, mapped into its feature, so that the temporal "
        "encoder sees where things are: needs a ViT backbone)"))
    semantic_levels: str = field(default="", metadata=flag(
        "comma-separated semantic levels to add (seeds 001/003): entity, action, "
        "relationship. Each pools frames and words by self-attention into a similarity "
        "gated from zero, trained to predict the level's tags mined from the training "
        "captions (focal BCE, a KL between the two modalities' tag distributions)"))
    pretrain_tasks: str = field(default="", metadata=flag(
        "seed 004's pre-training tasks to run before contrastive training, comma-separated: "
        "tap (tag alignment prediction: are these the caption's tags, or another's? needs "
        "--semantic-levels for the tags), mlm (masked language modelling, 15 %% of words)"))
    pretrain_epochs: int = field(default=2, metadata=flag(
        "epochs of --pretrain-tasks (at --lr, held constant) before the --epochs of "
        "contrastive training"))
    tag_vocab_size: int = field(default=64, metadata=flag(
        "tags per semantic level: the most frequent in the training captions"))
    max_frames: int | None = field(default=None, metadata=flag(
        "frames per video the model sees (default: the --max-frames the ingest output was "
        "built with, read from its run log); a video with more stored frames is thinned "
        "evenly, first and last kept, and one with fewer is padded"))
    epochs: int = field(default=5, metadata=flag("training epochs"))
    batch_size: int = field(default=32, metadata=flag(
        "global batch size (split evenly across workers)"))
    workers: int = field(default=1, metadata=flag("Ray Train workers",
                                                  aliases=("--num-workers",)))
    device: str = field(default="auto", metadata=flag(
        "where each worker trains: cuda (one GPU per worker, bf16 autocast), cpu, or auto "
        "(cuda when the Ray cluster has a GPU for every worker)",
        choices=DEVICES, aliases=("--use-gpu=cuda", "--no-use-gpu=cpu")))
    cpus_per_worker: float = field(default=1.0, metadata=flag(
        "CPUs reserved per training worker (and its torch threads); streamed data needs "
        "some left for Ray Data (e.g. 0.5 to run 2 workers on a 2-CPU machine), cached "
        "data does not"))
    cache_data: str = field(default="auto", metadata=flag(
        "keep the preprocessed training pairs in Ray's object store and in each worker's "
        "memory after one pass instead of decoding their JPEGs again every epoch: auto "
        "(when they fit in half of the object store), always, never",
        choices=("auto", "always", "never")))
    hard_negatives: int = field(default=0, metadata=flag(
        "build each batch from random captions and N neighbours of each (see "
        "--hard-negatives-by), so that near-duplicates meet as negatives; 0: random "
        "batches. Needs cached data"))
    hard_negatives_by: str = field(default="captions", metadata=flag(
        "what makes a neighbour for --hard-negatives: captions (the nearest captions by "
        "token TF-IDF, found once) or videos (captions of the nearest videos by the "
        "model's own first-stage video vectors, found again each epoch)",
        choices=("captions", "videos")))
    augment_shift: float = field(default=0.0, metadata=flag(
        "move every frame of a training clip by one random offset of up to this fraction "
        "of the frame size (0: off; below 0.5), edges extended; keeps motion and direction, "
        "breaks memorising where things are"))
    augment_placement: float = field(default=0.0, metadata=flag(
        "share of training clips placed at a random offset among 1 to (--max-frames less "
        "the clip's frames) still frames (the clip's first and last frames held, or black), "
        "as an event sits in a long video's window (0: off); teaches the model events that "
        "do not start at a window's first frame. Clips that already fill --max-frames are "
        "left as they are"))
    first_stage_loss: float = field(default=0.5, metadata=flag(
        "weight of an extra contrastive loss on the first-stage vectors (caption feature "
        "against mean-pooled frames) that the vector index searches, so that its few "
        "candidates hold the right video. 0: off (the method as specified; embed then "
        "warns)"))
    resume: bool = field(default=False, metadata=flag(
        "continue the run in --checkpoint from its latest checkpoint"))
    lr: float = field(default=5e-4, metadata=flag("learning rate of the new modules"))
    lr_clip: float | None = field(default=None, metadata=flag(
        "learning rate of the CLIP backbone (default: 1e-6 with pretrained weights, "
        "--lr with random init, which must learn from scratch)"))
    weight_decay: float = field(default=0.05, metadata=flag(
        "AdamW weight decay (weight matrices only)"))
    warmup_ratio: float = field(default=0.1, metadata=flag(
        "fraction of the steps spent in linear warm-up before the cosine decay"))
    grad_clip: float = field(default=1.0, metadata=flag("gradient norm clip"))
    seed: int = field(default=0, metadata=flag("seed for initialisation and shuffling"))
    val_split: str = field(default="val", metadata=flag(
        "split for model selection after each epoch (MSR-VTT 1k-A has none: use test)"))
    shuffle_buffer: int = field(default=256, metadata=flag(
        "rows in each worker's local shuffle buffer for streamed data (0: no shuffle); "
        "cached data is shuffled whole"))
    checkpoint_every: int = field(default=1, metadata=flag(
        "epochs between checkpoints; the last epoch and each new best on val are always "
        "checkpointed, and --resume or a restarted worker group goes back to the latest"))
    max_failures: int = field(default=2, metadata=flag(
        "times a failed worker group restarts from the last checkpoint"))
    ray_address: str | None = field(default=None, metadata=flag(
        "Ray cluster to join (default: the one the job was submitted to, else a local one)"))

    def __post_init__(self) -> None:
        self.data = storage.absolute(self.data)
        check_known("--disable", "part", self.disabled_parts, PARTS)
        check_known("--enable", "part", self.enabled_parts, PARTS + EXTRA_PARTS)
        defaults = MODEL_CONFIGS[self.model]() if self.model in MODEL_CONFIGS else None
        absent = [p for p in self.disabled_parts if defaults and not getattr(defaults, p)]
        if absent:  # meanp and seqtransf have every part off already
            raise ValueError(f"--disable: model {self.model} has no {', '.join(absent)} to "
                             "switch off (only lfemi has these parts)")
        levels = listed(self.semantic_levels)
        if len(set(levels)) != len(levels):
            raise ValueError(f"--semantic-levels repeats a level: {self.semantic_levels}")
        check_known("--semantic-levels", "level", levels, TAG_LEVELS)
        check_known("--pretrain-tasks", "task", list(self.pretrain_task_list), PRETRAIN_TASKS)
        if "tap" in self.pretrain_task_list and not levels:
            raise ValueError("--pretrain-tasks tap predicts whether a video's tags are its "
                             "caption's: it needs the tags of --semantic-levels")
        if self.hard_negatives_by == "videos" and not self.hard_negatives:
            raise ValueError("--hard-negatives-by videos says what a hard negative is: it "
                             "needs --hard-negatives N (how many per seed caption)")
        if self.pretrain_epochs < 1:
            raise ValueError("--pretrain-epochs must be at least 1")
        if self.tag_vocab_size < 1:
            raise ValueError("--tag-vocab-size must be at least 1")
        if not 0 <= self.augment_shift < 0.5:
            raise ValueError(f"--augment-shift {self.augment_shift}: a fraction of the frame "
                             "size, from 0 to below 0.5")
        if not 0 <= self.augment_placement <= 1:
            raise ValueError(f"--augment-placement {self.augment_placement}: a share of the "
                             "training clips, from 0 to 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError("--max-frames must be at least 1")
        if self.checkpoint_every < 1:
            raise ValueError("--checkpoint-every must be at least 1")
        if self.batch_size % self.workers:
            raise ValueError("--batch-size must be a multiple of --workers")
        if (Path(self.checkpoint) / "ray" / "train").exists() and not self.resume:
            raise ValueError(f"{self.checkpoint} already holds a training run; pass --resume "
                             "to continue it, or choose another --checkpoint")
        if self.lr_clip is None:
            pretrained = BackboneSpec.parse(self.backbone).pretrained
            self.lr_clip = 1e-6 if pretrained else self.lr

    @property
    def disabled_parts(self) -> list[str]:
        return listed(self.disable)

    @property
    def pretrain_task_list(self) -> tuple[str, ...]:
        return tuple(listed(self.pretrain_tasks))

    @property
    def enabled_parts(self) -> list[str]:
        return listed(self.enable)

    @property
    def model_overrides(self) -> dict:
        frames = {} if self.max_frames is None else {"max_frames": self.max_frames}
        return {"backbone": self.backbone, **frames,
                "semantic_levels": tuple(listed(self.semantic_levels)),
                **dict.fromkeys(self.disabled_parts, False),
                **dict.fromkeys(self.enabled_parts, True)}


def resolve_max_frames(config: TrainConfig, snapshot: IngestSnapshot) -> TrainConfig:
    """``config`` with ``max_frames`` set: ``--max-frames`` as given, else the most frames
    per video the ingest output stores (its recorded ``--max-frames``).

    An output whose run log records no sampling settings leaves it unset (the
    model config's default applies).
    """
    stored = snapshot.settings.get("sampling", {}).get("max_frames")
    if config.max_frames is None:
        if stored is None:
            log.warning("%s records no sampling settings: --max-frames falls back to the "
                        "model's default", config.data)
            return config
        log.info("max_frames %d, as the ingest output was sampled", stored)
        return dataclasses.replace(config, max_frames=stored)
    if stored is not None and config.max_frames > stored:
        log.info("--max-frames %d exceeds the %d frames per video the ingest output stores at "
                 "most: the extra positions are padding", config.max_frames, stored)
    return config


def training_data(config: TrainConfig, snapshot: IngestSnapshot, model_cfg, num_pairs: int):
    """The train split's pairs, and whether they are cached (``--cache-data``).

    Cached, they are materialized in the object store and each worker reads its
    shard once into memory: later epochs cost no decoding (the workers may hold
    every CPU) and batches may be drawn in any order. Streamed, Ray Data decodes
    every epoch and needs a CPU beside the workers.
    """
    import ray

    dataset = pair_dataset(snapshot, "train", model_cfg)
    size = num_pairs * pair_nbytes(model_cfg)
    if cache_pairs(config, size, ray.cluster_resources()):
        log.info("caching %d preprocessed training pairs (about %.0f MB)", num_pairs, size / 1e6)
        return dataset.materialize(), True
    return dataset, False


def cache_pairs(config: TrainConfig, size: int, resources: dict[str, float]) -> bool:
    """Whether ``size`` bytes of training pairs are cached on a cluster with ``resources``
    (``--cache-data``; auto: when they fit in half the object store).

    Raises ValueError when the run cannot stream them: hard negatives draw batches
    from all pairs at once, and streaming needs a CPU the workers leave free.
    """
    store = resources.get("object_store_memory", 0)
    if config.cache_data == "always" or (config.cache_data == "auto" and size <= store / 2):
        return True
    if config.hard_negatives:
        raise ValueError(f"--hard-negatives needs the pairs cached, and {size / 1e9:.1f} GB "
                         "exceed half the object store (or --cache-data never was given)")
    cpus = resources.get("CPU", 0)
    if config.workers * config.cpus_per_worker >= cpus:
        raise ValueError(
            f"the training workers would hold all {cpus:g} CPUs and leave none to stream the "
            "data: lower --cpus-per-worker, or cache the data (--cache-data always)")
    return False


def run_config(config: TrainConfig, output: Path):
    """Ray Train's ``RunConfig`` of the job: run state under ``output/ray/``, checkpoint
    retention, and ``--max-failures`` restarts of a failed worker group."""
    import ray.train

    return ray.train.RunConfig(
        name="train",
        storage_path=str(output / "ray"),
        # keeps the best epoch on val for final/; Ray also always keeps the latest
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute="val_t2v_R@1"),
        failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
    )


def run_training(config: TrainConfig, snapshot: IngestSnapshot):
    """Fit on the connected Ray cluster; returns the Ray Train ``Result``.

    ``snapshot`` is the committed ingest run of ``--data`` that ``main`` opened before
    starting Ray; every read of the job uses that one.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    config = dataclasses.replace(resolve_max_frames(config, snapshot), device=cluster_device(
        config.device, ray.cluster_resources().get("GPU", 0), config.workers))
    model_cfg = ModelConfig.from_dict({"name": config.model, **config.model_overrides})
    train_captions = read_captions(snapshot, "train")
    num_pairs = train_captions.num_rows
    if model_cfg.semantic_levels:  # each level's tags: the most frequent in the captions
        vocabulary = tag_vocabulary(train_captions.column("caption").to_pylist(),
                                    config.tag_vocab_size, model_cfg.semantic_levels)
        empty = [level for level, tags in zip(model_cfg.semantic_levels, vocabulary,
                                              strict=True) if not tags]
        if empty:
            raise ValueError(f"--semantic-levels: the training captions hold no "
                             f"{', '.join(empty)} tags; leave that level out")
        model_cfg = model_cfg.replace(tag_vocab=vocabulary)
    read_captions(snapshot, config.val_split)  # fail now, not after the first epoch
    output = Path(config.checkpoint).resolve()
    dataset, cached = training_data(config, snapshot, model_cfg, num_pairs)
    settings = LoopSettings(
        data=config.data, data_version=snapshot.version, val_split=config.val_split,
        model=model_cfg, epochs=config.epochs, batch_size=config.batch_size,
        num_pairs=num_pairs, cached=cached, hard_negatives=config.hard_negatives,
        hard_negatives_by=config.hard_negatives_by,
        shuffle_buffer=config.shuffle_buffer, augment_shift=config.augment_shift,
        augment_placement=config.augment_placement,
        pretrain_tasks=config.pretrain_task_list, pretrain_epochs=config.pretrain_epochs,
        first_stage_loss=config.first_stage_loss, lr=config.lr, lr_clip=config.lr_clip,
        weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio,
        grad_clip=config.grad_clip, checkpoint_every=config.checkpoint_every, seed=config.seed)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"settings": settings},
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.workers, use_gpu=config.device == "cuda",
            resources_per_worker={"CPU": config.cpus_per_worker,
                                  **({"GPU": 1} if config.device == "cuda" else {})},
        ),
        run_config=run_config(config, output),
        datasets={"train": dataset},
    )
    return trainer.fit()


def export(result, output: Path) -> dict:
    """Write ``final/`` (best on val), ``metrics.jsonl`` and ``curves.png``; return the best."""
    with result.checkpoint.as_directory() as folder:
        history = json.loads((Path(folder) / HISTORY_FILE).read_text())
    best_epoch = history["best"]["epoch"]
    best = next(
        (c for c, m in result.best_checkpoints if m.get("epoch") == best_epoch), None
    ) or result.checkpoint
    final = output / FINAL_FOLDER
    if final.exists():
        shutil.rmtree(final)
    with best.as_directory() as folder:
        if json.loads((Path(folder) / HISTORY_FILE).read_text())["epoch"] != best_epoch:
            log.warning("the best epoch's checkpoint was not kept; exporting the latest")
        shutil.copytree(Path(folder) / MODEL_DIR, final)
    with open(output / "metrics.jsonl", "w") as f:
        for row in history["epochs"]:
            f.write(json.dumps(row) + "\n")
    plot_curves(history["epochs"], output / "curves.png")
    return history["best"]


def plot_curves(rows: list[dict], path: Path) -> None:
    """Training loss and validation R@1 per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [r["loss"] for r in rows], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    right.plot(epochs, [r.get("val_t2v_R@1", float("nan")) for r in rows], marker="o")
    right.set(xlabel="epoch", ylabel="R@1 (%)", title="validation text-to-video R@1")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def failure_line(exc: Exception) -> str:
    """One line for Ray Train's ``TrainingFailedError``: the first line of what failed (a
    worker's error, lowest rank first, or the controller's). Its whole message holds the
    workers' tracebacks, which Ray Train's log has already shown."""
    failures = getattr(exc, "worker_failures", None)
    if failures:
        rank = min(failures)
        where, cause = f"worker {rank}: ", failures[rank]
    else:
        where, cause = "", getattr(exc, "controller_failure", None) or exc
    first = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
    return f"{where}{type(cause).__name__}: {first}".rstrip(": ")


def main(argv: list[str] | None = None) -> int:
    # Input errors are refused before Ray starts, in one line with exit status 2: bad flags
    # and an existing run without --resume by the parse, an output with no committed ingest
    # run here.
    config = parse_config(TrainConfig, __doc__, argv)
    try:
        snapshot = open_ingest(config.data)  # one committed run for every read of the job
    except (FileNotFoundError, ValueError) as exc:  # IngestFormatError is a ValueError
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    config = join_ray(config)
    quiet_ray_data()
    import ray.train

    try:
        result = run_training(config, snapshot)
    except ValueError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    except ray.train.TrainingFailedError as exc:
        print(f"train: error: training failed after {config.max_failures} restart(s) "
              f"(--max-failures): {failure_line(exc)}", file=sys.stderr)
        return 1
    best = export(result, Path(config.checkpoint).resolve())
    print(f"train done: best epoch {best['epoch']}, val t2v R@1 {best['val_t2v_R@1']:.1f}%, "
          f"model in {Path(config.checkpoint) / FINAL_FOLDER}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

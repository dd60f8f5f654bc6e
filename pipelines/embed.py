r"""Embed job: ingest output -> one LanceDB row per video (search vector + rerank features).

    vtr embed --data ingest_out/ --checkpoint ckpt/final \
        --db s3://bucket/lancedb --table videos [--update | --overwrite]

Ray Data reads the ingest output's newest committed run and runs the model's
video side in an actor pool (the checkpoint loaded once per actor). The table
records, in the same commit as its rows, the ingest run and the checkpoint
they come from (``index.table.TableState``). ``--update`` embeds only the
videos that ingest runs wrote since then, deletes the rows of removed videos,
and commits both in one ``merge_insert``; a first run, a new checkpoint, or
``--overwrite`` writes every row and swaps the whole table in with one commit
(readers see the old rows until then, never an empty table). Then a scalar
index on ``video_id`` and, once the table holds ``--index-min-rows`` rows, a
vector index: retrained after a rebuild, updated after an update (``optimize``).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import sys
import time
from dataclasses import dataclass, field

import pyarrow as pa

from pipelines.core import storage
from pipelines.core.devices import DEVICES, cluster_device
from pipelines.core.job_config import flag
from pipelines.core.ray_job import start_job
from pipelines.core.sql import sql_in
from pipelines.index.embedder import embedded_rows
from pipelines.index.rerank_features import PRECISIONS, FeatureLayout, precision_of
from pipelines.index.table import (
    FILE_VERSION,
    INDEX_TYPES,
    ROW_KEY,
    TableChanges,
    TableState,
    another_model,
    check_update,
    ensure_indexes,
    keep_state,
    plan_update,
    resplit_rows,
    table_rows,
    table_schema,
    table_state,
    vector_index_type,
)
from pipelines.ingestion import schemas
from pipelines.ingestion.output import open_ingest, video_splits
from vtr_models import open_model, training_settings

log = logging.getLogger("embed")


@dataclass
class EmbedConfig:
    """Every setting of the embed job; each field is a CLI flag of the same name."""

    data: str = field(metadata=flag("ingest output folder or s3:// prefix (videos/)"))
    checkpoint: str = field(metadata=flag(
        "the model: a checkpoint folder (ckpt/final), or a backbone with weights, "
        "NAME:PRETRAINED (ViT-B-32:openai, ViT-B-32:/models/clip.bin), for zero-shot "
        "search with the untrained full model (CLIP's mean-pooling ranking)"))
    db: str = field(metadata=flag("LanceDB URI: a local folder or s3://bucket/prefix"))
    table: str = field(default="videos", metadata=flag("table to create or update"))
    split: str | None = field(default=None, metadata=flag(
        "embed only the videos captioned in this split (e.g. test, to evaluate through "
        "the index); default: every video"))
    batch_size: int = field(default=32, metadata=flag("videos per forward pass"))
    workers: int | None = field(default=None, metadata=flag(
        "most embedding actors (default: no cap; the pool starts with as many as the "
        "cluster's GPUs or CPUs hold at the sizes below, and grows onto nodes that join "
        "while videos wait)", aliases=("--concurrency",)))
    device: str = field(default="auto", metadata=flag(
        "where the embedding actors run: cuda (each reserves --gpus-per-worker), cpu, or "
        "auto (cuda when the Ray cluster has GPUs)", choices=DEVICES))
    gpus_per_worker: float = field(default=0.0, metadata=flag(
        "GPUs per embedding actor, a fraction to share one (default: 1 on cuda)",
        aliases=("--num-gpus-per-worker",)))
    cpus_per_worker: float | None = field(default=None, metadata=flag(
        "CPUs each embedding actor reserves (default: on CPU, all but one CPU of the "
        "smallest node, since Ray Data's file listing and Parquet reads need one CPU free "
        "or the job stalls; 1 with --gpus-per-worker)"))
    threads_per_worker: int | None = field(default=None, metadata=flag(
        "PyTorch threads per embedding actor (default: every CPU of the node with the "
        "default reservation, since the reads are brief and one many-threaded actor uses "
        "the cores best; else the reserved CPUs, rounded up)"))
    local_max_videos: int = field(default=64, metadata=flag(
        "embed in the driver, on its CPU, when at most this many videos need it (starting "
        "the actor pool costs seconds, more than a few dozen videos take); 0: always on Ray"))
    index_min_rows: int = field(default=10_000, metadata=flag(
        "build the vector index once the table holds this many rows (below, exact search "
        "is fast enough)"))
    index_type: str | None = field(default=None, metadata=flag(
        "vector index type (default: the table's own, HNSW_FLAT for a first index: 0.978 "
        "of the exhaustive top 10 at a million rows with no refinement; IVF_PQ builds "
        "fastest, HNSW_SQ's index is smallest); another type than the table's replaces "
        "its index, without embedding anything again",
        choices=INDEX_TYPES))
    feature_precision: str | None = field(default=None, metadata=flag(
        "how the rerank features are stored: float16, or int8 with a scale per frame (half "
        "the bytes on disk and in object storage, scores within about 1e-3, searches no "
        "faster). Default: the table's own, float16 for a new table; another precision "
        "rebuilds the table",
        choices=PRECISIONS))
    update: bool = field(default=False, metadata=flag(
        "bring an existing table up to date with the ingest output: embed only the videos "
        "written since the ingest run the table records, delete removed ones, one commit "
        "(creates the table when there is none; with a new checkpoint, rebuilds it as "
        "--overwrite does)"))
    overwrite: bool = field(default=False, metadata=flag(
        "re-embed every video and swap the new table in with one commit (queries keep "
        "the old rows until the swap)"))
    ray_address: str | None = field(default=None, metadata=flag(
        "Ray cluster to join (default: the one the job was submitted to, else a local one)"))

    def __post_init__(self) -> None:
        self.data = storage.absolute(self.data).rstrip("/")  # one spelling in TableState
        if self.update and self.overwrite:
            raise ValueError("give at most one of --update and --overwrite")
        if self.batch_size < 1:
            raise ValueError("--batch-size must be at least 1")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise ValueError("--cpus-per-worker must be positive")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise ValueError("--threads-per-worker must be at least 1")
        if self.gpus_per_worker < 0:
            raise ValueError("--gpus-per-worker must not be negative")
        if self.gpus_per_worker > 0 and self.device == "cpu":
            raise ValueError("--gpus-per-worker needs --device cuda or auto, not cpu")

    def on_cluster(self, cluster_gpus: float) -> EmbedConfig:
        """These settings with ``--device`` resolved for a cluster with ``cluster_gpus``
        (``cluster_device``) and ``--gpus-per-worker`` 1 on cuda unless given."""
        gpus = self.gpus_per_worker or 1.0
        device = cluster_device(self.device, cluster_gpus, gpus)
        return dataclasses.replace(self, device=device,
                                   gpus_per_worker=gpus if device == "cuda" else 0.0)


@dataclass
class EmbedSummary:
    rebuilt: bool  # the whole table was written (first run, new checkpoint, --overwrite)
    ingest_version: int  # the ingest run the table now holds
    embedded: int
    deleted: int
    unchanged: int
    failed: int
    table_rows: int
    vector_index: bool
    seconds: float

    def __str__(self) -> str:
        if self.rebuilt:
            action = "built"
        elif self.embedded or self.deleted or self.failed:
            action = "updated"
        else:
            action = "already up to date"
        return (f"embed done: table {action} at ingest version {self.ingest_version}: "
                f"{self.embedded} videos embedded, {self.deleted} deleted, {self.unchanged} "
                f"unchanged, {self.failed} failed; table holds {self.table_rows} rows, vector "
                f"index: {'yes' if self.vector_index else 'no'}, in {self.seconds:.1f} s")


@dataclass
class ActorSizes:
    cpus: float  # reserved per actor
    threads: int  # PyTorch threads per actor
    actors: int  # actors the cluster holds now: the pool's size at start


def actor_sizes(config: EmbedConfig, node_cpus: list[float], gpus: float) -> ActorSizes:
    """How big the embedding actors are and how many fit, on nodes with ``node_cpus``."""
    if config.gpus_per_worker:
        cpus = config.cpus_per_worker or 1.0
        fits = gpus / config.gpus_per_worker
        threads = config.threads_per_worker or math.ceil(cpus)
    else:
        smallest = min(node_cpus, default=2.0)
        cpus = config.cpus_per_worker or max(1.0, smallest - 1)
        fits = sum(max(0.0, c - 1) // cpus for c in node_cpus)
        threads = config.threads_per_worker or (
            math.ceil(cpus) if config.cpus_per_worker else int(smallest))
    return ActorSizes(cpus, threads, max(1, int(fits)))


def warn_untrained_first_stage(source: str) -> None:
    """Warn when a checkpoint was trained without the first-stage loss: the vector index
    then searches with vectors training never shaped, and a rerank over few candidates
    may never see the right video (trained without it, a model's first stage once ranked
    the right clip at median 72 of 99 test clips)."""
    training = training_settings(source)  # None for a backbone spec
    if training is not None and not training.get("first_stage_loss"):
        log.warning("%s was trained without a first-stage loss (--first-stage-loss 0): the "
                    "vector index ranks with vectors that training did not shape, so a search "
                    "over few candidates can miss the right video; retrain with "
                    "--first-stage-loss, or search with more --candidates", source)


def run_embed(config: EmbedConfig) -> EmbedSummary:
    """Embed on the connected Ray cluster and commit to the table (see the module doc)."""
    import lance
    import lancedb
    import ray

    start = time.perf_counter()
    config = config.on_cluster(ray.cluster_resources().get("GPU", 0))
    snapshot = open_ingest(config.data)
    if not schemas.has_windows(snapshot.dataset("videos").schema):
        raise ValueError(f"ingest output {config.data} was written before videos had "
                         "windows; rebuild it with vtr ingest --overwrite")
    model, model_id = open_model(config.checkpoint)  # fails here, not in every actor
    warn_untrained_first_stage(config.checkpoint)
    wanted = TableState(config.data, snapshot.version, model_id, config.split)
    splits = video_splits(snapshot)
    ids = snapshot.dataset("videos").to_table(columns=["video_id"]).column(0).to_pylist()
    if config.split is not None:
        ids = [v for v in ids if splits.get(v) == config.split]
        if not ids:
            raise ValueError(f"{config.data}: no videos captioned in split {config.split!r}")
    options = storage.object_store_options(config.db)
    db = lancedb.connect(config.db, storage_options=options)
    existing = db.open_table(config.table) if config.table in db.list_tables().tables else None
    if existing is not None and not (config.update or config.overwrite):
        raise ValueError(f"table {config.table!r} exists; pass --update to bring it up to date "
                         "with the ingest output, or --overwrite to rebuild it")
    # a table keeps its precision unless asked: a scheduled --update never rebuilds for it
    precision = config.feature_precision or (
        precision_of(existing.schema) if existing is not None else "float16")

    def schema_in(layout: FeatureLayout) -> pa.Schema:
        return table_schema(schemas.VIDEOS, model.backbone.embed_dim, model.config.max_frames,
                            snapshot.settings.get("keyword_options"), layout,
                            model.config.fine_grained, tags=bool(model.config.semantic_levels))

    # an overwrite keeps the table's index type unless asked, as it keeps the precision
    index_type = config.index_type or (
        vector_index_type(existing.to_lance()) if existing is not None else None)
    rebuild = existing is None or config.overwrite
    # what is embedded whole gets the packed layout; an update keeps the table's, as it
    # keeps its precision
    schema = schema_in(FeatureLayout(precision, packed=rebuild or FeatureLayout.of(
        existing.schema).packed))
    state = None
    if not rebuild:
        dataset = existing.to_lance()
        state = table_state(dataset)
        if another_model(existing, schema, state, wanted):
            log.info("the table holds model %s with %s features, this run writes %s with %s "
                     "features: re-embedding every video; one commit swaps the new rows in, "
                     "and queries of the old rows work until then",
                     state.model_id if state else "(unrecorded)", precision_of(existing.schema),
                     wanted.model_id, precision)
            rebuild = True
            schema = schema_in(FeatureLayout(precision))
    if rebuild:
        changes = TableChanges(set(ids), set(), set(), 0)
    else:
        check_update(existing, schema, state, wanted, config.table)
        changes = plan_update(dataset, snapshot, state.ingest_version, ids, splits)
    sizes = actor_sizes(config, [n["Resources"]["CPU"] for n in ray.nodes()
                                 if n["Alive"] and n["Resources"].get("CPU")],
                        ray.cluster_resources().get("GPU", 0))
    log.info("embedding %d videos, deleting %d; actors: %d at start, at most %s, %g CPUs and "
             "%d threads each", len(changes.embed), len(changes.remove), sizes.actors,
             config.workers or "what the cluster holds", sizes.cpus, sizes.threads)
    every = rebuild and config.split is None
    batches = (embedded_rows(
        snapshot, None if every else changes.embed, config.checkpoint,
        batch_size=config.batch_size, local_max_videos=config.local_max_videos,
        actors=sizes.actors, concurrency=config.workers, cpus=sizes.cpus,
        threads=sizes.threads, gpus=config.gpus_per_worker,
        layout=FeatureLayout.of(schema))
        if changes.embed else [])
    failures: list[dict] = []
    source = table_rows(batches, schema, splits, failures)
    if rebuild:
        lance.write_dataset(pa.RecordBatchReader.from_batches(schema, source), _table_uri(config),
                            schema=schema, mode="create" if existing is None else "overwrite",
                            data_storage_version=FILE_VERSION,
                            transaction_properties=wanted.properties(), storage_options=options)
    elif changes.embed or changes.remove or changes.resplit:  # else: nothing to commit
        merge = (dataset.merge_insert(ROW_KEY).when_matched_update_all()
                 .when_not_matched_insert_all())
        if changes.remove or changes.embed:
            # a video to embed whose frames fail is absent from the source: its old rows
            # go too, and the next run, finding it missing, tries it again; so do the
            # windows a changed video no longer has (all of one video's go in this commit)
            merge = merge.when_not_matched_by_source_delete(
                sql_in("video_id", changes.remove | changes.embed))
        moved = resplit_rows(dataset, changes.resplit, splits, schema)
        transaction, _ = merge.execute_uncommitted(pa.RecordBatchReader.from_batches(
            schema, itertools.chain(source, moved)))
        transaction.transaction_properties = wanted.properties()
        lance.LanceDataset.commit(dataset, transaction, storage_options=options)
    for failure in failures:
        log.warning("skipped %s (%s): %s", failure["video_id"], failure["uri"], failure["error"])
    table = db.open_table(config.table)
    committed = bool(rebuild or changes.embed or changes.remove or changes.resplit)
    keep_state(table.to_lance(), wanted if committed else state)
    vector_index = ensure_indexes(table, config.index_min_rows, index_type)
    return EmbedSummary(rebuild, snapshot.version, len(changes.embed) - len(failures),
                        len(changes.remove), changes.unchanged, len(failures),
                        table.count_rows(), vector_index, time.perf_counter() - start)


def _table_uri(config: EmbedConfig) -> str:
    return storage.join(storage.absolute(config.db), f"{config.table}.lance")


def main(argv: list[str] | None = None) -> int:
    config = start_job(EmbedConfig, __doc__, argv)
    try:
        summary = run_embed(config)
    except (FileNotFoundError, ValueError) as exc:
        print(f"embed: error: {exc}", file=sys.stderr)
        return 2
    print(summary, flush=True)
    return embed_exit_code(summary)


def embed_exit_code(summary: EmbedSummary) -> int:
    """1 when every video the run tried to embed failed (the table is still committed)."""
    if summary.failed and not summary.embedded:
        print(f"embed: error: all {summary.failed} videos tried failed (see the log)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

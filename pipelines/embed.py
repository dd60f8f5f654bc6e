"""Embed job: ingest output -> one LanceDB row per video (search vector + rerank features).

    python pipelines/embed.py --data ingest_out/ --checkpoint ckpt/final \\
        --db s3://bucket/lancedb --table videos [--batch-size 64] [--num-gpus-per-worker 1]

Ray Data reads ``videos/`` and runs the model's video side in an actor pool
(the checkpoint loaded once per actor). The rows stream into a single LanceDB
``merge_insert`` keyed on ``video_id``: one commit per run, so a re-run leaves
one row per video and a run with another checkpoint replaces the rows. Then
a scalar index on ``video_id`` and, once the table holds ``--index-min-rows``
rows, a vector index; later runs fold new rows into both (``optimize``).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipelines import storage
from pipelines.job_config import flag
from pipelines.ray_job import start_job
from pipelines.train_data import open_part
from pipelines.video_embedder import VideoEmbedder
from pipelines.video_table import KEYWORD_OPTIONS_KEY, METADATA_COLUMNS, table_schema
from vtr_models.checkpoint import load_checkpoint

log = logging.getLogger("embed")
INDEX_TYPES = ("IVF_PQ", "HNSW_SQ")


@dataclass
class EmbedConfig:
    """Every setting of the embed job; each field is a CLI flag of the same name."""

    data: str = field(metadata=flag("ingest output folder or s3:// prefix (videos/)"))
    checkpoint: str = field(metadata=flag("vtr_models checkpoint folder (e.g. ckpt/final)"))
    db: str = field(metadata=flag("LanceDB URI: a local folder or s3://bucket/prefix"))
    table: str = field(default="videos", metadata=flag("table to create or update"))
    split: str | None = field(default=None, metadata=flag(
        "embed only the videos captioned in this split (e.g. test, to evaluate through "
        "the index); default: every video"))
    batch_size: int = field(default=32, metadata=flag("videos per forward pass"))
    concurrency: int | None = field(default=None, metadata=flag(
        "most embedding actors; the pool grows to it while input waits (default: as many "
        "as the cluster's GPUs or CPUs hold, at the sizes below)"))
    num_gpus_per_worker: float = field(default=0.0, metadata=flag(
        "GPUs per embedding actor (0: run on CPU)"))
    cpus_per_worker: float | None = field(default=None, metadata=flag(
        "CPUs each embedding actor reserves (default: on CPU, all but one CPU of the "
        "smallest node, since Ray Data's file listing and Parquet reads need one CPU free "
        "or the job stalls; 1 with --num-gpus-per-worker)"))
    threads_per_worker: int | None = field(default=None, metadata=flag(
        "PyTorch threads per embedding actor (default: every CPU of the node with the "
        "default reservation, since the reads are brief and one many-threaded actor uses "
        "the cores best; else the reserved CPUs, rounded up)"))
    index_min_rows: int = field(default=10_000, metadata=flag(
        "build the vector index once the table holds this many rows (below, exact search "
        "is fast enough)"))
    index_type: str = field(default="IVF_PQ", metadata=flag(
        "vector index type", choices=INDEX_TYPES))
    overwrite: bool = field(default=False, metadata=flag(
        "drop and recreate the table (needed when the model's feature sizes change)"))
    ray_address: str | None = field(default=None, metadata=flag(
        "Ray cluster to join (default: the one the job was submitted to, else a local one)"))

    def __post_init__(self) -> None:
        self.data = storage.absolute(self.data)
        if self.batch_size < 1:
            raise ValueError("--batch-size must be at least 1")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise ValueError("--cpus-per-worker must be positive")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise ValueError("--threads-per-worker must be at least 1")


@dataclass
class EmbedSummary:
    videos_written: int
    videos_failed: int
    table_rows: int
    vector_index: bool
    seconds: float

    def __str__(self) -> str:
        return (f"embed done: {self.videos_written} videos written, {self.videos_failed} failed, "
                f"table holds {self.table_rows} rows, vector index: "
                f"{'yes' if self.vector_index else 'no'}, in {self.seconds:.1f} s")


def ingest_settings(data: str) -> dict:
    """The JSON the ingest job left in ``_SUCCESS`` (empty for older outputs); refuses
    a folder that holds no finished ingest."""
    fs, path = storage.filesystem(storage.join(data, "_SUCCESS"))
    if not fs.exists(path):
        raise FileNotFoundError(f"{data}: no _SUCCESS; not a finished ingest output")
    raw = fs.cat_file(path)
    return json.loads(raw) if raw.strip() else {}


def video_splits(data: str) -> dict[str, str]:
    """The split of each captioned video (its first caption's)."""
    captions = open_part(data, "captions").to_table(columns=["video_id", "split"])
    splits: dict[str, str] = {}
    for video_id, split in zip(captions.column("video_id").to_pylist(),
                               captions.column("split").to_pylist(), strict=True):
        splits.setdefault(video_id, split)
    return splits


def table_rows(batches: Iterable[pa.Table], schema: pa.Schema, splits: dict[str, str],
               failures: list[dict]) -> Iterator[pa.RecordBatch]:
    """Embedder outputs -> record batches of the table's schema; error rows go to ``failures``."""
    for batch in batches:
        failed = pc.is_valid(batch.column("error"))
        failures.extend(batch.filter(failed).select(["video_id", "uri", "error"]).to_pylist())
        good = batch.filter(pc.invert(failed))
        if good.num_rows == 0:
            continue
        split = pa.array([splits.get(v) for v in good.column("video_id").to_pylist()], pa.string())
        good = good.append_column("split", split)
        yield from good.select(schema.names).cast(schema).to_batches()


def open_table(db, name: str, schema: pa.Schema, overwrite: bool):
    """The table to upsert into: created when missing, checked against ``schema`` otherwise."""
    if name in db.list_tables().tables:
        if overwrite:
            db.drop_table(name)
        else:
            table = db.open_table(name)
            theirs = table.schema.remove_metadata()
            ours = schema.remove_metadata()
            if not theirs.equals(ours):
                raise ValueError(
                    f"table {name!r} has another layout than this checkpoint writes (different "
                    "model or feature sizes); pass --overwrite to replace it, or choose another "
                    f"--table.\n  table: {theirs}\n  checkpoint: {ours}")
            return table
    return db.create_table(name, schema=schema)


def ensure_indexes(table, min_rows: int, index_type: str) -> bool:
    """Scalar index on ``video_id``; vector index once large enough. Returns: vector index?"""
    from lancedb.index import BTree, HnswSq, IvfPq

    indexed = {col for index in table.list_indices() for col in index.columns}
    if "video_id" not in indexed:
        table.create_index("video_id", config=BTree())
    has_vector_index = "vector" in indexed
    if not has_vector_index and table.count_rows() >= min_rows:
        log.info("building a %s index on %d rows", index_type, table.count_rows())
        config = {"IVF_PQ": IvfPq, "HNSW_SQ": HnswSq}[index_type](distance_type="cosine")
        table.create_index("vector", config=config)
        has_vector_index = True
    table.optimize()  # fold the run's new rows into the indexes and compact its fragments
    return has_vector_index


@dataclass
class ActorSizes:
    cpus: float  # reserved per actor
    threads: int  # PyTorch threads per actor
    actors: int  # most actors in the pool


def actor_sizes(config: EmbedConfig, node_cpus: list[float], gpus: float) -> ActorSizes:
    """How big the embedding actors are and how many fit, on nodes with ``node_cpus``."""
    if config.num_gpus_per_worker:
        cpus = config.cpus_per_worker or 1.0
        fits = gpus / config.num_gpus_per_worker
        threads = config.threads_per_worker or math.ceil(cpus)
    else:
        smallest = min(node_cpus, default=2.0)
        cpus = config.cpus_per_worker or max(1.0, smallest - 1)
        fits = sum(max(0.0, c - 1) // cpus for c in node_cpus)
        threads = config.threads_per_worker or (
            math.ceil(cpus) if config.cpus_per_worker else int(smallest))
    return ActorSizes(cpus, threads, config.concurrency or max(1, int(fits)))


def run_embed(config: EmbedConfig) -> EmbedSummary:
    """Embed on the connected Ray cluster and upsert into the table."""
    import lancedb
    import ray

    start = time.perf_counter()
    settings = ingest_settings(config.data)
    model = load_checkpoint(config.checkpoint)  # fails here, not in every actor
    splits = video_splits(config.data)
    videos = open_part(config.data, "videos")
    schema = table_schema(videos.schema, model.backbone.embed_dim, model.config.max_frames)
    keyword_options = settings.get("keyword_options")
    fs, path = storage.arrow_filesystem(storage.join(config.data, "videos"))
    rows = ray.data.read_parquet(path, filesystem=fs).select_columns(
        [*METADATA_COLUMNS, "frames"])
    if config.split is not None:
        from ray.data.expressions import col

        wanted = sorted(v for v, s in splits.items() if s == config.split)
        if not wanted:
            raise ValueError(f"{config.data}: no videos captioned in split {config.split!r}")
        rows = rows.filter(expr=col("video_id").is_in(wanted))
    sizes = actor_sizes(config, [n["Resources"]["CPU"] for n in ray.nodes()
                                 if n["Alive"] and n["Resources"].get("CPU")],
                        ray.cluster_resources().get("GPU", 0))
    log.info("embedding actors: up to %d, %g CPUs and %d threads each", sizes.actors,
             sizes.cpus, sizes.threads)
    embedded = rows.map_batches(
        VideoEmbedder,
        fn_constructor_kwargs={"checkpoint": config.checkpoint, "threads": sizes.threads,
                               "device": "cuda" if config.num_gpus_per_worker else "cpu"},
        batch_size=config.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=sizes.actors),
        num_cpus=sizes.cpus,
        num_gpus=config.num_gpus_per_worker or None,
    )
    db = lancedb.connect(config.db)
    table = open_table(db, config.table, schema, config.overwrite)
    failures: list[dict] = []
    reader = pa.RecordBatchReader.from_batches(schema, table_rows(
        embedded.iter_batches(batch_format="pyarrow", batch_size=None), schema, splits,
        failures))
    result = (table.merge_insert("video_id").when_matched_update_all()
              .when_not_matched_insert_all().execute(reader))
    for failure in failures:
        log.warning("skipped %s (%s): %s", failure["video_id"], failure["uri"], failure["error"])
    if keyword_options:
        table.update_field_metadata({"path": "vector", "metadata": {
            KEYWORD_OPTIONS_KEY: json.dumps(keyword_options)}})
    vector_index = ensure_indexes(table, config.index_min_rows, config.index_type)
    written = result.num_inserted_rows + result.num_updated_rows
    return EmbedSummary(written, len(failures), table.count_rows(), vector_index,
                        time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    config = start_job(EmbedConfig, __doc__.splitlines()[0], argv)
    try:
        summary = run_embed(config)
    except (FileNotFoundError, ValueError) as exc:
        print(f"embed: error: {exc}", file=sys.stderr)
        return 2
    print(summary, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

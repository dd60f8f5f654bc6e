"""The video side of a trained model as a Ray Data UDF: ingest rows -> video table rows.

A callable class, so that Ray Data runs it in an actor pool and each actor
loads the checkpoint once; it is also plain Python, so tests call it directly.
A video whose frames cannot be decoded becomes an error row (``error`` set,
no features) instead of failing the batch: the job records and skips it.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from pipelines.core import storage
from pipelines.core.actor_pools import growing_pool
from pipelines.core.failpoints import failpoint
from pipelines.core.in_driver import map_batches_here
from pipelines.index.rerank_features import DEFAULT_LAYOUT, FeatureLayout
from pipelines.index.table import METADATA_COLUMNS, feature_columns
from pipelines.ingestion.output import IngestSnapshot
from vtr_models import open_model


class VideoEmbedder:
    """Encode batches of ``videos/`` rows with the checkpoint's video encoder."""

    def __init__(self, checkpoint: str, device: str = "cpu", threads: int | None = None,
                 layout: FeatureLayout = DEFAULT_LAYOUT) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.model, self.model_id = open_model(checkpoint, device=str(self.device))
        self.layout = layout  # of the rerank features

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Metadata and features of each decodable video; the others with only ``error`` set."""
        failpoint("embed.batch")
        frames, masks, errors = [], [], []
        for jpegs in batch.column("frames").to_pylist():
            try:
                video, mask = self.model.preprocess(jpegs or [])
            except Exception as exc:  # noqa: BLE001 - any bad frame costs its video only
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            frames.append(video)
            masks.append(mask)
            errors.append(None)
        failed = pa.array([e is not None for e in errors])
        parts = [batch.select(["video_id", "uri"]).filter(failed).append_column(
            "error", pa.array([e for e in errors if e is not None], pa.string()))]
        if frames:
            with torch.no_grad():
                video = self.model.encode_video(torch.stack(frames).to(self.device),
                                                torch.stack(masks).to(self.device))
                vector = self.model.video_embedding(video)
            good = batch.select(list(METADATA_COLUMNS)).filter(pc.invert(failed))
            tags = self.model.predict_tags(video) if len(self.model.semantic) else None
            columns = feature_columns(video, vector, self.model_id, self.layout, tags)
            parts.insert(0, pa.table({**{c: good.column(c) for c in METADATA_COLUMNS},
                                      **columns}))
        # missing columns become nulls: failed rows carry no features, good rows no error
        return pa.concat_tables(parts, promote_options="default")


def embedded_rows(snapshot: IngestSnapshot, videos: set[str] | None, checkpoint: str,
                  batch_size: int, local_max_videos: int, actors: int, concurrency: int | None,
                  cpus: float, threads: int, gpus: float,
                  layout: FeatureLayout = DEFAULT_LAYOUT) -> Iterable[pa.Table]:
    """The embedder's output for ``videos`` of the ingest run (None: every video), rerank
    features in ``layout``: in the driver when they are at most ``local_max_videos``,
    else streamed from a growing pool of Ray Data actors (``actors`` at start, at most
    ``concurrency``), each with ``cpus``, ``threads`` and ``gpus``."""
    columns = [*METADATA_COLUMNS, "frames"]
    embedder_kwargs = {"checkpoint": checkpoint, "threads": threads,
                       "device": "cuda" if gpus else "cpu", "layout": layout}
    if videos is not None and len(videos) <= local_max_videos:
        rows = snapshot.dataset("videos").to_table(
            columns=columns, filter=pads.field("video_id").isin(sorted(videos)))
        embedder_kwargs["device"] = "cpu"  # the driver's
        return map_batches_here(VideoEmbedder(**embedder_kwargs), rows, batch_size)
    import ray
    from ray.data.expressions import col

    fs, _ = storage.arrow_filesystem(snapshot.output)
    rows = ray.data.read_parquet(snapshot.files("videos"), filesystem=fs).select_columns(columns)
    if videos is not None:
        rows = rows.filter(expr=col("video_id").is_in(sorted(videos)))
    return rows.map_batches(
        VideoEmbedder,
        fn_constructor_kwargs=embedder_kwargs,
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=growing_pool(actors, concurrency),
        num_cpus=cpus,
        num_gpus=gpus or None,
    ).iter_batches(batch_format="pyarrow", batch_size=None)

"""Ingest output -> model-ready (video, caption) pairs, for training and evaluation.

JPEG decoding, frame preprocessing and tokenization happen here, in Ray Data
actors (or in-process for evaluation), never in the training loop. Videos are
keyed by a stable 63-bit hash of ``video_id`` so that the contrastive loss can
recognise captions of the same video across workers.
"""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict

import numpy as np
import open_clip
import pyarrow as pa

from pipelines.core import storage
from pipelines.ingestion.output import IngestSnapshot, as_snapshot, first_windows, read_captions
from vtr_models import BackboneSpec, ModelConfig, create_inputs


def video_key(video_id: str) -> int:
    """A stable int64 id for a ``video_id`` string (same on every worker and run)."""
    return int.from_bytes(hashlib.blake2b(video_id.encode(), digest_size=8).digest(), "big") >> 1


def captions_by_video(captions: pa.Table) -> dict[str, list[tuple[str, list[str]]]]:
    grouped: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for vid, caption, keywords in zip(*(captions.column(c).to_pylist() for c in
                                        ("video_id", "caption", "keywords")), strict=True):
        grouped[vid].append((caption, keywords or []))
    return dict(grouped)


@functools.lru_cache(maxsize=4)
def _inputs(config: ModelConfig):
    """Preprocessor and tokenizer per model config, built once per worker process."""
    return create_inputs(config)


def encode_pairs(
    batch: pa.Table, config: ModelConfig, captions: dict[str, list[tuple[str, list[str]]]]
) -> dict[str, np.ndarray]:
    """Ray Data UDF: ``videos/`` rows -> one preprocessed row per (video, caption) pair.

    A plain function (tasks, not actors), so Ray Data fuses it with the Parquet
    read: on a small machine whose CPUs the training workers hold, the data
    side then needs one free CPU, not one per stage.
    """
    preprocess, tokenizer = _inputs(config)
    frames, masks, texts, keywords, keys = [], [], [], [], []
    for vid, jpegs in zip(batch.column("video_id").to_pylist(),
                          batch.column("frames").to_pylist(), strict=True):
        pairs = captions.get(vid)
        if not pairs:
            continue
        video, mask = preprocess(jpegs)
        for caption, kws in pairs:
            frames.append(video)
            masks.append(mask)
            texts.append(caption)
            keywords.append(kws)
            keys.append(video_key(vid))
    if not texts:
        return {}
    kw_tokens, kw_mask = tokenizer.keywords(keywords, config.max_keywords)
    return {
        "frames": np.stack([f.numpy() for f in frames]),
        "frame_mask": np.stack([m.numpy() for m in masks]),
        "tokens": tokenizer.captions(texts).numpy(),
        "keyword_tokens": kw_tokens.numpy(),
        "keyword_mask": kw_mask.numpy(),
        "video_key": np.asarray(keys, dtype=np.int64),
    }


def pair_nbytes(config: ModelConfig) -> int:
    """Size of one preprocessed pair, dominated by its float32 frames ``[T, 3, H, W]``."""
    size = open_clip.get_model_config(BackboneSpec.parse(config.backbone).name)["vision_cfg"][
        "image_size"]
    height, width = (size, size) if isinstance(size, int) else size
    return config.max_frames * 3 * height * width * 4 + 4096  # + tokens, masks, key


def pair_dataset(data: str | IngestSnapshot, split: str, config: ModelConfig):
    """A Ray Dataset of preprocessed pairs of one split, streamed from the ingest output."""
    import ray
    from ray.data.expressions import col

    snapshot = as_snapshot(data)
    grouped = captions_by_video(read_captions(snapshot, split))
    fs, _ = storage.arrow_filesystem(snapshot.output)
    videos = ray.data.read_parquet(snapshot.files("videos"), filesystem=fs)
    if first_windows(snapshot.dataset("videos")) is not None:
        videos = videos.filter(expr=col("window_start_s") == 0)  # first_windows' rows
    videos = videos.select_columns(["video_id", "frames"])
    return videos.map_batches(
        encode_pairs,
        fn_kwargs={"config": config, "captions": grouped},
        batch_size=8,
        batch_format="pyarrow",
    )

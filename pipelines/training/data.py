"""Ingest output -> model-ready (video, caption) pairs, for training and evaluation.

JPEG decoding, frame preprocessing and tokenization happen here, in Ray Data
actors (or in-process for evaluation), never in the training loop. Videos are
keyed by a stable 63-bit hash of their clip (``clip_id``: the video, or the
span of it a caption tells of) so that the contrastive loss can recognise
captions of the same clip across workers. A caption of the whole video trains
on its video's first window (a clip's one row); a caption with a span, on the
frames inside the span, from the window that holds most of it.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import open_clip
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core import storage
from pipelines.ingestion.output import IngestSnapshot, as_snapshot, read_captions
from pipelines.ingestion.schemas import has_windows
from vtr_models import BackboneSpec, ModelConfig, create_inputs, tag_targets


def video_key(video_id: str) -> int:
    """A stable int64 id for a ``video_id`` string (same on every worker and run)."""
    return int.from_bytes(hashlib.blake2b(video_id.encode(), digest_size=8).digest(), "big") >> 1


def clip_id(video_id: str, start_s: float | None, end_s: float | None) -> str:
    """The id of what a caption tells of: its video, or the span of it the manifest gave."""
    return video_id if start_s is None else f"{video_id}@{start_s:g}-{end_s:g}"


#: a caption as training reads it: (clip id, caption, keywords, span or None)
Caption = tuple[str, str, list[str], tuple[float, float] | None]


def best_window(span: tuple[float, float] | None, windows: list[tuple[float, float]]) -> float:
    """The start of the window a caption trains on, of its video's ``windows`` (``(start_s,
    end_s)``): the first one for a caption of the whole video (a clip's one row), else
    the one that holds most of the span (the earliest of equals)."""
    if span is None or not windows:
        return 0.0
    overlap = [(min(end, span[1]) - max(start, span[0]), -start) for start, end in windows]
    return -max(overlap)[1]


def captions_by_window(captions: pa.Table, windows: pa.Table | None
                       ) -> dict[tuple[str, float], list[Caption]]:
    """The captions each ``videos/`` row trains on, by ``(video_id, window_start_s)``.

    ``windows`` holds ``video_id``, ``window_start_s`` and ``window_end_s`` of the
    videos' rows (None for an output written before windows: every row starts at 0).
    """
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    if windows is not None:
        for vid, start, end in zip(*(windows.column(c).to_pylist() for c in
                                     ("video_id", "window_start_s", "window_end_s")),
                                   strict=True):
            spans[vid].append((start, end))
    grouped: dict[tuple[str, float], list[Caption]] = defaultdict(list)
    for vid, caption, keywords, start, end in zip(*(captions.column(c).to_pylist() for c in (
            "video_id", "caption", "keywords", "start_s", "end_s")), strict=True):
        span = None if start is None else (start, end)
        grouped[(vid, best_window(span, spans.get(vid, [])))].append(
            (clip_id(vid, start, end), caption, keywords or [], span))
    return dict(grouped)


def frames_in_span(jpegs: list[bytes], times: list[float] | None,
                   span: tuple[float, float] | None) -> list[bytes]:
    """A row's frames inside a caption's ``span`` (all of them without one); the frame
    nearest the span's start when none lies inside (a span shorter than a sampling
    period)."""
    if span is None or not times:
        return jpegs
    inside = [j for j, t in zip(jpegs, times, strict=True) if span[0] - 1e-6 <= t < span[1]]
    if inside:
        return inside
    nearest = min(range(len(times)), key=lambda i: abs(times[i] - span[0]))
    return [jpegs[nearest]]


def row_clips(batch: pa.Table, captions: dict[tuple[str, float], list[Caption]]
              ) -> Iterator[tuple[str, list[bytes], list[Caption]]]:
    """For each ``videos/`` row of ``batch`` that captions train on: each of its clips'
    id, frames and captions (a row's whole-video captions share one clip)."""
    starts = (batch.column("window_start_s").to_pylist() if "window_start_s" in
              batch.column_names else [0.0] * batch.num_rows)
    times = (batch.column("timestamps_s").to_pylist() if "timestamps_s" in batch.column_names
             else [None] * batch.num_rows)
    for vid, start, jpegs, stamps in zip(batch.column("video_id").to_pylist(), starts,
                                         batch.column("frames").to_pylist(), times,
                                         strict=True):
        by_clip: dict[str, list[Caption]] = defaultdict(list)
        for caption in captions.get((vid, start), []):
            by_clip[caption[0]].append(caption)
        for clip, items in by_clip.items():
            yield clip, frames_in_span(jpegs, stamps, items[0][3]), items


@functools.lru_cache(maxsize=4)
def _inputs(config: ModelConfig):
    """Preprocessor and tokenizer per model config, built once per worker process."""
    return create_inputs(config)


def encode_pairs(
    batch: pa.Table, config: ModelConfig, captions: dict[tuple[str, float], list[Caption]]
) -> dict[str, np.ndarray]:
    """Ray Data UDF: ``videos/`` rows -> one preprocessed row per (clip, caption) pair.

    A plain function (tasks, not actors), so Ray Data fuses it with the Parquet
    read: on a small machine whose CPUs the training workers hold, the data
    side then needs one free CPU, not one per stage.
    """
    preprocess, tokenizer = _inputs(config)
    frames, masks, texts, keywords, keys = [], [], [], [], []
    for clip, jpegs, items in row_clips(batch, captions):
        video, mask = preprocess(jpegs)
        for _, caption, kws, _ in items:
            frames.append(video)
            masks.append(mask)
            texts.append(caption)
            keywords.append(kws)
            keys.append(video_key(clip))
    if not texts:
        return {}
    kw_tokens, kw_mask = tokenizer.keywords(keywords, config.max_keywords)
    pairs = {
        "frames": np.stack([f.numpy() for f in frames]),
        "frame_mask": np.stack([m.numpy() for m in masks]),
        "tokens": tokenizer.captions(texts).numpy(),
        "keyword_tokens": kw_tokens.numpy(),
        "keyword_mask": kw_mask.numpy(),
        "video_key": np.asarray(keys, dtype=np.int64),
    }
    if config.semantic_levels:  # each caption's tags, the semantic levels' targets
        pairs["tags"] = np.asarray([tag_targets(text, config.tag_vocab, config.semantic_levels)
                                    for text in texts], dtype=np.float32)
    return pairs


def split_captions(snapshot: IngestSnapshot, split: str
                   ) -> dict[tuple[str, float], list[Caption]]:
    """A split's captions by the ``videos/`` row each trains on (``captions_by_window``)."""
    captions = read_captions(snapshot, split)
    videos = snapshot.dataset("videos")
    spanned = pc.is_valid(captions.column("start_s"))
    ids = sorted(set(captions.filter(spanned).column("video_id").to_pylist()))
    windows = None  # without spans, every caption trains on its video's first window
    if ids and has_windows(videos.schema):
        windows = videos.to_table(columns=["video_id", "window_start_s", "window_end_s"],
                                  filter=pc.field("video_id").isin(ids))
    return captions_by_window(captions, windows)


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
    grouped = split_captions(snapshot, split)
    fs, _ = storage.arrow_filesystem(snapshot.output)
    videos = ray.data.read_parquet(snapshot.files("videos"), filesystem=fs)
    columns = ["video_id", "frames"]
    if has_windows(snapshot.dataset("videos").schema):
        columns += ["window_start_s", "timestamps_s"]
        # the windows captions train on (equalities: is_in over a float column matched
        # no row, in Ray Data and in pyarrow alike)
        videos = videos.filter(expr=functools.reduce(operator.or_, (
            col("window_start_s") == start for start in sorted({s for _, s in grouped}))))
    videos = videos.select_columns(columns)
    return videos.map_batches(
        encode_pairs,
        fn_kwargs={"config": config, "captions": grouped},
        batch_size=8,
        batch_format="pyarrow",
    )

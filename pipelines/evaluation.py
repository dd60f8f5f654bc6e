"""Encode one split of an ingest output and score every caption against every video.

In-process (no Ray): evaluation sets are thousands of videos, which one
process encodes in minutes; training calls it on the validation split after
each epoch.
"""

from __future__ import annotations

import pyarrow.compute as pc
import torch

from pipelines.train_data import open_part, read_captions
from vtr_models.metrics import retrieval_metrics
from vtr_models.retrieval_model import RetrievalModel, TextFeatures, VideoFeatures


def _cat(parts: list, cls):
    fields = [[getattr(p, f) for p in parts] for f in cls.__dataclass_fields__]
    return cls(*[None if items[0] is None else torch.cat(items) for items in fields])


@torch.no_grad()
def encode_split(model: RetrievalModel, data: str, split: str, batch_size: int = 32):
    """Text and video features of a split, with the caption -> video id map.

    Returns ``(text, video, text_video_ids, video_ids)``.
    """
    model.eval()
    captions = read_captions(data, split)
    wanted = sorted(set(captions.column("video_id").to_pylist()))
    videos = open_part(data, "videos").to_table(
        columns=["video_id", "frames"], filter=pc.field("video_id").isin(wanted)
    )
    video_ids = videos.column("video_id").to_pylist()
    known = set(video_ids)
    keep = [i for i, v in enumerate(captions.column("video_id").to_pylist()) if v in known]
    captions = captions.take(keep)
    video_parts = []
    for start in range(0, videos.num_rows, batch_size):
        frames = videos.column("frames").slice(start, batch_size).to_pylist()
        video_parts.append(model.encode_video(*model.preprocess.batch(frames)))
    text_parts = []
    texts = captions.column("caption").to_pylist()
    keywords = [k or [] for k in captions.column("keywords").to_pylist()]
    for start in range(0, len(texts), batch_size):
        tokens = model.tokenizer.captions(texts[start : start + batch_size])
        kw, kw_mask = model.tokenizer.keywords(keywords[start : start + batch_size],
                                               model.config.max_keywords)
        text_parts.append(model.encode_text(tokens, kw, kw_mask))
    return (_cat(text_parts, TextFeatures), _cat(video_parts, VideoFeatures),
            captions.column("video_id").to_pylist(), video_ids)


def evaluate_split(model: RetrievalModel, data: str, split: str, batch_size: int = 32) -> dict:
    """Full-model retrieval metrics of a split (R@K in percent, MdR, MnR, sizes)."""
    text, video, text_video_ids, video_ids = encode_split(model, data, split, batch_size)
    with torch.no_grad():
        scores = model.score(text, video)
    metrics = retrieval_metrics(scores, text_video_ids, video_ids)
    return {**metrics, "num_videos": len(video_ids), "num_captions": len(text_video_ids)}

"""Encode one split of an ingest output and score every caption against every video.

In-process (no Ray): evaluation sets are thousands of videos, which one
process encodes in minutes. Reading and preprocessing (``load_split``) are
apart from encoding (``encode_split``) so that training reads its validation
split once and only re-encodes it after each epoch.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import pyarrow.compute as pc
import torch

from pipelines.ingestion.output import (
    IngestSnapshot,
    as_snapshot,
    open_part,
    read_captions,
)
from pipelines.ingestion.schemas import has_windows
from pipelines.training.data import row_clips, split_captions
from vtr_models import RetrievalModel, TextFeatures, VideoFeatures, rank_metrics, retrieval_metrics


@dataclass
class SplitInputs:
    """A split, preprocessed for one model and cut into batches."""

    video_batches: list[tuple[torch.Tensor, torch.Tensor]]  # (frames, frame_mask)
    text_batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # tokens, kw, kw mask
    text_video_ids: list[str]  # the video of each caption, in caption order
    video_ids: list[str]


def _cat(parts: list, cls):
    fields = [[getattr(p, f) for p in parts] for f in cls.__dataclass_fields__]
    return cls(*[None if items[0] is None else torch.cat(items) for items in fields])


def load_split(model: RetrievalModel, data: str | IngestSnapshot, split: str,
               batch_size: int = 32) -> SplitInputs:
    """Read a split's captions and the frames of their videos, preprocessed for ``model``
    (both from one committed ingest run)."""
    snapshot = as_snapshot(data)
    grouped = split_captions(snapshot, split)
    part = open_part(snapshot, "videos")
    wanted = pc.field("video_id").isin(sorted({vid for vid, _ in grouped}))
    columns = ["video_id", "frames"]
    if has_windows(part.schema):
        columns += ["window_start_s", "timestamps_s"]
        wanted &= functools.reduce(operator.or_, (  # not isin: over floats it matched none
            pc.field("window_start_s") == start for start in sorted({s for _, s in grouped})))
    video_ids, frames, texts, keywords, text_video_ids = [], [], [], [], []
    for clip, jpegs, items in row_clips(part.to_table(columns=columns, filter=wanted), grouped):
        video_ids.append(clip)
        frames.append(jpegs)
        for _, caption, kws, _ in items:
            texts.append(caption)
            keywords.append(kws)
            text_video_ids.append(clip)
    video_batches = [model.preprocess.batch(frames[start:start + batch_size])
                     for start in range(0, len(frames), batch_size)]
    text_batches = [
        (model.tokenizer.captions(texts[start : start + batch_size]),
         *model.tokenizer.keywords(keywords[start : start + batch_size],
                                   model.config.max_keywords))
        for start in range(0, len(texts), batch_size)
    ]
    return SplitInputs(video_batches, text_batches, text_video_ids, video_ids)


@torch.no_grad()
def encode_split(model: RetrievalModel, inputs: SplitInputs) -> tuple[TextFeatures, VideoFeatures]:
    """Text and video features of a preprocessed split (the model in eval mode), on the
    model's device (a training run's validation on a GPU worker, ``evaluate --device``)."""
    model.eval()
    device = next(model.parameters()).device
    video = _cat([model.encode_video(*(t.to(device) for t in batch))
                  for batch in inputs.video_batches], VideoFeatures)
    text = _cat([model.encode_text(*(t.to(device) for t in batch))
                 for batch in inputs.text_batches], TextFeatures)
    return text, video


def evaluate_split(model: RetrievalModel, inputs: SplitInputs) -> dict:
    """Full-model retrieval metrics of a split (R@K in percent, MdR, MnR, sizes), and
    ``first_stage``: text-to-video by the first-stage vectors alone, the ranking the
    vector index gives before the rerank."""
    text, video = encode_split(model, inputs)
    with torch.no_grad():
        scores = model.score(text, video).cpu()
        first_stage = model.first_stage_score(text, video).cpu()
    metrics = retrieval_metrics(scores, inputs.text_video_ids, inputs.video_ids)
    stage_one = retrieval_metrics(first_stage, inputs.text_video_ids, inputs.video_ids)["t2v"]
    return {**metrics, "first_stage": stage_one, "num_videos": len(inputs.video_ids),
            "num_captions": len(inputs.text_video_ids)}


def evaluate_via_index(search, data: str, split: str, candidates: int) -> dict:
    """Text-to-video metrics of a split through the two stages of ``search`` (a VideoSearch).

    Each caption is a query restricted to the split's rows (``split`` column); a
    video outside the ``candidates`` of stage one counts as ranked
    ``candidates + 1``, so R@K for K <= candidates is exact and MdR/MnR are
    lower bounds when some targets fall outside; R@K for K > candidates is None
    (a target outside would count as found there, which it may not be). Ties
    count against the caption,
    as in ``retrieval_metrics``: its rank is the number of candidates scoring at
    least its own video's score, not the video's place in the sorted result.
    """
    captions = read_captions(data, split)
    quoted = split.replace("'", "''")
    ranks = []
    for caption, video_id in zip(captions.column("caption").to_pylist(),
                                 captions.column("video_id").to_pylist(), strict=True):
        found = search.search(caption, k=candidates, candidates=candidates,
                              where=f"split = '{quoted}'")
        own = found.loc[found["video_id"] == video_id, "score"]
        ranks.append(int((found["score"] >= own.iloc[0]).sum()) if len(own) else candidates + 1)
    metrics = {name: (None if name.startswith("R@") and int(name[2:]) > candidates else value)
               for name, value in rank_metrics(torch.tensor(ranks)).items()}
    return {"t2v": metrics, "num_videos": search.table.count_rows(f"split = '{quoted}'"),
            "num_captions": len(ranks), "candidates": candidates}

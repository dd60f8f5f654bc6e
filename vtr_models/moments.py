"""Where in a video a caption matches: per-frame evidence and the best span of seconds.

The evidence is the full model's own word-to-frame similarity, the fine term's
second direction: for each frame, the cosine of its best-matching word. Not the
text-conditioned pooling's attention, for two reasons. Attention is a softmax
over one video's frames, so every video gets a peak whether anything matches or
not, and its weights cannot be compared across videos; a cosine can. And the
fine term is the part that learns which frames carry a caption's events: on the
synthetic benchmark it ranks a caption's own clip first within its group 91 % of
the time, the pooling alone at chance (``docs/synthetic-benchmark.md``). A model
without the fine term (``meanp``, ablations) uses the cosine of the caption
feature with each temporal frame feature instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vtr_models.frame_thinning import even_indices
from vtr_models.retrieval_model import RetrievalModel, TextFeatures, VideoFeatures

#: a frame is in the best span while its evidence is at least this far from the row's
#: worst frame's towards its best frame's (0: every frame, 1: the best frame only). Low,
#: because the evidence of a matching moment is not flat: on the long-video benchmark
#: (docs/search.md) it falls across an event from its first frame, and a level of 0.5
#: cut the spans to a second or two (R1@0.5 4.0 %, against 58.6 % at 0.1)
SPAN_LEVEL = 0.1


@dataclass(frozen=True)
class Moment:
    """A span of a video, in seconds, and the mean evidence of its frames."""

    start_s: float
    end_s: float
    score: float


@torch.no_grad()
def frame_evidence(model: RetrievalModel, text: TextFeatures,
                   video: VideoFeatures) -> torch.Tensor:
    """``[Nt, Nv, T]``: how well each frame of each video matches each text (see the
    module doc); padded frames are ``-inf``."""
    if model.fine_gate is not None and text.tokens is not None and video.local is not None:
        words = F.normalize(text.tokens, dim=-1)
        sim = torch.einsum("ald,btd->ablt", words, video.local)
        evidence = sim.masked_fill(~text.mask.bool()[:, None, :, None], -torch.inf).amax(dim=-2)
    else:
        evidence = torch.einsum("ad,btd->abt", F.normalize(text.global_feature, dim=-1),
                                F.normalize(video.frames, dim=-1))
    return evidence.masked_fill(~video.mask.bool()[None], -torch.inf)


@torch.no_grad()
def example_evidence(example: torch.Tensor, video: VideoFeatures) -> torch.Tensor:
    """``[Nv, T]``: how well each frame of each video matches an example instead of a
    text, its ``[Q, D]`` temporal frame features (an image's one frame, or a video's
    frames): each frame's cosine with the example frame it is most like. A search by
    example has no words, so the frames themselves are compared; padded frames are
    ``-inf``."""
    sim = torch.einsum("qd,btd->bqt", F.normalize(example, dim=-1),
                       F.normalize(video.frames, dim=-1)).amax(dim=1)
    return sim.masked_fill(~video.mask.bool(), -torch.inf)


def frame_times(stored_times: list[float], model_frames: int, max_frames: int) -> list[float]:
    """The time (s) of each of a row's ``model_frames`` frames: the model took them from
    the row's stored frames by ``even_indices``, as its preprocessing thins them."""
    return [stored_times[i] for i in even_indices(len(stored_times), max_frames)][:model_frames]


def best_moment(evidence: torch.Tensor, times: list[float], duration_s: float) -> Moment:
    """The span around the best frame: the run of consecutive frames whose evidence
    stays at least ``SPAN_LEVEL`` of the way from the worst frame's to the best's, that
    is, the frames around the best that do not match about as poorly as the worst.

    ``evidence`` holds the row's frames (``[T]``, padding ``-inf``), ``times`` their
    times. A frame stands for the seconds until the next frame (the last one until
    the video's end), so a span starts at its first frame and ends where the frame
    after its last begins.
    """
    count = len(times)
    values = evidence[:count].float()
    if count == 0 or not torch.isfinite(values).all():
        raise ValueError("a moment needs the evidence of at least one frame, every one finite")
    best = int(values.argmax())
    level = values.min() + SPAN_LEVEL * (values[best] - values.min())
    first = last = best
    while first > 0 and values[first - 1] >= level:
        first -= 1
    while last < count - 1 and values[last + 1] >= level:
        last += 1
    end = times[last + 1] if last + 1 < count else max(duration_s, times[last])
    return Moment(float(times[first]), float(end), float(values[first:last + 1].mean()))

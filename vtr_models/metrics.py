"""Retrieval metrics (R@K, median and mean rank) computed from a text-video similarity matrix.

Conventions, chosen to match how text-video retrieval papers (CLIP4Clip, X-CLIP, ...) report:

* Ranks are 1-based; recalls are percentages in [0, 100].
* Ties count *against* the query: the rank of a target is ``1 + (number of other candidates
  scoring >= it)``. A model that cannot tell a target from its twins must get no credit for
  them, so one that scores everything equally gets R@1 = 0 and rank N, not a perfect score.
  ``ties="optimistic"`` (``1 + number of strictly higher scores``) reproduces the convention of
  published tables that used it, for comparison only.
* Every query is scored on its own: no dual softmax, inverted softmax, or other normalisation
  that uses the rest of the test set, because those leak information across queries.
* Video-to-text with several captions per video: a video query counts as retrieved at the
  *best* (smallest) rank among all of its own captions, i.e. any one of its captions is a correct
  answer. The alternatives (first caption only, or averaging over captions) are also seen in the
  literature; the best-rank rule is the one that treats every ground-truth caption as equally
  valid, which is what a user searching by video would want.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

RECALL_KS: tuple[int, ...] = (1, 5, 10)
TIES: tuple[str, ...] = ("against", "optimistic")


def _as_id_list(ids: Sequence[Hashable] | np.ndarray | torch.Tensor, name: str) -> list[Any]:
    """Turn ids given as a list, numpy array or tensor into a list of hashable Python values.

    ``tolist`` is used where available so that e.g. ``np.int64(3)`` and ``torch.tensor(3)``
    become the plain ``int`` 3 and compare equal to ids given as a Python list.
    """
    if isinstance(ids, str):
        raise TypeError(f"{name} must be a sequence of ids, not a single string")
    values = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    if not isinstance(values, list):  # a 0-d array / tensor
        raise ValueError(f"{name} must be one-dimensional")
    return values


def rank_metrics(ranks: torch.Tensor) -> dict[str, float]:
    """R@K (percent), median rank and mean rank of a 1-D tensor of 1-based ranks."""
    ranks = ranks.to(torch.float64)
    out = {f"R@{k}": float((ranks <= k).to(torch.float64).mean() * 100.0) for k in RECALL_KS}
    # quantile(0.5) interpolates between the two middle values for an even count, like
    # ``np.median``; ``torch.median`` would return the lower of the two instead.
    out["MdR"] = float(torch.quantile(ranks, 0.5))
    out["MnR"] = float(ranks.mean())
    return out


def target_rank(
    scores: torch.Tensor, is_target: torch.Tensor, ties: str = "against"
) -> torch.Tensor:
    """1-based rank of each row's best target among that row's candidates.

    ``scores`` and ``is_target`` (bool) are ``[queries, candidates]``; each row should hold at
    least one target. Other targets of the same row never count against it. ``ties="against"``:
    rank = 1 + number of non-target candidates scoring >= the best target (a hit needs a
    strictly higher score than every rival); ``"optimistic"``: only strictly higher ones count.

    Raises:
        ValueError: on an unknown ``ties`` or NaN scores (NaN compares false with everything).
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if not torch.is_floating_point(scores):
        scores = scores.to(torch.float64)
    best = scores.masked_fill(~is_target, float("-inf")).amax(dim=1, keepdim=True)
    rivals = scores >= best if ties == "against" else scores > best
    return 1 + (rivals & ~is_target).sum(dim=1)


def retrieval_metrics(
    sim: torch.Tensor | np.ndarray,
    text_video_ids: Sequence[Hashable] | np.ndarray | torch.Tensor,
    video_ids: Sequence[Hashable] | np.ndarray | torch.Tensor,
    ties: str = "against",
) -> dict[str, dict[str, float]]:
    """Text-to-video and video-to-text retrieval metrics from a similarity matrix.

    Args:
        sim: ``[num_texts, num_videos]`` scores, higher meaning more similar. A numpy array or a
            tensor (on any device; it is not modified and no gradient is kept).
        text_video_ids: for each caption (row), the id of the video it describes. Several
            captions may share a video.
        video_ids: for each column, the id of that video. Must be unique.
        ties: ``"against"`` (default): a tie counts against the query, rank = 1 + number of
            other candidates scoring >= the target. ``"optimistic"``: rank = 1 + number of
            strictly higher scores, the convention of some published tables; use it only to
            compare with them.

    Returns:
        ``{"t2v": {...}, "v2t": {...}}``, each holding ``R@1``, ``R@5``, ``R@10`` (percent),
        ``MdR`` (median rank) and ``MnR`` (mean rank), as Python floats.

        * ``t2v``: one query per caption; its rank is the position of its own video among all
          videos sorted by score, descending (tied videos placed ahead of it by default).
        * ``v2t``: one query per video over all captions; its rank is the best (smallest) rank
          among its own captions (see the module docstring for why).

        Captions of a video never count against that video's v2t rank.

    Raises:
        ValueError: on a shape mismatch, duplicate video ids, a caption whose video id is not in
            ``video_ids``, a video with no caption (its v2t rank would be undefined), NaN
            scores (NaN compares false with everything and would silently give rank 1), or an
            unknown ``ties``.
    """
    scores = torch.as_tensor(sim).detach()
    if scores.ndim != 2:
        raise ValueError(
            f"sim must be 2-D [num_texts, num_videos], got shape {tuple(scores.shape)}"
        )
    num_texts, num_videos = scores.shape
    if num_texts == 0 or num_videos == 0:
        raise ValueError(f"sim must be non-empty, got shape {tuple(scores.shape)}")

    text_ids = _as_id_list(text_video_ids, "text_video_ids")
    col_ids = _as_id_list(video_ids, "video_ids")
    if len(text_ids) != num_texts:
        raise ValueError(f"text_video_ids has {len(text_ids)} entries but sim has {num_texts} rows")
    if len(col_ids) != num_videos:
        raise ValueError(f"video_ids has {len(col_ids)} entries but sim has {num_videos} columns")

    column_of = {vid: j for j, vid in enumerate(col_ids)}
    if len(column_of) != num_videos:
        dup = next(vid for vid, count in Counter(col_ids).items() if count > 1)
        raise ValueError(f"video_ids must be unique; {dup!r} appears more than once")
    unknown = [tid for tid in text_ids if tid not in column_of]
    if unknown:
        raise ValueError(f"caption video id {unknown[0]!r} is not among video_ids")
    target_col = torch.tensor([column_of[tid] for tid in text_ids], device=scores.device)

    has_caption = torch.zeros(num_videos, dtype=torch.bool, device=scores.device)
    has_caption[target_col] = True
    if not bool(has_caption.all()):
        missing = col_ids[int(torch.nonzero(~has_caption)[0, 0])]
        raise ValueError(f"video {missing!r} has no caption; its v2t rank is undefined")

    # A caption's target is its own video; a video's targets are all of its captions, and its
    # rank is that of the best one (see the module docstring).
    is_own = torch.zeros_like(scores, dtype=torch.bool)
    is_own[torch.arange(num_texts, device=scores.device), target_col] = True
    t2v_ranks = target_rank(scores, is_own, ties)
    v2t_ranks = target_rank(scores.T, is_own.T, ties)
    return {"t2v": rank_metrics(t2v_ranks), "v2t": rank_metrics(v2t_ranks)}

"""Symmetric InfoNCE loss with a learned temperature, correct for several captions per video.

A text-video batch often holds more than one caption of the same video (MSR-VTT has 20 per
video). The naive CLIP loss, which takes the diagonal of a square matrix as the only positives,
would then push captions of the same video apart as if they were negatives. Here positives are
defined by ids instead:

* text -> video: each caption has exactly one correct video column, so it is an ordinary
  cross-entropy over the videos of the batch.
* video -> text: a video has one or more correct captions. We use the multi-positive
  ("sum inside the log") form

      loss_v = -log( sum_{t in pos(v)} exp(l_vt) / sum_{t} exp(l_vt) )

  i.e. the negative log of the probability mass the video puts on *any* of its captions. Its
  own captions are therefore never in competition with each other, and a video that matches all
  of its captions perfectly reaches zero loss. (The alternative "sum outside the log", averaging
  a separate cross-entropy per positive, cannot go below log(#positives) and so still treats
  sibling captions as partial negatives.) The per-video losses are averaged over videos.

The final loss is the mean of the two directions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: CLIP's initial temperature 0.07, stored as the log of the logit scale 1 / 0.07.
INIT_LOGIT_SCALE: float = math.log(1 / 0.07)
#: CLIP caps the logit scale at 100 to keep training stable.
MAX_LOGIT_SCALE: float = math.log(100.0)


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE over a ``[num_texts, num_videos]`` similarity matrix.

    The temperature is learned through ``logit_scale`` (the log of the multiplier applied to the
    similarities), initialised to ``log(1 / 0.07)`` and clamped in ``forward`` so that the scale
    never exceeds 100, as in CLIP. The clamp is applied to the parameter itself (in place,
    without autograd) rather than only to the value used in the forward pass: a parameter that
    is merely clamped functionally gets zero gradient once above the cap and could then never
    come back down.
    """

    def __init__(self, init_logit_scale: float = INIT_LOGIT_SCALE) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    @property
    def scale(self) -> torch.Tensor:
        """The effective (clamped) multiplier ``exp(logit_scale)``, detached, as a 0-d tensor."""
        return self.logit_scale.detach().clamp(max=MAX_LOGIT_SCALE).exp()

    def forward(
        self,
        sim: torch.Tensor,
        text_video_ids: torch.Tensor,
        video_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Loss for one batch.

        Args:
            sim: ``[num_texts, num_videos]`` raw similarities (e.g. cosine); logits are
                ``scale * sim``. Half-precision input is upcast to float32 so that the
                log-sum-exps stay accurate.
            text_video_ids: ``[num_texts]`` integer id of the video each caption belongs to.
            video_ids: ``[num_videos]`` integer id of each column; must be unique.

        Returns:
            A scalar tensor: the mean of the text->video and video->text losses.

        Raises:
            ValueError: on shape mismatches, duplicate video ids, a caption whose video is not
                in the batch, or a video with no caption in the batch (its video->text loss
                would be infinite).
        """
        if sim.ndim != 2:
            raise ValueError(f"sim must be 2-D [num_texts, num_videos], got {tuple(sim.shape)}")
        num_texts, num_videos = sim.shape
        if num_texts == 0 or num_videos == 0:
            raise ValueError(f"sim must be non-empty, got shape {tuple(sim.shape)}")
        if text_video_ids.shape != (num_texts,):
            raise ValueError(
                f"text_video_ids must have shape ({num_texts},), got {tuple(text_video_ids.shape)}"
            )
        if video_ids.shape != (num_videos,):
            raise ValueError(
                f"video_ids must have shape ({num_videos},), got {tuple(video_ids.shape)}"
            )
        text_video_ids = text_video_ids.to(sim.device)
        video_ids = video_ids.to(sim.device)
        if torch.unique(video_ids).numel() != num_videos:
            raise ValueError("video_ids must be unique within a batch")

        # positives[t, v]: caption t describes video v. At most one True per row (unique ids).
        positives = text_video_ids[:, None] == video_ids[None, :]
        if not bool(positives.any(dim=1).all()):
            bad = text_video_ids[~positives.any(dim=1)][0].item()
            raise ValueError(f"caption video id {bad} is not among video_ids")
        if not bool(positives.any(dim=0).all()):
            bad = video_ids[~positives.any(dim=0)][0].item()
            raise ValueError(f"video {bad} has no caption in the batch")

        with torch.no_grad():
            self.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
        if sim.dtype in (torch.float16, torch.bfloat16):
            sim = sim.float()
        logits = self.logit_scale.exp() * sim

        # Text -> video: one positive column per caption.
        t2v = F.cross_entropy(logits, positives.to(torch.long).argmax(dim=1))

        # Video -> text: all of a video's captions form one positive set.
        logits_v = logits.t()
        pos_logits = logits_v.masked_fill(~positives.t(), float("-inf"))
        v2t = (torch.logsumexp(logits_v, dim=1) - torch.logsumexp(pos_logits, dim=1)).mean()

        return (t2v + v2t) / 2


def symmetric_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``(KL(P || Q) + KL(Q || P)) / 2`` of row distributions given as log-probabilities
    ``[N, C]``, averaged over rows: the alignment terms of seeds 000 and 003."""
    kl_p_q = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")  # KL(P || Q)
    kl_q_p = F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")
    return (kl_p_q + kl_q_p) / 2


def focal_binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                               gamma: float = 2.0) -> torch.Tensor:
    """Seed 003's focal binary cross-entropy (FBCE) for multi-label tags, averaged over
    every label: ``-(1 - p_t)^gamma log p_t``, ``p_t`` the predicted probability of the
    label's true value. Most tags are absent from most captions; the focal factor
    lets the few present ones, and the hard absent ones, carry the gradient instead
    of the many easy negatives (Lin et al. 2017). ``gamma = 0`` is plain BCE."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_true = torch.exp(-bce)
    return ((1 - p_true) ** gamma * bce).mean()

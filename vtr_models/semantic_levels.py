"""Seeds 001 and 003: similarity at semantic levels (entity, action, relationship), each
trained to predict the level's tags.

Per level, each modality pools its sequence (the video's frame features ``F'``,
the caption's word features) with a self-attention pooling of its own (seed
001's salient-region selection: ``a = softmax_i(w . tanh(W x_i))`` over the valid
positions), so that the entity level can look at the frames where things are
seen and the relationship level at those where they change. One linear
projection per level, shared by both modalities (seed 003's parameter-shared
attribute projection), maps either pooled vector to the level's tag logits;
training asks both to predict the caption's tags (focal BCE, seed 003) and the
two modalities' tag distributions to agree (a symmetric KL between the softmax
over the level's tags), which keeps the two pooled vectors in one space.

The level similarity ``cos(t_l, v_l)`` joins the score through a gate that
starts at zero, so the full model still starts as CLIP
(``RetrievalModel.score``). A video's level vectors are query-independent and
rebuilt at search time from its stored frame features, as the coarse score's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vtr_models.loss import focal_binary_cross_entropy, symmetric_kl
from vtr_models.masking import padding_mask


class AttentionPool(nn.Module):
    """``sum_i a_i x_i`` with ``a = softmax_i(w . tanh(W x_i))`` over valid positions."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.key = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` with a ``[B, N]`` validity mask -> ``[B, D]``."""
        logits = self.query(torch.tanh(self.key(x))).squeeze(-1)
        logits = logits.masked_fill(padding_mask(mask), -torch.inf)
        return (logits.softmax(-1).unsqueeze(-1) * x).sum(1)


class SemanticLevel(nn.Module):
    """One level: a pooling per modality, the shared tag projection, the score gate."""

    def __init__(self, dim: int, tags: int) -> None:
        super().__init__()
        self.video_pool = AttentionPool(dim)
        self.text_pool = AttentionPool(dim)
        self.project = nn.Linear(dim, tags)  # shared by both modalities
        self.gate = nn.Parameter(torch.zeros(()))

    def loss(self, text: torch.Tensor, video: torch.Tensor, targets: torch.Tensor,
             gamma: float, kl_weight: float) -> torch.Tensor:
        """FBCE of both modalities' tag logits against ``targets`` ``[N, tags]``, plus
        ``kl_weight`` times the symmetric KL of their softmax tag distributions; ``text``
        and ``video`` are the ``[N, D]`` pooled vectors of each caption and its video."""
        text_logits, video_logits = self.project(text), self.project(video)
        fbce = (focal_binary_cross_entropy(text_logits, targets, gamma)
                + focal_binary_cross_entropy(video_logits, targets, gamma))
        kl = symmetric_kl(F.log_softmax(video_logits, -1), F.log_softmax(text_logits, -1))
        return fbce + kl_weight * kl

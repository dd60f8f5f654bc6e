"""Video local feature enhancement (docs/method.md S2).

Each temporal frame feature is concatenated with the video's mean-pooled
feature, fused over time by an LSTM, then re-weighted by an adaptive weight
layer (two fully connected layers around a self-attention layer, and a
sigmoid): one weight per frame, so frames that a caption does not describe
count less in fine-grained matching.

Both enter as residuals that do nothing at initialisation, so an untrained
model matches words against ``F'`` itself (the reference model that learned
event order from random init did so) rather than against a random LSTM space:

    V_e = normalize(F' + Z(LSTM([F'_i ; mean F']))) * 2 sigmoid(FC2(...))

with ``Z`` and ``FC2`` initialised to zero, so every weight starts at one.
Deviations from docs/method.md: the residual on ``F'`` and its zero map, and the
weights' range (0, 2) around a start of one rather than (0, 1) around one
half. Each ``V_e`` row is a unit vector times its frame's weight, so a
fine-grained score is a weighted cosine, as ``similarity.fine_grained``
expects: unnormalised rows would make their norms a per-video bias that no
caption controls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vtr_models.masking import masked_mean, padding_mask


class AdaptiveFrameWeights(nn.Module):
    """FC -> ReLU -> self-attention over frames -> FC -> 2 sigmoid: a weight in (0, 2) per
    frame, exactly one at initialisation (``fc2`` starts at zero)."""

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.fc2 = nn.Linear(dim, 1)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        h, _ = self.attention(h, h, h, key_padding_mask=padding_mask(frame_mask),
                              need_weights=False)
        return 2 * torch.sigmoid(self.fc2(h)).squeeze(-1) * frame_mask.to(x.dtype)


class VideoLocalEnhancement(nn.Module):
    """``F'`` (temporal frame features) -> ``V_e`` (enhanced local features), both ``[B, T, D]``.

    The LSTM is unidirectional and padding sits at the end, so padded frames
    never reach a real frame's output.
    """

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.lstm = nn.LSTM(2 * dim, dim, batch_first=True)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.weights = AdaptiveFrameWeights(dim, heads)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        pooled = masked_mean(frames, frame_mask, dim=1)
        x = torch.cat([frames, pooled[:, None].expand_as(frames)], dim=-1)
        fused, _ = self.lstm(x)
        local = F.normalize(frames + self.out(fused), dim=-1)
        return local * self.weights(fused, frame_mask).unsqueeze(-1)

"""Video local feature enhancement (METHOD.md S2).

Each temporal frame feature is concatenated with the video's mean-pooled
feature, fused over time by an LSTM, then re-weighted by an adaptive weight
layer (two fully connected layers around a self-attention layer, and a
sigmoid): one weight per frame, so frames that a caption does not describe
count less in fine-grained matching.

Each ``V_e`` row is a unit vector times its frame's weight, so a fine-grained
score is a weighted cosine in [-1, 1] as ``similarity.fine_grained`` expects.
Unnormalised LSTM outputs would make the score unbounded and their norms a
per-video bias that no caption controls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vtr_models.masking import masked_mean, padding_mask


class AdaptiveFrameWeights(nn.Module):
    """FC -> ReLU -> self-attention over frames -> FC -> sigmoid: a weight in (0, 1) per frame."""

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.fc2 = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        h, _ = self.attention(h, h, h, key_padding_mask=padding_mask(frame_mask),
                              need_weights=False)
        return torch.sigmoid(self.fc2(h)).squeeze(-1) * frame_mask.to(x.dtype)


class VideoLocalEnhancement(nn.Module):
    """``F'`` (temporal frame features) -> ``V_e`` (enhanced local features), both ``[B, T, D]``.

    The LSTM is unidirectional and padding sits at the end, so padded frames
    never reach a real frame's output.
    """

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.lstm = nn.LSTM(2 * dim, dim, batch_first=True)
        self.weights = AdaptiveFrameWeights(dim, heads)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        pooled = masked_mean(frames, frame_mask, dim=1)
        x = torch.cat([frames, pooled[:, None].expand_as(frames)], dim=-1)
        fused, _ = self.lstm(x)
        return F.normalize(fused, dim=-1) * self.weights(fused, frame_mask).unsqueeze(-1)

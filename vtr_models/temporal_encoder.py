"""Temporal encoder: a transformer over frame features with position embeddings.

``F' = F + Z(Transformer(F + P))``: CLIP4Clip's ``seqTransf`` with two changes
that let the full model start as CLIP and still learn order from ordinary
training.

- The branch is post-norm (each layer ends in a LayerNorm, as the reference
  model that learned event order from random init), so what it adds has a
  fixed scale next to ``F`` whatever the frames' norms, rather than a
  pre-norm stack's residual stream, whose order-dependent part stays small
  next to ``2F``.
- ``Z`` is a linear map initialised to zero (ControlNet's "zero module"), and
  the position embeddings ``P`` start at zero: at initialisation ``F' = F``
  exactly, so an untrained model ranks as CLIP's mean pooling does. ``Z``
  gets a gradient at the first step, the transformer and ``P`` from the
  second on.
"""

from __future__ import annotations

import torch
from torch import nn

from vtr_models.masking import padding_mask


class TemporalEncoder(nn.Module):
    def __init__(self, dim: int, max_frames: int, layers: int = 2, heads: int = 4,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.position = nn.Embedding(max_frames, dim)
        nn.init.zeros_(self.position.weight)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` -> ``[B, T, D]``; padded positions come out as zeros."""
        positions = torch.arange(frames.shape[1], device=frames.device)
        x = frames + self.position(positions)[None]
        x = self.transformer(x, src_key_padding_mask=padding_mask(frame_mask))
        return (frames + self.out(x)) * frame_mask.unsqueeze(-1).to(frames.dtype)

"""Temporal encoder: a transformer over frame features with position embeddings.

CLIP4Clip's ``seqTransf``: ``F' = F + Transformer(F + P)``, with padded frames
masked out of attention. The residual keeps CLIP's frame features reachable
from the start of training, when the transformer is still random.

Position embeddings start at CLIP's scale for its own patch positions
(``dim ** -0.5``), not the 0.01 of CLIP4Clip: next to frame features of norm
about ``sqrt(dim)`` a 0.01 embedding is 1 % of the input, and reversing a
clip then changes the pooled feature of a random-init ``vtr-tiny`` by 1e-4
at initialisation, against 1e-3 at ``dim ** -0.5`` (``benchmarks/temporal_sensitivity.py``).
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
        nn.init.normal_(self.position.weight, std=dim**-0.5)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` -> ``[B, T, D]``; padded positions come out as zeros."""
        positions = torch.arange(frames.shape[1], device=frames.device)
        x = frames + self.position(positions)[None]
        x = self.transformer(x, src_key_padding_mask=padding_mask(frame_mask))
        return (frames + x) * frame_mask.unsqueeze(-1).to(frames.dtype)

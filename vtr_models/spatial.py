"""Spatial frame features: where things are in a frame, kept for the temporal encoder.

A ViT's pooled feature (its class token) says what is in a frame; where it is
survives only as far as the pooling kept it. A random-init tower trained on a few
hundred clips keeps it poorly: trained to name the direction of the first motion
in the synthetic benchmark's hard-tier clips (both shapes on screen, motions
starting anywhere), the class token memorised the training clips and stayed at
chance on unseen ones, while a linear map of the patch tokens, which keeps each
patch in its place, generalised (``docs/synthetic-benchmark.md``). A direction
is a change of place between frames, so the temporal encoder needs the place.

``F + Z(flatten(R(LN(tokens))))``: each patch token normalised and reduced to
``channels`` numbers by ``R`` (shared by all patches), the grid flattened in
order (so a patch's position is its slot), and ``Z``, zero-initialised, maps it
into the frame feature; the model still starts as CLIP.
"""

from __future__ import annotations

import torch
from torch import nn


class SpatialFrames(nn.Module):
    """Adds a zero-initialised map of a frame's patch tokens, in grid order, to its feature."""

    def __init__(self, patches: int, width: int, dim: int, channels: int = 16) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.reduce = nn.Linear(width, channels)
        self.out = nn.Linear(patches * channels, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` frame features and their ``[..., N, W]`` patch tokens -> ``[..., D]``."""
        return features + self.out(self.reduce(self.norm(tokens)).flatten(-2))

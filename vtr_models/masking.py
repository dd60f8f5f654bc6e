"""Masked reductions shared by the model's parts (padding must never change an output)."""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of ``x`` over ``dim`` counting only positions where ``mask`` is True."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim) / weights.sum(dim).clamp(min=1.0)


def padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """``key_padding_mask`` for ``nn.MultiheadAttention`` (True = ignore) from a validity mask.

    A row with no valid position keeps its first one, so attention stays finite;
    callers zero such rows' outputs.
    """
    ignore = ~mask.bool()
    empty = ignore.all(dim=-1)
    if empty.any():
        ignore = ignore.clone()
        ignore[empty, 0] = False
    return ignore

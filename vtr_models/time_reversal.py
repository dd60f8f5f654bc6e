"""Time-reversed videos as extra negatives: the arrow of time as a training signal.

With random batches a video rarely meets a clip that holds the same frames in
another order, so contrastive training can score captions by which things are
in a video and never learn when they happen. Adding, for every caption, the
batch's videos played backwards as extra wrong answers ("a ball falls" must
score its clip above the clip reversed, where the ball rises) asks for order
in every step. Reversal reuses the per-frame backbone features, so it costs a
second pass of the temporal encoder only, not of the image encoder.
"""

from __future__ import annotations

import torch


def reverse_valid_frames(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, T, ...]`` with a ``[B, T]`` mask (padding at the end) -> each row's valid
    frames in reverse order, padding left where it was."""
    t = features.shape[1]
    lengths = mask.sum(dim=1, keepdim=True)  # [B, 1]
    steps = torch.arange(t, device=features.device).unsqueeze(0)  # [1, T]
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)  # [B, T]
    index = index.reshape(*index.shape, *([1] * (features.ndim - 2))).expand_as(features)
    return features.gather(1, index)

"""Motion frames: what changed between consecutive frames, seen by the image tower.

A frame's features say what is on screen, not what moves: when two shapes are on
screen and one moves, every single frame shows both, and only a comparison of
frames says which one is moving. The temporal encoder can learn that comparison
from features, but a random-init image tower's features do not keep positions
well enough for it (the synthetic benchmark's hard tier stayed at chance within a
group). The difference of consecutive frames' pixels shows the moving object and
nothing else (TSN's RGB-difference input), so the image tower encodes it as it
encodes a frame where only that object is on screen, the case the full model
learns order from. ``F + Z(E(x_t - x_{t-1}))`` with ``Z`` a zero-initialised linear
map, so the model still starts as CLIP; the first frame's difference is zero.
It doubles the image tower's work per video while ``Z`` is not zero; an untrained
model's zero ``Z`` adds nothing, so inference skips the second pass (``needed``) and
a zero-shot CLIP search costs what mean pooling does.
"""

from __future__ import annotations

import torch
from torch import nn


def frame_differences(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, T, 3, H, W]`` -> each frame minus the one before (zeros for the first frame
    and for padding)."""
    out = torch.zeros_like(frames)
    out[:, 1:] = frames[:, 1:] - frames[:, :-1]
    both = mask.clone()
    both[:, 1:] &= mask[:, :-1]
    return out * both[..., None, None, None].to(frames.dtype)


class MotionFrames(nn.Module):
    """The zero-initialised map ``Z`` from motion-frame features into the frame features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def needed(self) -> bool:
        """Whether the motion frames can change the features: always while gradients flow
        (``Z`` learns from them), else only once ``Z`` is not zero."""
        return torch.is_grad_enabled() or bool(self.out.weight.any() or self.out.bias.any())

    def forward(self, features: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        return features + self.out(motion)

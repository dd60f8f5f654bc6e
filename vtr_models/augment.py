"""Training-time augmentation of frame batches that keeps what a caption says true.

A small model trained from random initialisation on a few hundred clips
memorises where things are in each training clip instead of learning what
they are. Shifting every frame of a clip by the same random offset breaks
that shortcut without changing the clip's content, motion or direction
(the same shift for all frames keeps every displacement; a flip or a
per-frame crop would not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(frames: torch.Tensor, max_shift: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``[B, T, C, H, W]`` -> the same frames, each video moved by its own offset of up to
    ``max_shift`` pixels along each axis; edges are extended (replicate padding)."""
    if max_shift <= 0:
        return frames
    b, t, c, h, w = frames.shape
    padded = F.pad(frames.reshape(b * t, c, h, w), (max_shift,) * 4, mode="replicate")
    padded = padded.reshape(b, t, c, h + 2 * max_shift, w + 2 * max_shift)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, :, dy:dy + h, dx:dx + w]
                        for i, (dy, dx) in enumerate(offsets)])

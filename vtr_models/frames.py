"""JPEG frames (as the ingest job stores them) -> padded, normalised tensors for a backbone.

The image transform is open_clip's evaluation transform for the backbone, so
size, crop and normalisation always match the weights.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image


def even_indices(count: int, max_frames: int) -> list[int]:
    """Indices of ``count`` items thinned evenly to at most ``max_frames``, in order.

    All of them when ``count <= max_frames``; otherwise ``max_frames`` indices
    from ``linspace(0, count - 1)`` rounded, so the first and last are kept.
    The ingest job thins its sampled times with this rule too.
    """
    if count < 0 or max_frames < 1:
        raise ValueError("count must be >= 0 and max_frames >= 1")
    if count <= max_frames:
        return list(range(count))
    return np.linspace(0, count - 1, max_frames).round().astype(int).tolist()


class FramePreprocessor:
    """Decode and transform up to ``max_frames`` JPEGs of one video, padded to a fixed T.

    A video with more JPEGs than ``max_frames`` is thinned evenly over its whole
    length (:func:`even_indices`), not cut to its first frames.
    """

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor], max_frames: int) -> None:
        self.transform = transform
        self.max_frames = max_frames

    def __call__(self, jpegs: Sequence[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[T, 3, H, W]`` frames and a ``[T]`` bool mask (True for real frames)."""
        if not jpegs:
            raise ValueError("a video needs at least one frame")
        jpegs = list(jpegs)
        images = [
            self.transform(Image.open(io.BytesIO(jpegs[i])).convert("RGB"))
            for i in even_indices(len(jpegs), self.max_frames)
        ]
        frames = torch.zeros(self.max_frames, *images[0].shape)
        frames[: len(images)] = torch.stack(images)
        mask = torch.zeros(self.max_frames, dtype=torch.bool)
        mask[: len(images)] = True
        return frames, mask

    def batch(self, videos: Sequence[Sequence[bytes]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, T, 3, H, W]`` and ``[B, T]`` for several videos."""
        pairs = [self(v) for v in videos]
        return torch.stack([f for f, _ in pairs]), torch.stack([m for _, m in pairs])

"""JPEG frames (as the ingest job stores them) -> padded, normalised tensors for a backbone.

The image transform is open_clip's evaluation transform for the backbone, so
size, crop and normalisation always match the weights.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import torch
from PIL import Image

from vtr_models.frame_thinning import even_indices


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

    def blank(self) -> torch.Tensor:
        """``[3, H, W]``: an all-black frame through the same transform (what a cut to
        black looks like to the model, for :func:`vtr_models.augment.random_placement`)."""
        return self.transform(Image.new("RGB", (8, 8)))

    def batch(self, videos: Sequence[Sequence[bytes]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, T, 3, H, W]`` and ``[B, T]`` for several videos."""
        pairs = [self(v) for v in videos]
        return torch.stack([f for f, _ in pairs]), torch.stack([m for _, m in pairs])

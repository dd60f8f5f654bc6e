"""Which of a video's frames to keep when there are more than a model or a job takes.

One rule for the ingest job (thinning its sampled times) and the model's
preprocessing (thinning stored JPEGs). It lives apart from ``frames.py`` and
imports no torch, so video decoders, which run in their own child processes,
do not load torch for it.
"""

from __future__ import annotations

import numpy as np


def even_indices(count: int, max_frames: int) -> list[int]:
    """Indices of ``count`` items thinned evenly to at most ``max_frames``, in order.

    All of them when ``count <= max_frames``; otherwise ``max_frames`` indices
    from ``linspace(0, count - 1)`` rounded, so the first and last are kept.
    """
    if count < 0 or max_frames < 1:
        raise ValueError("count must be >= 0 and max_frames >= 1")
    if count <= max_frames:
        return list(range(count))
    return np.linspace(0, count - 1, max_frames).round().astype(int).tolist()

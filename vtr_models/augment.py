"""Training-time augmentation of frame batches that keeps what a caption says true.

A small model trained from random initialisation on a few hundred clips
memorises where things are in each training clip instead of learning what
they are. Shifting every frame of a clip by the same random offset breaks
that shortcut without changing the clip's content, motion or direction
(the same shift for all frames keeps every displacement; a flip or a
per-frame crop would not).

A model trained only on clips that start at their first frame learns to
expect an event there; a window of a long video holds its event anywhere,
among frames where nothing happens. Placing a clip at a random offset among
still frames (:func:`random_placement`) shows it events placed anywhere,
again without changing what the caption says.
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


def random_placement(frames: torch.Tensor, mask: torch.Tensor, blank: torch.Tensor, share: float,
                     generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Put ``share`` of the clips at a random offset among still frames, as in a long
    video's window.

    ``frames [B, T, C, H, W]`` and ``mask [B, T]`` as :class:`FramePreprocessor`
    makes them (a clip's real frames first, then padding). A chosen clip with
    ``n < T`` real frames gets ``f`` still frames (``f`` uniform in ``1..T-n``),
    split at random between before and after it, and those slots become real
    (unmasked): a still scene the model must learn to see past. The still frames
    are either the clip's own first and last frames held (a pause), or ``blank``
    (``[C, H, W]``: an empty frame, a cut to black), one or the other per clip at
    even odds. Clips that fill all T slots, and those not chosen, are unchanged.
    """
    if share <= 0:
        return frames, mask
    frames, mask = frames.clone(), mask.clone()
    b, t = mask.shape
    counts = mask.sum(1).tolist()
    draws = torch.rand(b, 2, generator=generator).tolist()
    for i, (n, (chosen, kind)) in enumerate(zip(counts, draws, strict=True)):
        if chosen >= share or not 0 < n < t:
            continue
        fill = int(torch.randint(1, t - n + 1, (1,), generator=generator))
        before = int(torch.randint(0, fill + 1, (1,), generator=generator))
        clip = frames[i, :n].clone()
        first, last = (clip[0], clip[-1]) if kind < 0.5 else (blank, blank)
        frames[i, :before] = first
        frames[i, before:before + n] = clip
        frames[i, before + n:n + fill] = last
        mask[i, :n + fill] = True
    return frames, mask

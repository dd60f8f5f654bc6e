"""Multi-granularity matching (docs/method.md S5): fine-grained token-wise and coarse cosine scores.

Fine-grained: every word finds its best frame and every frame its best word
(max-similarity both ways, as DRL / X-CLIP token interaction), each averaged
over the valid positions, then the two directions averaged. Word features are
L2-normalised here; frame features arrive ready, as unit vectors possibly
scaled by the adaptive frame weights, so a down-weighted frame matches less.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fine_grained(
    words: torch.Tensor, word_mask: torch.Tensor, frames: torch.Tensor, frame_mask: torch.Tensor
) -> torch.Tensor:
    """``[Nt, L, D]`` words x ``[Nv, T, D]`` frames -> ``[Nt, Nv]`` similarities."""
    wm, fm = word_mask.bool(), frame_mask.bool()
    # positions past the last valid word of every caption add nothing: drop them (a
    # query of 5 words in a 77-token context costs 5 words, not 77)
    length = int(wm.any(dim=0).nonzero().max()) + 1 if wm.any() else 1
    words, wm = F.normalize(words[:, :length], dim=-1), wm[:, :length]
    sim = torch.einsum("ald,btd->ablt", words, frames)
    neg = torch.finfo(sim.dtype).min
    t2v = sim.masked_fill(~fm[None, :, None, :], neg).amax(dim=-1)  # [Nt, Nv, L]
    t2v = (t2v * wm[:, None, :]).sum(-1) / wm.sum(-1).clamp(min=1)[:, None]
    v2t = sim.masked_fill(~wm[:, None, :, None], neg).amax(dim=-2)  # [Nt, Nv, T]
    v2t = (v2t * fm[None]).sum(-1) / fm.sum(-1).clamp(min=1)[None]
    return (t2v + v2t) / 2


def pairwise_cosine(text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """``[Nt, D]`` x ``[Nv, D]`` -> ``[Nt, Nv]`` cosine similarities."""
    return F.normalize(text, dim=-1) @ F.normalize(video, dim=-1).T


def conditioned_cosine(text: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """``[Nt, D]`` texts x ``[Nt, Nv, D]`` text-conditioned videos -> ``[Nt, Nv]`` cosines."""
    return torch.einsum("ad,abd->ab", F.normalize(text, dim=-1), F.normalize(pooled, dim=-1))

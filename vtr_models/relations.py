"""Seed 000's relational reasoning: a recurrent global feature and multi-scale relations over
ordered groups of frames (or words), fused per modality into the common space.

Seed 000 builds each modality's feature from two views of its sequence: a
recurrent network (GRU) read to the last element gives the *global* feature,
and a multi-scale relational reasoning module gives *local relation*
features, in the manner of temporal relation networks (TRN, Zhou et al.
2018): at scale ``k`` every ordered group of ``k`` elements, in time order,
goes through a small network ``g_k``; the group outputs are pooled and mapped
by ``h_k``; the scales are summed. Because ``g_k`` sees a group's elements
concatenated in order, it can tell "A here, then A there" from the reverse,
which a mean over frames cannot.

Choices this module makes where the seed is silent:

- A sequence of any length is first read at ``slots`` evenly spaced positions
  (TRN's segments), so that the groups are a fixed set of index tuples (every
  ordered ``k``-subset of the slots) and one batch holds videos of different
  lengths. Padding is never read.
- Group outputs are averaged, not summed, per scale: the scales have from 28
  to 70 groups at 8 slots, and a mean keeps them on one footing.
- The fusion is a residual on the modality's CLIP feature with a zero-
  initialised output map, ``base + Z([global; relations])``, as every part the
  full model adds: an untrained model's fused features are CLIP's, so it ranks
  as CLIP does (``docs/models.md``).
"""

from __future__ import annotations

from itertools import combinations

import torch
import torch.nn.functional as F
from torch import nn

from vtr_models.loss import symmetric_kl


def valid_run(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First position and length of each row's valid run: a ``[B, N]`` mask holds one
    contiguous run per row (frames from 0; words from 1, the start token left out).
    An empty row reads as a run of one at position 0."""
    return mask.int().argmax(1), mask.sum(1).clamp(min=1)


def even_slots(features: torch.Tensor, mask: torch.Tensor, slots: int) -> torch.Tensor:
    """``[B, N, D]`` with a ``[B, N]`` mask of one valid run per row -> ``[B, slots, D]``:
    each sequence read at ``slots`` evenly spaced positions of its run (repeating
    elements when the run is shorter)."""
    first, length = valid_run(mask)
    # floor((m + 1/2) * length / slots) in integers: the same positions at any precision
    centres = 2 * torch.arange(slots, device=features.device) + 1
    index = first[:, None] + centres[None] * length[:, None] // (2 * slots)  # inside each run
    return features.gather(1, index.unsqueeze(-1).expand(-1, -1, features.shape[-1]))


class MultiScaleRelations(nn.Module):
    """TRN's multi-scale relation module: ``sum_k h_k(mean_groups g_k(group in order))``."""

    def __init__(self, dim: int, slots: int = 8, max_scale: int = 4) -> None:
        super().__init__()
        if not 2 <= max_scale <= slots:
            raise ValueError(f"relation scales run from 2 to max_scale <= slots ({slots}); "
                             f"got {max_scale}")
        self.slots = slots
        self.scales = list(range(2, max_scale + 1))
        for k in self.scales:  # every ordered k-subset of the slots, in time order
            self.register_buffer(f"groups_{k}", torch.tensor(list(combinations(range(slots), k))),
                                 persistent=False)
        self.g = nn.ModuleList(nn.Sequential(nn.Linear(k * dim, dim), nn.ReLU(),
                                             nn.Linear(dim, dim), nn.ReLU())
                               for k in self.scales)
        self.h = nn.ModuleList(nn.Linear(dim, dim) for _ in self.scales)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` and a ``[B, N]`` mask of one valid run per row -> ``[B, D]``."""
        read = even_slots(features, mask, self.slots)
        out = 0
        for k, g, h in zip(self.scales, self.g, self.h, strict=True):
            groups = read[:, getattr(self, f"groups_{k}")]  # [B, G, k, D]
            out = out + h(g(groups.flatten(2)).mean(1))
        return out


class RelationalFusion(nn.Module):
    """One modality's fused feature: ``base + Z([GRU(x)_last; relations(x)])``, ``Z`` zero at
    initialisation, so the fused feature starts as ``base`` (the CLIP feature)."""

    def __init__(self, dim: int, slots: int = 8, max_scale: int = 4) -> None:
        super().__init__()
        self.recurrent = nn.GRU(dim, dim, batch_first=True)
        self.relations = MultiScaleRelations(dim, slots, max_scale)
        self.out = nn.Linear(2 * dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor, mask: torch.Tensor,
                base: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` sequence with its ``[B, N]`` mask (one valid run per row), ``[B, D]``
        base -> ``[B, D]``.

        The GRU reads each valid run from its first element (a caption's words, not its
        start token); its output at the run's last element is the global feature, which
        never sees the padding after it.
        """
        first, length = valid_run(mask)
        positions = torch.arange(features.shape[1], device=features.device)
        index = (first[:, None] + positions[None]).clamp(max=features.shape[1] - 1)
        runs = features.gather(1, index.unsqueeze(-1).expand_as(features))  # each run from 0
        outputs, _ = self.recurrent(runs)
        recurrent = outputs[torch.arange(len(outputs), device=outputs.device), length - 1]
        return base + self.out(torch.cat([recurrent, self.relations(features, mask)], dim=-1))


def neighbourhood_kl(text: torch.Tensor, video: torch.Tensor,
                     temperature: float = 0.05) -> torch.Tensor:
    """Symmetric KL between the two modalities' neighbourhood distributions in the common
    space, for ``[N, D]`` caption features and ``[N, D]`` features of each caption's video.

    Row ``i`` of each modality is a distribution over the other items ``j != i``,
    ``softmax_j(cos(x_i, x_j) / temperature)``: how item ``i`` relates to the rest of
    the batch in that modality. Aligning these (seed 000's distribution alignment)
    asks the two spaces to agree on which items are alike, a constraint the
    contrastive loss, which only compares a caption with videos, does not make.
    Returns ``(KL(P_v || P_t) + KL(P_t || P_v)) / 2`` averaged over rows; 0 for ``N < 3``
    (no distribution over two or more others).
    """
    n = len(text)
    if n < 3:
        return text.sum() * 0.0
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=text.device)

    def log_neighbours(x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x.float(), dim=-1)  # logits / 0.05 need more than bf16's precision
        logits = (x @ x.T / temperature)[off_diagonal].reshape(n, n - 1)
        return F.log_softmax(logits, dim=-1)

    return symmetric_kl(log_neighbours(video), log_neighbours(text))

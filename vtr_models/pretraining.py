"""Seed 004's pre-training tasks, run before contrastive training: tag alignment prediction
(TAP) and masked language modelling (MLM).

- **TAP.** Each caption's video is paired with the caption's tags (the semantic
  levels' tags, ``vtr_models.tags``), or, with probability 0.5, with another
  caption's tags; a head reads the video's mean frame feature and the tags'
  embedding (the mean of one learned vector per tag) and predicts whether they
  were replaced (binary cross-entropy). A replacement whose tags equal the
  original's (a group-mate's caption, the same shapes and directions) is labelled
  *not* replaced: nothing in the pair says otherwise. It asks the video tower to
  see what the tags name, before any caption is compared with any video.
- **MLM.** 15 % of each caption's words (never its start or end token) are
  replaced by the start token, which a caption holds nowhere else, and a head
  predicts each from the text tower's output at its position and at the end
  token. CLIP's text tower is causal: a position sees only the words before it,
  so the end token's output, which sees the whole masked caption, brings the
  words after it (BERT's both-sided context, the nearest a causal tower gives).

Seed 004's third task, generating captions, is not built: it trains a decoder
that retrieval never uses, and seed 004 is a captioning method
(``docs/models.md``). The heads are not part of the retrieval model: training
builds them, uses them for ``--pretrain-epochs`` and drops them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vtr_models.retrieval_model import RetrievalModel, VideoFeatures

PRETRAIN_TASKS = ("tap", "mlm")
MASK_RATE = 0.15
REPLACE_RATE = 0.5


def replace_tags(tags: torch.Tensor, generator: torch.Generator | None = None,
                 rate: float = REPLACE_RATE) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, T]`` multi-hot tags -> the tags with each row replaced, with probability
    ``rate``, by another row's (uniform over the others), and a ``[N]`` float label: 1
    where a row's tags changed (a replacement by equal tags is labelled 0)."""
    n = len(tags)
    if n < 2:
        return tags, torch.zeros(n, device=tags.device)
    chosen = torch.rand(n, generator=generator) < rate
    other = (torch.arange(n) + torch.randint(1, n, (n,), generator=generator)) % n  # never i
    source = torch.where(chosen, other, torch.arange(n)).to(tags.device)
    replaced = tags[source]
    return replaced, (replaced != tags).any(dim=1).float()


def mask_words(tokens: torch.Tensor, mask_id: int, generator: torch.Generator | None = None,
               rate: float = MASK_RATE) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, L]`` caption token ids -> the ids with ``rate`` of each caption's words
    replaced by ``mask_id`` (at least one a caption with words), and the targets: the
    original id where masked, -100 (ignored by cross-entropy) elsewhere. Words are the
    positions after the start token and before the end token (the largest id)."""
    positions = torch.arange(tokens.shape[1])
    eot = tokens.argmax(dim=1, keepdim=True).cpu()
    words = (positions[None] >= 1) & (positions[None] < eot)
    draw = torch.rand(tokens.shape, generator=generator)
    chosen = words & (draw < rate)
    # a caption with words but no draw below the rate masks its lowest-drawn word
    lowest = draw.masked_fill(~words, 2.0).argmin(dim=1)
    empty = words.any(dim=1) & ~chosen.any(dim=1)
    chosen[empty, lowest[empty]] = True
    chosen = chosen.to(tokens.device)
    return (tokens.masked_fill(chosen, mask_id),
            tokens.masked_fill(~chosen, -100))


class PretrainingHeads(nn.Module):
    """The heads of the selected tasks: ``tap`` (tag embeddings and a two-layer
    classifier) and ``mlm`` (a linear map from ``[h_i; h_eot]`` to the vocabulary)."""

    def __init__(self, dim: int, tasks: tuple[str, ...], tags: int = 0,
                 vocab_size: int = 0) -> None:
        super().__init__()
        unknown = set(tasks) - set(PRETRAIN_TASKS)
        if unknown:
            raise ValueError(f"unknown pre-training task(s) {', '.join(sorted(unknown))}; "
                             f"choose from {', '.join(PRETRAIN_TASKS)}")
        self.tasks = tasks
        if "tap" in tasks:
            if tags < 1:
                raise ValueError("tag alignment prediction needs tags: train with "
                                 "--semantic-levels")
            self.tag_embedding = nn.Parameter(torch.randn(tags, dim) * dim ** -0.5)
            self.tap = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, 1))
        if "mlm" in tasks:
            self.mlm = nn.Linear(2 * dim, vocab_size)

    def tap_loss(self, video: VideoFeatures, tags: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """BCE of predicting which of the captions' ``[N, T]`` tags were replaced, for
        ``video`` row ``i`` caption ``i``'s video."""
        shown, replaced = replace_tags(tags, generator)
        embedded = shown @ self.tag_embedding / shown.sum(1, keepdim=True).clamp(min=1)
        logits = self.tap(torch.cat([video.pooled, embedded], dim=-1)).squeeze(-1)
        return F.binary_cross_entropy_with_logits(logits, replaced)

    def mlm_loss(self, model: RetrievalModel, tokens: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Cross-entropy of the masked words of ``[N, L]`` captions (:func:`mask_words`,
        the start token as the mask)."""
        masked, targets = mask_words(tokens, int(tokens[0, 0]), generator)  # [0, 0]: start
        text = model.backbone.encode_tokens(masked)
        context = text.global_feature[:, None].expand_as(text.tokens)
        logits = self.mlm(torch.cat([text.tokens, context], dim=-1))
        chosen = targets != -100
        return F.cross_entropy(logits[chosen], targets[chosen])

    def loss(self, model: RetrievalModel, video: VideoFeatures | None, tokens: torch.Tensor,
             tags: torch.Tensor | None, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """The selected tasks' losses, summed (``video`` is needed by ``tap`` alone)."""
        total = torch.zeros((), device=tokens.device)
        if "tap" in self.tasks:
            total = total + self.tap_loss(video, tags, generator)
        if "mlm" in self.tasks:
            total = total + self.mlm_loss(model, tokens, generator)
        return total

"""Captions and keywords -> token ids for the CLIP text tower (open_clip's tokenizer).

Keywords are short, so they are tokenized to ``keyword_length`` tokens instead of
the full context; the backbone accepts shorter sequences. Missing keywords
(a caption with fewer than K) are padded and masked out.
"""

from __future__ import annotations

from collections.abc import Sequence

import open_clip
import torch

from vtr_models.backbone import quiet_open_clip


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` token ids cut after the longest text's end token.

    The text tower is causal, so padding after a text's end token changes none of
    its features (the word mask drops the padding too); a short query then costs
    a dozen positions of the tower instead of the whole context. For inference
    only: training all-gathers the token features, which needs one width on
    every worker.
    """
    used = (tokens != 0).any(dim=0).nonzero()
    return tokens[:, : int(used.max()) + 1] if len(used) else tokens[:, :1]


class TextTokenizer:
    """open_clip's tokenizer for a backbone, for captions and keyword lists."""

    def __init__(self, model_name: str, context_length: int, keyword_length: int = 16) -> None:
        with quiet_open_clip():
            self.tokenizer = open_clip.get_tokenizer(model_name)
        self.context_length = context_length
        self.keyword_length = min(keyword_length, context_length)

    def captions(self, texts: Sequence[str]) -> torch.Tensor:
        """``[B, context_length]`` token ids (truncated with EOT kept, as open_clip does)."""
        return self.tokenizer(list(texts), context_length=self.context_length)

    def dropped_tokens(self, text: str) -> int:
        """How many of ``text``'s tokens :meth:`captions` cuts off: its length
        (start and end tokens included, padding id 0 not) over the context. A token
        covers at least one character, so a context of ``len(text) + 2`` holds them all."""
        full = self.tokenizer([text], context_length=len(text) + 2)[0]
        return max(0, int((full != 0).sum()) - self.context_length)

    def keywords(
        self, keyword_lists: Sequence[Sequence[str]], max_keywords: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, K, keyword_length]`` token ids and a ``[B, K]`` mask of real keywords."""
        batch = len(keyword_lists)
        tokens = torch.zeros(batch, max_keywords, self.keyword_length, dtype=torch.long)
        mask = torch.zeros(batch, max_keywords, dtype=torch.bool)
        flat = [(i, j, kw) for i, kws in enumerate(keyword_lists)
                for j, kw in enumerate(list(kws)[:max_keywords])]
        if flat:
            ids = self.tokenizer([kw for _, _, kw in flat], context_length=self.keyword_length)
            rows = torch.tensor([i for i, _, _ in flat])
            cols = torch.tensor([j for _, j, _ in flat])
            tokens[rows, cols] = ids
            mask[rows, cols] = True
        return tokens, mask

"""Text local feature enhancement (docs/method.md S3): word tokens attend to the caption's keywords.

``W_e = W + tanh(g) CrossAttn(Q = W Wq, K = Wk Wk', V = Wk Wv)``: keywords
(encoded by the text encoder itself) tell which words matter. A caption
without keywords keeps ``W`` unchanged.

The gate ``g`` starts at zero (as Flamingo's gated cross-attention): docs/method.md's
formula adds the attended keywords at full scale, and at initialisation that
is one caption-wide offset on every word (each word attends to the same few
keywords), which blurs the word-level detail that fine-grained matching needs
before the attention has learnt anything. With the gate, training opens it as
far as the keywords help.
"""

from __future__ import annotations

import torch
from torch import nn

from vtr_models.masking import padding_mask


class TextLocalEnhancement(nn.Module):
    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(
        self, words: torch.Tensor, keywords: torch.Tensor, keyword_mask: torch.Tensor
    ) -> torch.Tensor:
        """``[B, L, D]`` words, ``[B, K, D]`` keywords, ``[B, K]`` mask -> ``[B, L, D]``."""
        attended, _ = self.attention(
            words, keywords, keywords, key_padding_mask=padding_mask(keyword_mask),
            need_weights=False,
        )
        has_keywords = keyword_mask.any(dim=-1).to(words.dtype)[:, None, None]
        return words + torch.tanh(self.gate) * attended * has_keywords

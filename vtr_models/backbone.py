"""The CLIP backbone (open_clip): per-frame video features and per-token text features.

``--backbone NAME[:PRETRAINED]`` names any open_clip model plus an optional
pretrained tag (``ViT-B-32:openai``) or local checkpoint path
(``ViT-B-16:/models/clip.bin``). The tiny architectures in ``model_configs/``
(``vtr-tiny``, ``vtr-small``) are registered with open_clip on import, the way
open_clip keeps its own configs, so tests and CPU benchmarks build them by name.

Weights asked for and not loadable are an error with instructions; random
initialisation happens only when the spec has no pretrained part.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.model import CLIP
from torch import nn

CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(CONFIG_DIR)


class BackboneLoadError(ValueError):
    """Asked-for weights could not be loaded; the message says how to get them. A
    ValueError: the jobs refuse it as bad input, in one line."""


@dataclass(frozen=True)
class BackboneSpec:
    """An open_clip model name and where its weights come from (None: random init)."""

    name: str
    pretrained: str | None = None

    @classmethod
    def parse(cls, spec: str) -> BackboneSpec:
        name, _, pretrained = spec.partition(":")
        if not name:
            raise ValueError(f"backbone {spec!r}: expected NAME[:PRETRAINED]")
        return cls(name, pretrained or None)

    def __str__(self) -> str:
        return f"{self.name}:{self.pretrained}" if self.pretrained else self.name


def create_clip(spec: BackboneSpec, load_weights: bool = True) -> CLIP:
    """The open_clip model for ``spec``.

    ``load_weights=False`` builds the architecture only (a checkpoint will fill it).
    """
    if spec.name not in open_clip.list_models():
        raise BackboneLoadError(
            f"unknown open_clip model {spec.name!r}; known: vtr-tiny, vtr-small, ViT-B-32, "
            "ViT-B-16, ... (open_clip.list_models())"
        )
    pretrained = spec.pretrained if load_weights else None
    try:
        with quiet_open_clip(architecture_only=not load_weights):
            model = open_clip.create_model(spec.name, pretrained=pretrained, weights_only=True)
    except Exception as exc:
        if pretrained is None:
            raise
        where = (
            f"the checkpoint file {pretrained}"
            if Path(pretrained).suffix or "/" in pretrained
            else f"open_clip's {spec.name} weights tagged {pretrained!r}"
        )
        raise BackboneLoadError(
            f"cannot load {where} for backbone {spec}: {type(exc).__name__}: {exc}\n"
            f"On a machine with network access, download them "
            f"(python -c \"import open_clip; open_clip.create_model('{spec.name}', "
            f"pretrained='{pretrained}', cache_dir='/models/open_clip')\"), copy the file to "
            f"this machine and pass --backbone {spec.name}:/models/open_clip/<file>."
        ) from exc
    if not isinstance(model, CLIP):
        raise BackboneLoadError(
            f"backbone {spec.name}: only open_clip CLIP models with the built-in text "
            f"tower are supported, not {type(model).__name__}"
        )
    return model


class _OpenClipChatter(logging.Filter):
    def __init__(self, architecture_only: bool) -> None:
        super().__init__()
        self.architecture_only = architecture_only

    def filter(self, record: logging.LogRecord) -> bool:
        if self.architecture_only and record.getMessage().startswith(
                "No pretrained weights loaded"):
            return False
        return not (record.levelno <= logging.INFO
                    and f"{os.sep}open_clip{os.sep}" in record.pathname)


@contextlib.contextmanager
def quiet_open_clip(architecture_only: bool = False):
    """Hide open_clip's INFO records while it builds a model or tokenizer.

    open_clip logs each step of a build on the root logger (nine lines per
    model); where the root logger is at INFO (a Ray Train worker, a job) they
    would bury the run's own lines. With ``architecture_only`` its "initialized
    randomly" warning goes too: a checkpoint fills the weights right after, and
    the warning would tell users the opposite of what happens. Warnings about
    weights that were asked for stay.
    """
    root = logging.getLogger()
    quiet = _OpenClipChatter(architecture_only)
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


@dataclass
class TextTokens:
    """Text tower outputs: projected token features, the EOT (global) feature, a mask."""

    tokens: torch.Tensor  # [B, L, D] after ln_final and the text projection
    global_feature: torch.Tensor  # [B, D] the EOT token
    mask: torch.Tensor  # [B, L] bool: the words and EOT (not the start token)


class ClipBackbone(nn.Module):
    """Frame features for video batches and token features for text, from one CLIP."""

    def __init__(self, clip: CLIP) -> None:
        super().__init__()
        self.clip = clip
        # CLIP's own temperature (and SigLIP bias) go unused: the retrieval loss has its own.
        for name in ("logit_scale", "logit_bias"):
            if isinstance(getattr(clip, name, None), nn.Parameter):
                getattr(clip, name).requires_grad_(False)
        self.embed_dim = int(clip.text_projection.shape[-1])
        self.context_length = int(clip.context_length)

    def patch_grid(self) -> tuple[int, int]:
        """``(patches, width)`` of the image tower's patch tokens. ValueError for a tower
        without them (open_clip's ResNets)."""
        visual = self.clip.visual
        if not (hasattr(visual, "grid_size") and hasattr(visual, "output_tokens")):
            raise ValueError(f"spatial frame features need a ViT image tower; "
                             f"{type(visual).__name__} has no patch tokens")
        return math.prod(visual.grid_size), int(visual.transformer.width)

    def keep_patch_tokens(self) -> None:
        """From now on the image tower also returns its patch tokens (which it computes
        anyway), for ``encode_frames(..., tokens=True)``. Set once, never toggled per call,
        so that concurrent calls (a service's threads) see one behaviour."""
        self.patch_grid()
        self.clip.visual.output_tokens = True

    def encode_frames(self, frames: torch.Tensor, frame_mask: torch.Tensor,
                      tokens: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``[B, T, 3, H, W]`` frames -> ``[B, T, D]`` features; padded frames stay zero.
        With ``tokens`` (after ``keep_patch_tokens``), also the ``[B, T, N, W]`` patch
        tokens (``patch_grid``).

        Only valid frames go through the image tower, so padding costs nothing.
        """
        b, t = frames.shape[:2]
        out = frames.new_zeros(b, t, self.embed_dim)
        grid = None
        if tokens:
            if not getattr(self.clip.visual, "output_tokens", False):
                raise ValueError("encode_frames(tokens=True) needs keep_patch_tokens() first")
            grid = frames.new_zeros(b, t, *self.patch_grid())
        valid = frame_mask.bool()
        if valid.any():
            found = self.clip.encode_image(frames[valid])
            pooled, patches = found if isinstance(found, tuple) else (found, None)
            out[valid] = pooled.to(out.dtype)
            if grid is not None:
                grid[valid] = patches.to(grid.dtype)
        return out if grid is None else (out, grid)

    def encode_tokens(self, text: torch.Tensor) -> TextTokens:
        """``[B, L]`` token ids (L <= context length) -> token and global features.

        Follows ``CLIP.encode_text`` but keeps every token and accepts sequences
        shorter than the context (keywords), slicing the causal mask. The mask is
        causal, so tokens after EOT (padding) never change the outputs up to EOT.
        The word mask leaves out the start token: it attends only to itself, so
        its feature is the same for every caption and would add a
        caption-independent term to word-level matching.
        """
        length = text.shape[-1]
        if length > self.context_length:
            raise ValueError(f"{length} tokens exceed the context length {self.context_length}")
        clip = self.clip
        cast = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(text).to(cast) + clip.positional_embedding[:length].to(cast)
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)
        if isinstance(clip.text_projection, nn.Linear):
            x = clip.text_projection(x)
        else:
            x = x @ clip.text_projection
        eot = text.argmax(dim=-1)
        positions = torch.arange(length, device=text.device)
        return TextTokens(
            tokens=x,
            global_feature=x[torch.arange(x.shape[0], device=x.device), eot],
            mask=(positions[None, :] >= 1) & (positions[None, :] <= eot[:, None]),
        )

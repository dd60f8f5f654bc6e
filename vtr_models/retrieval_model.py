"""The retrieval model: CLIP backbone + temporal encoder + local enhancement + interaction.

The interface that training, embedding and querying build on:

- ``encode_video(frames, frame_mask) -> VideoFeatures``: query-independent; holds
  the vector-search embedding and everything the full score needs later, so a
  stored video never needs its frames again;
- ``encode_text(tokens, keyword_tokens, keyword_mask) -> TextFeatures``;
- ``score(text, video) -> [num_texts, num_videos]``: the full-model similarity
  (coarse + g * fine, + g_r * relation with seed 000's relations), in chunks so
  that large score matrices fit in memory;
- ``video_embedding`` / ``text_embedding``: the first-stage (vector index) pair;
  ``first_stage_score``: their cosines, the ranking the index gives.

The full model starts as CLIP: every part seed 002 adds enters through a
residual or gate that contributes nothing at initialisation (the temporal
encoder's and the pooling's zero output maps, the keyword gate, and ``g``, the
fine term's weight, which starts at zero; the relation term's gate ``g_r``
and its fusions' zero output maps). An untrained ``lfemi`` therefore
scores exactly as ``meanp`` (the cosine of the caption with the mean frame
feature), so it searches an archive zero-shot with a pretrained backbone, and
training opens each part as far as it helps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vtr_models.backbone import ClipBackbone
from vtr_models.loss import ContrastiveLoss
from vtr_models.masking import masked_mean
from vtr_models.modal_interaction import TextConditionedPooling
from vtr_models.model_config import ModelConfig
from vtr_models.motion import MotionFrames, frame_differences
from vtr_models.relations import RelationalFusion, neighbourhood_kl
from vtr_models.semantic_levels import SemanticLevel
from vtr_models.similarity import conditioned_cosine, fine_grained, pairwise_cosine
from vtr_models.spatial import SpatialFrames
from vtr_models.temporal_encoder import TemporalEncoder
from vtr_models.text_enhancement import TextLocalEnhancement
from vtr_models.video_enhancement import VideoLocalEnhancement


@dataclass
class VideoFeatures:
    """Per-video features; ``local`` is None when the model has no fine-grained part."""

    pooled: torch.Tensor  # [B, D] mean of temporal frame features (the first-stage vector)
    frames: torch.Tensor  # [B, T, D] temporal frame features F' (for interaction)
    local: torch.Tensor | None  # [B, T, D] enhanced local features V_e (for fine-grained)
    mask: torch.Tensor  # [B, T] bool

    def __getitem__(self, index: slice | torch.Tensor) -> VideoFeatures:
        return VideoFeatures(self.pooled[index], self.frames[index],
                             None if self.local is None else self.local[index], self.mask[index])

    def to(self, device: torch.device | str) -> VideoFeatures:
        """The same features on ``device`` (stored features are read on the CPU)."""
        return VideoFeatures(self.pooled.to(device), self.frames.to(device),
                             None if self.local is None else self.local.to(device),
                             self.mask.to(device))

    def __len__(self) -> int:
        return self.pooled.shape[0]

    @classmethod
    def of_frames(cls, frames: torch.Tensor, local: torch.Tensor | None,
                  mask: torch.Tensor) -> VideoFeatures:
        """The features of temporal frame features ``frames``: ``pooled`` is their masked
        mean. Encoding and reading stored rerank features both build them here, so the
        first-stage vector has one definition."""
        return cls(masked_mean(frames, mask, dim=1), frames, local, mask)


@dataclass
class TextFeatures:
    """Per-caption features; ``tokens`` is None when no part reads the words (neither the
    fine-grained part nor the relations)."""

    global_feature: torch.Tensor  # [B, D] the EOT feature t
    tokens: torch.Tensor | None  # [B, L, D] (enhanced) word features W_e
    mask: torch.Tensor  # [B, L] bool

    def __getitem__(self, index: slice | torch.Tensor) -> TextFeatures:
        return TextFeatures(self.global_feature[index],
                            None if self.tokens is None else self.tokens[index], self.mask[index])

    def __len__(self) -> int:
        return self.global_feature.shape[0]


class RetrievalModel(nn.Module):
    """One class for ``lfemi`` and its baselines; the config says which parts exist."""

    def __init__(self, config: ModelConfig, backbone: ClipBackbone) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        dim = backbone.embed_dim
        self.motion = MotionFrames(dim) if config.motion else None
        self.spatial = None
        if config.spatial:
            backbone.keep_patch_tokens()
            self.spatial = SpatialFrames(*backbone.patch_grid(), dim, config.spatial_channels)
        self.temporal = (
            TemporalEncoder(dim, config.max_frames, config.temporal_layers, config.heads,
                            config.dropout)
            if config.temporal else None
        )
        # the enhancements feed the fine term alone: without it they would be dead weights
        self.video_enhance = (
            VideoLocalEnhancement(dim, config.heads)
            if config.video_enhance and config.fine_grained else None
        )
        self.text_enhance = (
            TextLocalEnhancement(dim, config.heads, config.dropout)
            if config.text_enhance and config.fine_grained else None
        )
        self.interaction = (
            TextConditionedPooling(dim, config.interaction_heads, config.dropout)
            if config.interaction else None
        )
        # g: the fine term's weight in the score, zero at initialisation (see the docstring)
        self.fine_gate = nn.Parameter(torch.zeros(())) if config.fine_grained else None
        # seed 000: each modality's relational fusion, its cosine a term gated from zero
        relations = (lambda: RelationalFusion(dim, config.relation_slots, config.relation_scales)
                     ) if config.relations else (lambda: None)
        self.video_relations, self.text_relations = relations(), relations()
        self.relation_gate = nn.Parameter(torch.zeros(())) if config.relations else None
        # seeds 001/003: one pooled similarity per semantic level, each gated from zero
        if config.semantic_levels and not config.tag_vocab:
            raise ValueError("semantic levels need their tag vocabularies (tag_vocab), which "
                             "the train job mines from the training captions")
        self.semantic = nn.ModuleList(SemanticLevel(dim, len(vocab))
                                      for vocab in config.tag_vocab)
        self.loss = ContrastiveLoss()

    def encode_video(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> VideoFeatures:
        """``[B, T, 3, H, W]`` frames with a ``[B, T]`` mask (padding at the end)."""
        mask = frame_mask.bool()
        if self.spatial is not None:
            features = self.spatial(*self.backbone.encode_frames(frames, mask, tokens=True))
        else:
            features = self.backbone.encode_frames(frames, mask)
        if self.motion is not None and self.motion.needed():
            features = self.motion(features, self.backbone.encode_frames(
                frame_differences(frames, mask), mask))
        if self.temporal is not None:
            features = self.temporal(features, mask)
        local = None
        if self.config.fine_grained:
            if self.video_enhance is not None:
                local = self.video_enhance(features, mask)
            else:
                local = F.normalize(features, dim=-1) * mask.unsqueeze(-1).to(features.dtype)
        return VideoFeatures.of_frames(features, local, mask)

    def encode_text(
        self,
        tokens: torch.Tensor,
        keyword_tokens: torch.Tensor | None = None,
        keyword_mask: torch.Tensor | None = None,
    ) -> TextFeatures:
        """``[B, L]`` caption tokens; ``[B, K, Lk]`` keyword tokens and ``[B, K]`` mask.

        Keywords go through the same text encoder (shared parameters) and only
        matter to the text enhancement; models without it ignore them.
        """
        text = self.backbone.encode_tokens(tokens)
        words = text.tokens
        if self.text_enhance is not None and keyword_tokens is not None:
            b, k, length = keyword_tokens.shape
            keywords = self.backbone.encode_tokens(keyword_tokens.reshape(b * k, length))
            keyword_features = keywords.global_feature.reshape(b, k, -1)
            words = self.text_enhance(words, keyword_features, keyword_mask.bool())
        keep_words = (self.config.fine_grained or self.config.relations
                      or bool(self.config.semantic_levels))
        return TextFeatures(text.global_feature, words if keep_words else None, text.mask)

    def forward(
        self,
        frames: torch.Tensor,
        frame_mask: torch.Tensor,
        tokens: torch.Tensor,
        keyword_tokens: torch.Tensor | None = None,
        keyword_mask: torch.Tensor | None = None,
    ) -> tuple[TextFeatures, VideoFeatures]:
        """Both encoders at once: the call a DistributedDataParallel wrapper sees."""
        return self.encode_text(tokens, keyword_tokens, keyword_mask), self.encode_video(
            frames, frame_mask
        )

    def video_embedding(self, video: VideoFeatures) -> torch.Tensor:
        """First-stage, query-independent video vector (unit length)."""
        return F.normalize(video.pooled, dim=-1)

    def text_embedding(self, text: TextFeatures) -> torch.Tensor:
        """First-stage query vector (unit length): the caption's global feature."""
        return F.normalize(text.global_feature, dim=-1)

    def first_stage_score(self, text: TextFeatures, video: VideoFeatures) -> torch.Tensor:
        """``[num_texts, num_videos]`` cosine of the first-stage pair: the ranking the
        vector index gives before the full model reranks."""
        return self.text_embedding(text) @ self.video_embedding(video).T

    def coarse_score(self, text: TextFeatures, video: VideoFeatures) -> torch.Tensor:
        if self.interaction is not None:
            pooled = self.interaction(text.global_feature, video.frames, video.mask)
            return conditioned_cosine(text.global_feature, pooled)
        return pairwise_cosine(text.global_feature, video.pooled)

    def fine_score(self, text: TextFeatures, video: VideoFeatures) -> torch.Tensor:
        return fine_grained(text.tokens, text.mask, video.local, video.mask)

    def text_vectors(self, text: TextFeatures) -> list[torch.Tensor]:
        """The caption side ``[Nt, D]`` of each gated cosine term the other seeds add:
        seed 000's fused feature (its words through the relational fusion, on ``t``),
        then each semantic level's pooled words. Query-independent of the videos."""
        fused = ([self.text_relations(text.tokens, text.mask, text.global_feature)]
                 if self.text_relations is not None else [])
        return fused + [level.text_pool(text.tokens, text.mask) for level in self.semantic]

    def video_vectors(self, video: VideoFeatures) -> list[torch.Tensor]:
        """The video side ``[Nv, D]`` of the same terms, from the frames ``F'`` (and the mean
        frame feature): a stored video rebuilds them from its stored frame features."""
        fused = ([self.video_relations(video.frames, video.mask, video.pooled)]
                 if self.video_relations is not None else [])
        return fused + [level.video_pool(video.frames, video.mask) for level in self.semantic]

    def term_gates(self) -> list[torch.Tensor]:
        """The gates of those terms, in the same order, each zero at initialisation."""
        return ([self.relation_gate] if self.relation_gate is not None else []) + [
            level.gate for level in self.semantic]

    @torch.no_grad()
    def predict_tags(self, video: VideoFeatures, threshold: float = 0.5) -> list[list[str]]:
        """Each video's tags: those of every semantic level whose predicted probability
        (the shared projection of the level's pooled frames) reaches ``threshold``, most
        probable first within a level; empty lists for a model without levels."""
        tags: list[list[str]] = [[] for _ in range(len(video))]
        for level, vocab in zip(self.semantic, self.config.tag_vocab, strict=True):
            probs = torch.sigmoid(level.project(level.video_pool(video.frames, video.mask)))
            for i, row in enumerate(probs.float().cpu()):
                order = row.argsort(descending=True).tolist()
                tags[i].extend(vocab[j] for j in order if row[j] >= threshold)
        return tags

    def auxiliary_loss(self, text: TextFeatures, video: VideoFeatures,
                       tags: torch.Tensor | None = None) -> torch.Tensor:
        """The losses beside the contrastive one, for captions and their videos (``video``
        row ``i`` is caption ``i``'s): ``relation_kl`` times the neighbourhood KL of the
        relational fusions (seed 000), and ``tag_loss`` times each semantic level's tag
        loss against ``tags`` ``[N, sum of vocabulary sizes]`` (seeds 001/003). 0 for a
        model with neither."""
        loss = text.global_feature.sum() * 0.0
        if not self.term_gates():
            return loss
        texts, videos = self.text_vectors(text), self.video_vectors(video)  # each side once
        if self.video_relations is not None:
            (fused_text, *texts), (fused_video, *videos) = texts, videos
            if self.config.relation_kl:
                loss = loss + self.config.relation_kl * neighbourhood_kl(fused_text, fused_video)
        if len(self.semantic) and self.config.tag_loss:
            if tags is None:
                raise ValueError("a model with semantic levels trains on caption tags")
            sizes = [level.project.out_features for level in self.semantic]
            for level, t, v, target in zip(self.semantic, texts, videos,
                                           tags.split(sizes, dim=1), strict=True):
                loss = loss + self.config.tag_loss * level.loss(
                    t, v, target, self.config.focal_gamma, self.config.tag_kl)
        return loss

    def score(
        self, text: TextFeatures, video: VideoFeatures, chunk_size: int = 128
    ) -> torch.Tensor:
        """Full-model similarity ``[num_texts, num_videos]``: coarse + g * fine (+ g_r *
        relation, + each semantic level's gate times its pooled cosine), block by block.

        Text-conditioned pooling and token-wise matching need a ``[texts, videos, ...]``
        tensor per block; chunking bounds it to ``chunk_size**2`` pairs.
        """
        gates = self.term_gates()
        video_chunks = [video[j : j + chunk_size] for j in range(0, len(video), chunk_size)]
        # the other seeds' terms: each side's vectors once, not once per block
        video_sides = [self.video_vectors(v) if gates else [] for v in video_chunks]
        rows = []
        for i in range(0, len(text), chunk_size):
            t = text[i : i + chunk_size]
            text_side = self.text_vectors(t) if gates else []
            cols = []
            for v, video_side in zip(video_chunks, video_sides, strict=True):
                block = self.coarse_score(t, v)
                if self.fine_gate is not None:
                    block = block + self.fine_gate * self.fine_score(t, v)
                for gate, a, b in zip(gates, text_side, video_side, strict=True):
                    block = block + gate * pairwise_cosine(a, b)
                cols.append(block)
            rows.append(torch.cat(cols, dim=1))
        return torch.cat(rows, dim=0)

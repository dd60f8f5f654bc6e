"""Model configurations: one dataclass per named model, every hyper-parameter in it.

Configs are frozen (hashable: data loading caches a preprocessor per config),
and ``to_dict``/``from_dict`` are their one encoding: a checkpoint's
``config.json``, and what training sends its workers. Loading rebuilds the
exact model.

The switches (``motion``, ``temporal``, ``video_enhance``, ``text_enhance``,
``interaction``, ``fine_grained``) turn parts of the full model off for ablations; ``meanp``
and ``seqtransf`` are the full model's CLIP4Clip baselines with everything off.
``relations`` adds seed 000's relational fusion (to ``lfemi``, or alone: ``rrn``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """The full model (``lfemi``): local feature enhancement + modal interaction."""

    name: str = "lfemi"
    backbone: str = "vtr-tiny"  # open_clip NAME[:PRETRAINED]
    max_frames: int = 12
    motion: bool = True  # motion frames added to the frame features (vtr_models.motion)
    spatial: bool = False  # patch tokens in grid order added to them (vtr_models.spatial)
    spatial_channels: int = 16  # numbers kept per patch token for the spatial map
    temporal: bool = True  # S2 temporal encoder (else F' = F)
    temporal_layers: int = 2
    heads: int = 4  # attention heads of the temporal encoder and the enhancement layers
    dropout: float = 0.1
    video_enhance: bool = True  # S2 video local enhancement
    text_enhance: bool = True  # S3 keyword-guided text local enhancement
    interaction: bool = True  # S4 text-conditioned pooling
    interaction_heads: int = 1
    fine_grained: bool = True  # S5 fine-grained similarity
    relations: bool = False  # seed 000's relational fusion, a gated score term (relations.py)
    relation_slots: int = 8  # positions each sequence is read at for the relation groups
    relation_scales: int = 4  # groups of 2 .. this many frames (and words)
    relation_kl: float = 0.1  # weight of the neighbourhood KL between the fused features
    # seeds 001/003: levels of vtr_models.tags.TAG_LEVELS with a pooled similarity each, and
    # each level's tag vocabulary (mined from the training captions by the train job)
    semantic_levels: tuple[str, ...] = ()
    tag_vocab: tuple[tuple[str, ...], ...] = ()
    tag_loss: float = 1.0  # weight of the levels' tag losses (FBCE + tag_kl * KL)
    tag_kl: float = 0.1  # weight of the KL between the modalities' tag distributions
    focal_gamma: float = 2.0  # FBCE's focusing exponent
    max_keywords: int = 5  # K
    keyword_length: int = 16  # tokens per keyword

    def __post_init__(self) -> None:
        # JSON gives lists: a config must stay hashable (data loading caches per config)
        object.__setattr__(self, "semantic_levels", tuple(self.semantic_levels))
        object.__setattr__(self, "tag_vocab", tuple(tuple(v) for v in self.tag_vocab))
        from vtr_models.tags import TAG_LEVELS

        unknown = [level for level in self.semantic_levels if level not in TAG_LEVELS]
        if unknown:
            raise ValueError(f"unknown semantic level(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(TAG_LEVELS)}")
        if len(set(self.semantic_levels)) != len(self.semantic_levels):
            raise ValueError(f"semantic levels repeat: {', '.join(self.semantic_levels)}")
        if self.tag_vocab and len(self.tag_vocab) != len(self.semantic_levels):
            raise ValueError("tag_vocab needs one vocabulary per semantic level")
        empty = [level for level, vocab in zip(self.semantic_levels, self.tag_vocab,
                                               strict=False) if not vocab]
        if empty:
            raise ValueError(f"semantic level(s) {', '.join(empty)} have no tags: the "
                             "captions hold none of them")

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every setting, ``name`` included: what ``from_dict`` and ``config.json`` hold."""
        return dataclasses.asdict(self)

    @staticmethod
    def saved(values: dict) -> ModelConfig:
        """The config a checkpoint's ``config.json`` was saved with: a setting it lacks was
        not in the code that wrote it, so it takes the value that code had
        (``SAVED_BEFORE``), not today's default."""
        return ModelConfig.from_dict({**SAVED_BEFORE, **values})

    @staticmethod
    def from_dict(values: dict) -> ModelConfig:
        """The config of the model class ``values["name"]`` names, with the other settings
        of ``values`` (all of them, as ``to_dict`` writes them, or some: defaults fill in)."""
        values = dict(values)
        return model_config(values.pop("name"), **values)


#: settings whose default changed after checkpoints were saved without them: the value
#: those checkpoints were trained with (motion frames became lfemi's default on 2026-12-07)
SAVED_BEFORE = {"motion": False}


@dataclass(frozen=True)
class LfemiConfig(ModelConfig):
    name: str = "lfemi"


@dataclass(frozen=True)
class MeanPConfig(ModelConfig):
    """CLIP4Clip meanP: mean of CLIP frame features, cosine with the caption."""

    name: str = "meanp"
    motion: bool = False
    temporal: bool = False
    video_enhance: bool = False
    text_enhance: bool = False
    interaction: bool = False
    fine_grained: bool = False


@dataclass(frozen=True)
class SeqTransfConfig(MeanPConfig):
    """CLIP4Clip seqTransf: meanP with a temporal transformer over frames before pooling."""

    name: str = "seqtransf"
    temporal: bool = True


@dataclass(frozen=True)
class RrnConfig(MeanPConfig):
    """Seed 000's relational reasoning network: per modality, a GRU's global feature and
    multi-scale relations fused into the common space, beside CLIP's mean pooling."""

    name: str = "rrn"
    relations: bool = True


MODEL_CONFIGS: dict[str, type[ModelConfig]] = {
    "lfemi": LfemiConfig,
    "meanp": MeanPConfig,
    "seqtransf": SeqTransfConfig,
    "rrn": RrnConfig,
}


def model_config(name: str, **overrides) -> ModelConfig:
    """The config of model ``name`` with its defaults, changed by ``overrides``."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_CONFIGS)}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown model setting(s): {', '.join(sorted(unknown))}")
    return MODEL_CONFIGS[name](**overrides)

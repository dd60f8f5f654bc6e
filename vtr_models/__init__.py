"""Text-video retrieval models: a plain PyTorch library on open_clip (no Ray, no storage I/O).

The front door, as open_clip's::

    import vtr_models
    model = vtr_models.create_model("lfemi", backbone="ViT-B-32:openai")
    folder = vtr_models.save_checkpoint(model, "ckpt/final")
    model = vtr_models.load_checkpoint(folder)

Names load on first use (PEP 562): ``vtr_models.frame_thinning``, which the
ingest's decoder processes import, stays free of torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "create_model": "vtr_models.factory",
    "create_inputs": "vtr_models.factory",
    "MODEL_CONFIGS": "vtr_models.model_config",
    "ModelConfig": "vtr_models.model_config",
    "save_checkpoint": "vtr_models.checkpoint",
    "load_checkpoint": "vtr_models.checkpoint",
    "checkpoint_id": "vtr_models.checkpoint",
    "open_model": "vtr_models.checkpoint",
    "model_id": "vtr_models.checkpoint",
    "training_settings": "vtr_models.checkpoint",
    "FINAL_FOLDER": "vtr_models.checkpoint",
    "RetrievalModel": "vtr_models.retrieval_model",
    "TextFeatures": "vtr_models.retrieval_model",
    "VideoFeatures": "vtr_models.retrieval_model",
    "retrieval_metrics": "vtr_models.metrics",
    "BackboneSpec": "vtr_models.backbone",
    "BackboneLoadError": "vtr_models.backbone",
    "load_weights": "vtr_models.checkpoint",
    "optimizer_groups": "vtr_models.param_groups",
    "random_placement": "vtr_models.augment",
    "random_shift": "vtr_models.augment",
    "even_indices": "vtr_models.frame_thinning",
    "rank_metrics": "vtr_models.metrics",
    "trim_padding": "vtr_models.text_inputs",
    "Moment": "vtr_models.moments",
    "best_moment": "vtr_models.moments",
    "example_evidence": "vtr_models.moments",
    "frame_evidence": "vtr_models.moments",
    "frame_times": "vtr_models.moments",
    "TAG_LEVELS": "vtr_models.tags",
    "PRETRAIN_TASKS": "vtr_models.pretraining",
    "PretrainingHeads": "vtr_models.pretraining",
    "caption_tags": "vtr_models.tags",
    "tag_targets": "vtr_models.tags",
    "tag_vocabulary": "vtr_models.tags",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vtr_models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__

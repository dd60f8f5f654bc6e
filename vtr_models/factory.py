"""Build a retrieval model by name, the way open_clip's factory builds CLIP models.

``create_model("lfemi", backbone="ViT-B-32:openai")`` returns the model with its
tokenizer and frame preprocessor attached (``model.tokenizer``,
``model.preprocess``), so callers never pair them up by hand.
"""

from __future__ import annotations

from vtr_models.backbone import BackboneSpec, ClipBackbone, create_clip
from vtr_models.frames import FramePreprocessor
from vtr_models.model_config import ModelConfig, model_config
from vtr_models.retrieval_model import RetrievalModel
from vtr_models.text_inputs import TextTokenizer


def create_model(
    config: ModelConfig | str, load_weights: bool = True, **overrides
) -> RetrievalModel:
    """A model from a config (or a model name plus setting overrides, e.g. ``backbone=``).

    ``load_weights=False`` skips the backbone's pretrained weights (a checkpoint
    is about to replace every weight anyway).
    """
    if isinstance(config, str):
        config = model_config(config, **overrides)
    elif overrides:
        config = config.replace(**overrides)
    spec = BackboneSpec.parse(config.backbone)
    clip, transform = create_clip(spec, load_weights=load_weights)
    backbone = ClipBackbone(clip)
    model = RetrievalModel(config, backbone)
    model.tokenizer = TextTokenizer(spec.name, backbone.context_length, config.keyword_length)
    model.preprocess = FramePreprocessor(transform, config.max_frames)
    return model

"""Build a retrieval model by name, the way open_clip's factory builds CLIP models.

``create_model("lfemi", backbone="ViT-B-32:openai")`` returns the model with its
tokenizer and frame preprocessor attached (``model.tokenizer``,
``model.preprocess``), so callers never pair them up by hand.
"""

from __future__ import annotations

import open_clip
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

from vtr_models.backbone import BackboneSpec, ClipBackbone, create_clip
from vtr_models.frames import FramePreprocessor
from vtr_models.model_config import ModelConfig, model_config
from vtr_models.retrieval_model import RetrievalModel
from vtr_models.text_inputs import TextTokenizer


def create_inputs(config: ModelConfig) -> tuple[FramePreprocessor, TextTokenizer]:
    """The frame preprocessor and tokenizer of a model, without building the model.

    Data pipelines call this in every worker: it reads only open_clip's configs
    (image size, context length; mean, std and resizing of a pretrained tag), so
    preprocessing always matches the backbone at no model-building cost.
    """
    spec = BackboneSpec.parse(config.backbone)
    arch = open_clip.get_model_config(spec.name)
    if arch is None:
        raise ValueError(f"unknown open_clip model {spec.name!r}")
    preprocess = PreprocessCfg(size=arch["vision_cfg"]["image_size"])
    if spec.pretrained:
        tag_cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained) or {}
        keys = ("mean", "std", "interpolation", "resize_mode")
        preprocess = PreprocessCfg(**merge_preprocess_dict(
            preprocess, {k: tag_cfg[k] for k in keys if k in tag_cfg}))
    transform = image_transform_v2(preprocess, is_train=False)
    context_length = arch.get("text_cfg", {}).get("context_length", 77)
    return (FramePreprocessor(transform, config.max_frames),
            TextTokenizer(spec.name, context_length, config.keyword_length))


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
    clip = create_clip(BackboneSpec.parse(config.backbone), load_weights=load_weights)
    model = RetrievalModel(config, ClipBackbone(clip))
    model.preprocess, model.tokenizer = create_inputs(config)
    return model

"""Checkpoints as folders: ``config.json`` plus weights in safetensors; nothing unpickled.

``config.json`` holds the model's name, backbone spec and every hyper-parameter;
loading rebuilds the architecture from it (without fetching pretrained
backbone weights) and fills every tensor from ``model.safetensors``. A trained
checkpoint also holds ``training.json``, the training settings that matter to
its users (the weight of the first-stage loss).

Where a model is asked for by users (embed, refresh, query, evaluate, Serve),
a *model source* is either such a folder or a backbone spec with weights
(``ViT-B-32:openai``, ``ViT-B-32:/models/clip.bin``): the untrained full model
on that backbone, which ranks as CLIP's mean pooling does (``open_model``).
So an archive is searchable before anything is trained, and a trained
checkpoint later replaces the zero-shot model like any new checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from vtr_models.backbone import BackboneSpec
from vtr_models.factory import create_model
from vtr_models.model_config import ModelConfig
from vtr_models.retrieval_model import RetrievalModel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINING_FILE = "training.json"
#: the folder a training run exports its chosen model to, inside the run's folder
FINAL_FOLDER = "final"
#: the model a backbone spec stands for: the untrained full model (it scores as meanp)
ZERO_SHOT_MODEL = "lfemi"


def save_checkpoint(model: RetrievalModel, folder: str | Path,
                    training: dict | None = None) -> Path:
    """Write ``folder/config.json`` and ``folder/model.safetensors`` (and the training
    settings ``training``, when given, to ``training.json``); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2))
    save_model(model, str(folder / WEIGHTS_FILE))
    if training is not None:
        (folder / TRAINING_FILE).write_text(json.dumps(training, indent=2))
    return folder


def model_folder(source: str | Path) -> Path:
    """The folder holding the model a checkpoint source names: the source itself, or the
    ``final/`` inside a training run's folder (what ``train --checkpoint`` wrote), so
    that every job takes one name, the run's folder or the model's, for one thing."""
    source = Path(source)
    final = source / FINAL_FOLDER
    return final if not (source / CONFIG_FILE).is_file() and (final / CONFIG_FILE).is_file() \
        else source


def training_settings(source: str | Path) -> dict | None:
    """The training settings a checkpoint folder records; None for a backbone spec or a
    checkpoint saved outside training."""
    path = model_folder(source) / TRAINING_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def is_checkpoint(source: str | Path) -> bool:
    """Whether ``source`` is a checkpoint folder (else it must be a backbone spec)."""
    return (model_folder(source) / CONFIG_FILE).is_file()


def zero_shot_spec(source: str) -> BackboneSpec:
    """The backbone spec ``source`` names, refused when it has no weights: the untrained
    full model on a random backbone would rank at random, and nothing may do that
    silently."""
    spec = None if "://" in source or Path(source).is_dir() else BackboneSpec.parse(source)
    if spec is None or spec.pretrained is None:
        raise FileNotFoundError(
            f"checkpoint {source}: {CONFIG_FILE} not found (for the untrained full model, "
            "name a backbone with its weights: NAME:PRETRAINED, e.g. ViT-B-32:openai or "
            "ViT-B-32:/models/clip.bin)")
    return spec


def open_model(source: str | Path, device: str = "cpu") -> tuple[RetrievalModel, str]:
    """The model a source names, in eval mode, and its id (``model_id``): a checkpoint
    folder's model, or the untrained full model on a pretrained backbone."""
    if is_checkpoint(source):
        return load_checkpoint(source, device), checkpoint_id(source)
    spec = zero_shot_spec(str(source))
    model = create_model(ZERO_SHOT_MODEL, backbone=str(spec)).to(device).eval()
    return model, zero_shot_id(model)


def model_id(source: str | Path) -> str:
    """The id of the model a source names: ``checkpoint_id`` of a folder, ``zero_shot_id``
    of the model a backbone spec builds."""
    if is_checkpoint(source):
        return checkpoint_id(source)
    return open_model(source)[1]


def load_checkpoint(folder: str | Path, device: str = "cpu") -> RetrievalModel:
    """Rebuild the exact model saved in ``folder`` (in eval mode)."""
    folder = model_folder(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {folder}: {path.name} not found")
    config = ModelConfig.saved(json.loads(config_path.read_text()))
    model = create_model(config, load_weights=False)
    load_weights(model, folder, device)
    return model.eval()


def load_weights(model: RetrievalModel, folder: str | Path, device: str = "cpu") -> None:
    """Fill every tensor of ``model`` from ``folder``'s weights (strict: a missing or
    extra tensor is an error); for a model already built, as a training restore has."""
    load_model(model, str(model_folder(folder) / WEIGHTS_FILE), strict=True, device=device)


def checkpoint_id(folder: str | Path) -> str:
    """A short hash of a checkpoint's parsed config and its tensors: equal ids mean the
    same model.

    Embeddings written by one model are meaningless to another; stores record
    this id so that a query can refuse a mismatch. The hash covers what the
    files mean, not their bytes: the config as sorted JSON, and every tensor's
    name, dtype, shape and values in name order. The same weights re-saved (JSON
    re-serialised, CRLF line endings from git, another safetensors header
    layout) keep their id.
    """
    folder = model_folder(folder)
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as weights:
        return _digest(config, ((name, weights.get_tensor(name)) for name in
                                sorted(weights.keys())))


def zero_shot_id(model: RetrievalModel) -> str:
    """The id of an untrained full model: its config and its backbone's tensors. Every
    part beyond the backbone adds nothing at initialisation, so two such models with the
    same backbone weights score alike whatever their random draws, and share the id."""
    state = model.backbone.state_dict()
    return _digest(model.config.to_dict(), ((name, state[name]) for name in sorted(state)))


def _digest(config: dict, tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """A short hash of a config (as sorted JSON) and named tensors, in the order given."""
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    for name, tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]

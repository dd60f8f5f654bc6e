"""Checkpoints as folders: ``config.json`` plus weights in safetensors; nothing unpickled.

``config.json`` holds the model's name, backbone spec and every hyper-parameter;
loading rebuilds the architecture from it (without fetching pretrained
backbone weights) and fills every tensor from ``model.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from vtr_models.factory import create_model
from vtr_models.model_config import ModelConfig
from vtr_models.retrieval_model import RetrievalModel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_checkpoint(model: RetrievalModel, folder: str | Path) -> Path:
    """Write ``folder/config.json`` and ``folder/model.safetensors``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2))
    save_model(model, str(folder / WEIGHTS_FILE))
    return folder


def load_checkpoint(folder: str | Path, device: str = "cpu") -> RetrievalModel:
    """Rebuild the exact model saved in ``folder`` (in eval mode)."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {folder}: {path.name} not found")
    config = ModelConfig.from_dict(json.loads(config_path.read_text()))
    model = create_model(config, load_weights=False)
    load_weights(model, folder, device)
    return model.eval()


def load_weights(model: RetrievalModel, folder: str | Path, device: str = "cpu") -> None:
    """Fill every tensor of ``model`` from ``folder``'s weights (strict: a missing or
    extra tensor is an error); for a model already built, as a training restore has."""
    load_model(model, str(Path(folder) / WEIGHTS_FILE), strict=True, device=device)


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
    folder = Path(folder)
    digest = hashlib.sha256()
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    digest.update(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as weights:
        for name in sorted(weights.keys()):
            tensor = weights.get_tensor(name).contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]

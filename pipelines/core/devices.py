"""The ``--device`` setting of every job that runs a model: one name, one meaning.

``auto`` is a CUDA GPU when there is one (in this process for evaluate and query, in
the Ray cluster for train and embed), else the CPU; ``cuda`` insists on one and
stops with one line when there is none, rather than running for hours on the CPU of
a machine someone believed had a GPU, or waiting for ever for Ray to find one.
"""

from __future__ import annotations

import torch

#: the values ``--device`` takes
DEVICES = ("auto", "cpu", "cuda")
DEVICE_HELP = ("where the model runs: auto (a CUDA GPU when this process sees one, else the "
               "CPU), cpu, or cuda")


def _known(name: str) -> None:
    if name not in DEVICES:
        raise ValueError(f"--device {name!r}: choose one of {', '.join(DEVICES)}")


def resolve_device(name: str) -> str:
    """``cpu`` or ``cuda`` for a ``--device`` value; ValueError for ``cuda`` without a GPU
    or an unknown name."""
    _known(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this process sees no CUDA GPU (torch.cuda.is_available() "
                         "is False; a CPU-only torch build, or no driver)")
    return name


def cluster_device(name: str, cluster_gpus: float, gpus_needed: float) -> str:
    """``cpu`` or ``cuda`` for a Ray job whose workers need ``gpus_needed`` GPUs in all on
    a cluster that has ``cluster_gpus``: ``auto`` takes the GPUs when the cluster has
    enough; ``cuda`` without enough stops with one line (Ray would otherwise wait for
    them for ever)."""
    _known(name)
    if name == "auto":
        return "cuda" if 0 < gpus_needed <= cluster_gpus else "cpu"
    if name == "cuda" and cluster_gpus < gpus_needed:
        raise ValueError(f"--device cuda: the workers need {gpus_needed:g} GPU(s) and the Ray "
                         f"cluster has {cluster_gpus:g}")
    return name

"""The ``--device`` setting of every job that runs a model: one name, one meaning.

``auto`` is a CUDA GPU when this process sees one, else the CPU; ``cuda`` insists
on one and stops with one line when there is none, rather than running for hours
on the CPU of a machine someone believed had a GPU.
"""

from __future__ import annotations

import torch

#: the values ``--device`` takes on jobs that run in one process (evaluate, query, serve)
DEVICES = ("auto", "cpu", "cuda")
DEVICE_HELP = ("where the model runs: auto (a CUDA GPU when this process sees one, else the "
               "CPU), cpu, or cuda")


def resolve_device(name: str) -> str:
    """``cpu`` or ``cuda`` for a ``--device`` value; ValueError for ``cuda`` without a GPU
    or an unknown name."""
    if name not in DEVICES:
        raise ValueError(f"--device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this process sees no CUDA GPU (torch.cuda.is_available() "
                         "is False; a CPU-only torch build, or no driver)")
    return name

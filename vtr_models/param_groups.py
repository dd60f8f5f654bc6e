"""AdamW parameter groups: two learning rates (CLIP backbone, new modules), decay only on weights.

Weight decay pulls a parameter towards zero. That regularises weight matrices,
but on the temperature (``logit_scale``), LayerNorm gains and biases, biases,
gates and position embeddings it only drags them away from what they must
learn: a decayed ``logit_scale`` shrinks towards a temperature of 1, decayed
position embeddings fade the frame order that the temporal encoder needs. As
in CLIP4Clip and open_clip, every parameter with fewer than two dimensions
and every position embedding is left out of the decay.
"""

from __future__ import annotations

from torch import nn

#: parameter-name fragments of position embeddings: ours (``temporal.position``), open_clip's
#: ``positional_embedding`` and its ViT's ``class_embedding``
POSITION_NAMES: tuple[str, ...] = ("position", "class_embedding")


def decays(name: str, parameter: nn.Parameter) -> bool:
    """Whether weight decay applies to this parameter."""
    return parameter.ndim >= 2 and not any(part in name for part in POSITION_NAMES)


def optimizer_groups(model: nn.Module, backbone: nn.Module, lr_backbone: float, lr_new: float,
                     weight_decay: float) -> list[dict]:
    """Up to four AdamW groups: (backbone | new modules) x (decayed | not decayed).

    ``backbone`` is the submodule that came from CLIP; frozen parameters are left out.
    """
    from_clip = {id(p) for p in backbone.parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            key = (id(parameter) in from_clip, decays(name, parameter))
            groups.setdefault(key, []).append(parameter)
    return [
        {"params": params, "lr": lr_backbone if clip else lr_new,
         "weight_decay": weight_decay if decay else 0.0}
        for (clip, decay), params in sorted(groups.items())
    ]

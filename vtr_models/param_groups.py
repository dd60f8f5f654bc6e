"""AdamW parameter groups: learning rates for the CLIP backbone, the new modules and the gates;
decay only on weights.

Weight decay pulls a parameter towards zero. That regularises weight matrices,
but on the temperature (``logit_scale``), LayerNorm gains and biases, biases,
gates and position embeddings it only drags them away from what they must
learn: a decayed ``logit_scale`` shrinks towards a temperature of 1, decayed
position embeddings fade the frame order that the temporal encoder needs. As
in CLIP4Clip and open_clip, every parameter with fewer than two dimensions
and every position embedding is left out of the decay.

A gate (``fine_gate``, the keyword gate) is one number that must travel from
zero, where the untrained model scores as CLIP, to about 0.5. AdamW moves any
parameter by at most about its learning rate per step, so at 5e-4 over the few
hundred steps of a small run a gate cannot open past about 0.25 (measured on the
easy synthetic tier: ``fine_gate`` 0.26 after 30 epochs, while the fine term alone
ranked 73 % of clips within their group correctly). Gates therefore learn
``GATE_LR_SCALE`` times faster than the other new modules.
"""

from __future__ import annotations

from torch import nn

#: parameter-name fragments of position embeddings: ours (``temporal.position``), open_clip's
#: ``positional_embedding`` and its ViT's ``class_embedding``
POSITION_NAMES: tuple[str, ...] = ("position", "class_embedding")
#: how much faster than the new modules the scalar gates learn
GATE_LR_SCALE = 20.0


def is_gate(name: str, parameter: nn.Parameter) -> bool:
    """A scalar gate: one number whose name ends in ``gate``."""
    return parameter.ndim == 0 and name.rsplit(".", 1)[-1].endswith("gate")


def decays(name: str, parameter: nn.Parameter) -> bool:
    """Whether weight decay applies to this parameter."""
    return parameter.ndim >= 2 and not any(part in name for part in POSITION_NAMES)


def optimizer_groups(model: nn.Module, backbone: nn.Module, lr_backbone: float, lr_new: float,
                     weight_decay: float) -> list[dict]:
    """Up to five AdamW groups: (backbone | new modules) x (decayed | not decayed), and the gates;
    each group's ``name`` is its kind (``backbone``, ``new``, ``gate``).

    ``backbone`` is the submodule that came from CLIP; frozen parameters are left out.
    """
    from_clip = {id(p) for p in backbone.parameters()}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            kind = ("backbone" if id(parameter) in from_clip
                    else "gate" if is_gate(name, parameter) else "new")
            groups.setdefault((kind, decays(name, parameter)), []).append(parameter)
    rates = {"backbone": lr_backbone, "new": lr_new, "gate": lr_new * GATE_LR_SCALE}
    return [
        {"params": params, "lr": rates[kind], "weight_decay": weight_decay if decay else 0.0,
         "name": kind}
        for (kind, decay), params in sorted(groups.items())
    ]

"""LoRA adapters for open_clip's linear layers, keeping the layers' own parameter names.

``LoRALinear`` is an ``nn.Linear`` with two extra parameters, ``lora_A`` (in x r) and ``lora_B`` (r x out):
``y = x W^T + b + scale * (x A) B``. Its ``weight`` and ``bias`` keep their state-dict keys, so a pretrained
state dict loads into an adapted model unchanged (``strict=False`` for the new LoRA keys).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LORA_INITS = ("reference", "zero_b")


class LoRALinear(nn.Linear):
    def __init__(self, base: nn.Linear, rank: int, scale: float, init: str, generator: torch.Generator):
        if init not in LORA_INITS:
            raise ValueError(f"LoRA init must be one of {', '.join(LORA_INITS)}, got {init!r}")
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # the same Parameters: frozen by the method, keys unchanged
        self.scale = scale
        like = dict(dtype=base.weight.dtype)
        a = torch.randn(self.in_features, rank, generator=generator, **like) * 0.01
        b = torch.randn(rank, self.out_features, generator=generator, **like) * 0.01
        if init == "zero_b":
            b.zero_()  # the adapted model starts as the base model exactly
        self.lora_A = nn.Parameter(a.to(base.weight.device))
        self.lora_B = nn.Parameter(b.to(base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.scale * ((x @ self.lora_A) @ self.lora_B)


def add_lora(model: nn.Module, targets: Sequence[str], rank: int, scale: float, init: str, seed: int) -> list[str]:
    """Replace every ``nn.Linear`` whose qualified name ends with one of ``targets`` (e.g. ``mlp.c_fc``) by a
    ``LoRALinear``; the adapters are drawn from ``seed``. Returns the replaced modules' names."""
    generator = torch.Generator().manual_seed(seed)
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and not isinstance(module, LoRALinear) and name.endswith(tuple(targets)):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, LoRALinear(module, rank, scale, init, generator))
            replaced.append(name)
    if not replaced:
        raise ValueError(f"no linear layer of the model ends with any of {list(targets)}")
    return replaced


def lora_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if n.endswith((".lora_A", ".lora_B"))]

"""ConDU with LoRA experts (``--lora`` in ``zhangzicong518/ConDU``; ``clip/model_lora.py``).

Everything is :mod:`.condu` except the expert: LoRA adapters of rank 64, scale 1/sqrt(64), on the MLP ``c_fc``
and ``c_proj`` of every residual block of both encoders; only the adapters train, and the deltas, masks and the
unified delta live in the adapters' parameters (A and B separately, as the reference merges them).

Initialisation: ``lora_init: reference`` draws A and B from N(0, 0.01^2) (the release; the adapted theta_0 then
differs slightly from CLIP), ``zero_b`` zeroes B so that theta_0 is CLIP exactly. Every task's adapters start
from the same draw (the run's seed), which is also the base the deltas are taken against. Deviation: the release
takes its deltas against a *different* random draw (the one saved as its pretrained model), so its deltas carry
a constant offset; here they are the training updates alone.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from condu_bench.baselines.condu import ConDU
from condu_bench.method import RunContext
from condu_bench.models.lora import LORA_INITS, add_lora, lora_parameters

LORA_TARGETS = ("mlp.c_fc", "mlp.c_proj")


class ConDULoRA(ConDU):
    """ConDU with LoRA experts on every MLP of both encoders."""

    name: ClassVar[str] = "condu_lora"

    @dataclass(frozen=True)
    class Config(ConDU.Config):
        rank: int = 64
        scale: float | None = None  # None: 1/sqrt(rank), as the reference
        lora_init: str = "reference"  # reference (A, B ~ N(0, 0.01^2)) | zero_b

        def __post_init__(self):
            super().__post_init__()
            if self.rank < 1:
                raise ValueError(f"rank must be >= 1, got {self.rank}")
            if self.lora_init not in LORA_INITS:
                raise ValueError(f"lora_init must be one of {', '.join(LORA_INITS)}, got {self.lora_init!r}")

    def expert_model(self, ctx: RunContext) -> torch.nn.Module:
        cfg = self.config
        model = copy.deepcopy(ctx.model)  # the run's shared model stays as it is
        scale = cfg.scale if cfg.scale is not None else 1.0 / math.sqrt(cfg.rank)
        add_lora(model, LORA_TARGETS, cfg.rank, scale, cfg.lora_init, ctx.task_seed(0, "condu_lora/init"))
        return model

    def trainable_parameters(self, model: torch.nn.Module):
        return lora_parameters(model)

"""WiSE-FT in MTIL as ZSCL's released scripts run it (``mtil/scripts/WiSE_finetune.sh``).

Reference: ``Thunderbeee/ZSCL``, ``mtil/src/models/finetune.py`` with ``--wise_merge --wise_ft_alpha 0.8``:
plain fine-tuning, then after each task ``theta <- alpha * theta_ft + (1 - alpha) * theta_start`` with
``theta_start`` the weights the task started from (zero-shot CLIP for the first task), alpha = 0.8.

``anchor: pretrained`` interpolates towards theta_0 instead (WiSE-FT's original robust fine-tuning, and this
harness's behaviour before it followed the reference). Deviations: none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from condu_bench.method import BaseMethod, RunContext, TaskInfo

ANCHORS = ("task_start", "pretrained")


class WiseFT(BaseMethod):
    """WiSE-FT: fine-tune, then theta <- alpha * theta + (1 - alpha) * theta_anchor after every task."""

    name: ClassVar[str] = "wise_ft"

    @dataclass(frozen=True)
    class Config:
        alpha: float = 0.8  # weight of the fine-tuned model; 1.0 is Continual-FT, 0.0 undoes every task
        anchor: str = "task_start"  # task_start (the reference) | pretrained (theta_0)

        def __post_init__(self):
            if not 0.0 <= self.alpha <= 1.0:
                raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
            if self.anchor not in ANCHORS:
                raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}, got {self.anchor!r}")

    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        if self.config.anchor == "task_start":
            self.anchor = {k: v.detach().clone() for k, v in ctx.model.state_dict().items() if v.is_floating_point()}
        else:
            self.anchor = {k: v.to(ctx.device) for k, v in ctx.pretrained_state.items() if v.is_floating_point()}

    def after_task(self, task: TaskInfo, ctx: RunContext) -> None:
        with torch.no_grad():
            for name, tensor in ctx.model.state_dict().items():
                if name in self.anchor:
                    tensor.copy_(torch.lerp(self.anchor[name].to(tensor.dtype), tensor, self.config.alpha))
        self.anchor = None

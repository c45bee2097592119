"""WiSE-FT: after each task, interpolate the weights between the fine-tuned and the zero-shot model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from condu_bench.method import BaseMethod, RunContext, TaskInfo


class WiseFT(BaseMethod):
    """WiSE-FT: fine-tune, then theta <- (1 - alpha) * theta_0 + alpha * theta after every task."""

    name: ClassVar[str] = "wise_ft"

    @dataclass(frozen=True)
    class Config:
        alpha: float = 0.5  # weight of the fine-tuned model; 1.0 is Continual-FT, 0.0 is zero-shot

    def after_task(self, task: TaskInfo, ctx: RunContext) -> None:
        if not 0.0 <= self.config.alpha <= 1.0:
            raise ValueError(f"wise_ft.alpha must lie in [0, 1], got {self.config.alpha}")
        with torch.no_grad():
            for name, tensor in ctx.model.state_dict().items():
                if tensor.is_floating_point():
                    start = ctx.pretrained_state[name].to(tensor.device, tensor.dtype)
                    tensor.copy_(torch.lerp(start, tensor, self.config.alpha))

"""Validation-based model selection (Dassl's ``TEST.FINAL_MODEL: best_val``): after every epoch the method is scored
on the task's val split; the trainable parameters of the best epoch (the first one on ties) are restored at the end."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from condu_bench.errors import UserError
from condu_bench.method import RunContext, TaskInfo

VAL_BATCH_SIZE = 256


class BestOnValidation:
    def __init__(self, method: Any, task: TaskInfo, ctx: RunContext, params: list[torch.nn.Parameter]):
        from condu_bench.training.evaluate import Evaluator

        if task.data.val is None or len(task.data.val) == 0:
            raise UserError(f"train.select=best_val needs a validation split, and {task.name!r} has none "
                            f"(its split convention: {task.data.split_convention}); use train.select=last")
        self.method, self.ctx, self.params = method, ctx, params
        self.val_task = replace(task.data, test=task.data.val)  # scored like a test set, with the eval transform
        self.evaluator = Evaluator(ctx, VAL_BATCH_SIZE, progress=False)
        self.best_accuracy: float | None = None
        self.best_epoch: int | None = None
        self.best: list[torch.Tensor] = []
        self.history: list[float] = []

    def end_of_epoch(self, epoch: int) -> None:
        accuracy = self.evaluator.accuracy(self.method, self.val_task)
        self.ctx.model.train()
        self.history.append(accuracy)
        if self.best_accuracy is None or accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch
            self.best = [p.detach().clone() for p in self.params]

    def restore(self) -> None:
        if self.best_epoch is None:
            return
        with torch.no_grad():
            for param, value in zip(self.params, self.best):
                param.copy_(value)

    def report(self) -> dict[str, Any]:
        """What was kept: the epoch counted from 1 (Dassl's ``model.pth.tar-N``), of how many, and the val curve."""
        return {"selected_epoch": None if self.best_epoch is None else self.best_epoch + 1, "epochs": len(self.history),
                "best_val_accuracy": self.best_accuracy, "val_accuracy": self.history}

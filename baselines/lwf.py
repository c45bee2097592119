"""LwF (Learning without Forgetting) for CLIP: distil the previous model's predictions on current images.

The "old heads" of Li & Hoiem are, for CLIP, the text classifiers of the datasets learned before: at the start
of each task the model is frozen as the teacher; on every batch, student and teacher score the current images
against the classes of all previously learned datasets, and the student matches the teacher's softened
distribution (KL at temperature T, scaled by T^2). The first task is plain fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from condu_bench.losses import distillation_kl
from condu_bench.method import BaseMethod, Batch, RunContext, TaskInfo
from condu_bench.models.classifier import cosine_logits, image_features, logit_scale


class LwF(BaseMethod):
    """LwF: cross-entropy plus distillation of the previous model's logits over earlier datasets' classes."""

    name: ClassVar[str] = "lwf"

    @dataclass(frozen=True)
    class Config:
        weight: float = 1.0
        temperature: float = 2.0

    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        self.old_tasks = list(ctx.tasks_seen)
        self.teacher = ctx.frozen_copy(ctx.model.state_dict()) if self.old_tasks else None
        if self.teacher is not None:
            with torch.no_grad():
                self.teacher_classifier = torch.cat([ctx.text_classifier(t, model=self.teacher) for t in self.old_tasks])

    def training_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        features = image_features(ctx.model, batch.images)  # shared by both terms
        loss = self.task_loss(features, batch.labels, task, ctx)
        if self.teacher is None:
            return loss
        scale = logit_scale(ctx.model)
        with torch.no_grad():
            teacher_logits = cosine_logits(image_features(self.teacher, batch.images), self.teacher_classifier, scale)
        student_classifier = torch.cat([ctx.text_classifier(old) for old in self.old_tasks])
        student_logits = cosine_logits(features, student_classifier, scale)
        return loss + self.config.weight * distillation_kl(student_logits, teacher_logits, self.config.temperature)

    def after_task(self, task: TaskInfo, ctx: RunContext) -> None:
        self.teacher = None  # free the copy; the next task takes a fresh snapshot

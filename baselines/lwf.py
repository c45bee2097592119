"""LwF for CLIP as ZSCL's released scripts run it (``mtil/scripts/lwf.sh``).

Reference: ``Thunderbeee/ZSCL``, ``mtil/src/models/finetune.py`` with ``--image_loss --text_loss`` and
``--ref-dataset`` = the current dataset, ``--ref-model`` = the previous task's checkpoint. Per step:

  loss = CE (label smoothing of the run) + KD(image->text) + KD(text->image)

with the distillation of :mod:`condu_bench.distillation`: the teacher is the model as it was when the task
started (zero-shot CLIP for the first task); the reference images are the *current* task's training images
through the eval transform, from a loader of their own (batch = ``ref_batch_size``, default the training batch);
the texts are the current dataset's class names in its first template, encoded once by the teacher and used
on both sides; T = 2, soft cross-entropy scaled by T^2, both directions weighted 1.

Deviations: none in what is computed. The reference's loaders draw with its global seed; here the reference
batches come from a generator derived from (run seed, task), so resumed runs repeat them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from condu_bench.distillation import ImageStream, ReferenceDistillation, encode_texts, prompt_tokens
from condu_bench.method import BaseMethod, Batch, RunContext, TaskInfo
from condu_bench.models.classifier import image_features, logit_scale


class LwF(BaseMethod):
    """LwF: cross-entropy plus two-way distillation from the task-start model on the task's own images."""

    name: ClassVar[str] = "lwf"

    @dataclass(frozen=True)
    class Config:
        image_weight: float = 1.0  # KD image->text
        text_weight: float = 1.0  # KD text->image
        temperature: float = 2.0
        ref_batch_size: int | None = None  # None: the training batch size (64 in the reference)

        def __post_init__(self):
            if self.temperature <= 0:
                raise ValueError(f"temperature must be positive, got {self.temperature}")

    def distillation_texts(self, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        """Token ids of the texts distilled over: the current classes in the dataset's first template."""
        return prompt_tokens(ctx.tokenizer, task.data.classnames, task.data.templates[0])

    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        cfg = self.config
        teacher = ctx.frozen_copy(ctx.model.state_dict())  # the model this task starts from
        texts = encode_texts(teacher, self.distillation_texts(task, ctx).to(ctx.device))
        images = ImageStream(task.data.train, ctx.eval_transform, cfg.ref_batch_size or ctx.train_config.batch_size,
                             ctx.task_seed(task.index, f"{self.name}/images"))
        self.distiller = ReferenceDistillation(teacher, texts, images, cfg.temperature, cfg.image_weight, cfg.text_weight)

    def training_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        loss = self.task_loss(image_features(ctx.model, batch.images), batch.labels, task, ctx)
        return loss + self.distiller.loss(ctx.model, logit_scale(ctx.model), ctx.device)

    def after_task(self, task: TaskInfo, ctx: RunContext) -> None:
        self.distiller = None  # free the teacher; the next task takes a fresh snapshot

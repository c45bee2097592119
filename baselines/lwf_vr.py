"""LwF-VR (Ding et al., 2022): LwF whose distillation classes are random words of the text vocabulary.

Instead of the earlier datasets' classes, every step draws ``words_per_step`` whole words from the tokenizer's
vocabulary; the previous model (frozen when the task starts) and the student both score the current images
against those words, and the student matches the teacher's softened distribution (KL at T, scaled by T^2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from condu_bench.errors import UserError
from condu_bench.losses import distillation_kl
from condu_bench.method import BaseMethod, Batch, RunContext, TaskInfo
from condu_bench.models.classifier import cosine_logits, image_features, logit_scale, text_classifier


def vocabulary_words(tokenizer, min_length: int = 3) -> list[str]:
    """Whole alphabetic words of a BPE vocabulary (``word</w>`` entries)."""
    encoder = getattr(tokenizer, "encoder", None)
    if encoder is None:
        raise UserError("lwf_vr needs a BPE tokenizer with a vocabulary (open_clip's SimpleTokenizer)")
    words = [k[:-4] for k in encoder if k.endswith("</w>") and k[:-4].isalpha() and len(k) - 4 >= min_length]
    return sorted(set(words))


class LwFVR(BaseMethod):
    """LwF-VR: cross-entropy plus distillation of the previous model over random vocabulary words."""

    name: ClassVar[str] = "lwf_vr"

    @dataclass(frozen=True)
    class Config:
        weight: float = 1.0
        temperature: float = 2.0
        words_per_step: int = 100
        template: str = "a photo of a {}."

    def setup(self, ctx: RunContext) -> None:
        self.words = vocabulary_words(ctx.tokenizer)
        self.generator = torch.Generator().manual_seed(ctx.seed)

    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        # Vocabulary replay needs no earlier dataset: the first task is distilled from the pretrained model.
        self.teacher = ctx.frozen_copy(ctx.model.state_dict())

    def training_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        cfg = self.config
        features = image_features(ctx.model, batch.images)
        loss = self.task_loss(features, batch.labels, task, ctx)
        scale = logit_scale(ctx.model)
        picks = torch.randperm(len(self.words), generator=self.generator)[: cfg.words_per_step].tolist()
        words = [self.words[i] for i in picks]
        with torch.no_grad():
            teacher_text = text_classifier(self.teacher, ctx.tokenizer, words, [cfg.template], ctx.device)
            teacher_logits = cosine_logits(image_features(self.teacher, batch.images), teacher_text, scale)
        student_text = text_classifier(ctx.model, ctx.tokenizer, words, [cfg.template], ctx.device)
        student_logits = cosine_logits(features, student_text, scale)
        return loss + cfg.weight * distillation_kl(student_logits, teacher_logits, cfg.temperature)

    def after_task(self, task: TaskInfo, ctx: RunContext) -> None:
        self.teacher = None

"""KgCoOp (Yao et al., "Visual-Language Prompt Tuning with Knowledge-guided Context Optimization", CVPR 2023), as
``htyao89/KgCoOp`` trains it.

Reference: ``trainers/kgcoop.py``, ``configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml`` and
``scripts/base2new_train.sh`` (``TRAINER.COOP.W 8.0``, 4 context vectors from "a photo of a", CSC off, class token at
the end): CoOp's prompt plus ``W * (1 - mean_c cos(t_c, t_c^CLIP))``, where ``t_c`` are the learned prompt's class
features and ``t_c^CLIP`` the frozen CLIP's features of the dataset's hand-crafted template (``CUSTOM_TEMPLATES``:
"a photo of a {}, a type of pet." ...), both L2-normalised, over the classes of the training task. Only the context
trains. Recipe: SGD lr 0.002 (momentum 0.9, weight decay 5e-4), batch 128, 100 epochs (ImageNet too), one warm-up
epoch at 1e-5, Dassl's per-epoch cosine; the last epoch's prompt is kept (the test scripts load epoch 100).

Deviations: fp32 (the reference runs CLIP in fp16). The hand-crafted features are those of the task's templates
(``scenario.options.templates: coop`` gives exactly the one KgCoOp template per dataset); a dataset with several
templates uses their per-class mean, re-normalised, as the zero-shot classifier does. The reference's unused
``bias_vectors``, ``meta_net`` and ``adapter`` (created but never trained) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from condu_bench.baselines.coop import DASSL_SGD
from condu_bench.method import Batch, RunContext, TaskInfo
from condu_bench.prompt_method import PromptLearning
from condu_bench.recipes import Recipe

COSINE_EPS = 1e-7  # the reference's nn.CosineSimilarity(eps=1e-07)


class KgCoOp(PromptLearning):
    """KgCoOp: CoOp plus lambda * (1 - cos) to the frozen hand-crafted class features (lambda = 8)."""

    name: ClassVar[str] = "kgcoop"
    recipe: ClassVar[Recipe] = Recipe("KgCoOp configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml",
                                      {**DASSL_SGD, "batch_size": 128, "epochs": 100})

    @dataclass(frozen=True)
    class Config(PromptLearning.Config):
        weight: float = 8.0  # lambda (TRAINER.COOP.W)

    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        super().before_task(task, ctx)
        from condu_bench.models.classifier import text_classifier

        with torch.no_grad():
            self.handcrafted = text_classifier(ctx.model, ctx.tokenizer, task.data.classnames, task.data.templates, ctx.device)

    def knowledge_loss(self, class_feats: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.cosine_similarity(class_feats, self.handcrafted, dim=-1, eps=COSINE_EPS).mean()

    def training_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        loss, class_feats = self.prompt_loss(batch, task, ctx)
        return loss + self.config.weight * self.knowledge_loss(class_feats)

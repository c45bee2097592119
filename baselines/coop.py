"""CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022), as ``KaiyangZhou/CoOp`` trains it.

Reference: ``trainers/coop.py`` with ``configs/trainers/CoOp/vit_b16_ctxv1.yaml`` (``vit_b16_ep50_ctxv1.yaml`` for
ImageNet), the configs CoCoOp's ``scripts/cocoop/base2new_train.sh`` names for CoOp in base-to-novel and
cross-dataset / domain-generalisation training: 4 context vectors initialised from "a photo of a", one context for all
classes (CSC off), class token at the end; both encoders frozen; plain cross-entropy of ``exp(logit_scale) * cos``.
Recipe: SGD lr 0.002, momentum 0.9, weight decay 5e-4, batch 32, 200 epochs (ImageNet 50), one warm-up epoch at a
constant 1e-5, then cosine annealing stepped once per epoch (Dassl's scheduler), the last epoch's prompt kept.

Deviations: training runs in fp32 (the reference keeps CLIP in fp16, ``TRAINER.COOP.PREC`` defaulting to fp16);
only the class-token position "end" and a shared context (CSC off) are offered, the base-to-novel settings; open_clip's
text transformer is batch-first, so there is no permute around it.
"""

from __future__ import annotations

from typing import ClassVar

from condu_bench.prompt_method import PromptLearning
from condu_bench.recipes import Recipe

# The Dassl optimisation settings CoOp's configs share (Dassl defaults: momentum 0.9, weight decay 5e-4).
DASSL_SGD = {"optimizer": "sgd", "lr": 0.002, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "epoch_cosine",
             "warmup_epochs": 1, "warmup_lr": 1e-5, "label_smoothing": 0.0, "grad_clip_norm": None, "precision": "fp32"}


class CoOp(PromptLearning):
    """CoOp: 4 learnable context vectors ("a photo of a") before the class name; frozen CLIP."""

    name: ClassVar[str] = "coop"
    recipe: ClassVar[Recipe] = Recipe(
        "CoOp configs/trainers/CoOp/vit_b16_ctxv1.yaml, vit_b16_ep50_ctxv1.yaml for ImageNet",
        {**DASSL_SGD, "batch_size": 32, "epochs": 200, "epochs_per_task": {"ImageNet": 50}},
    )

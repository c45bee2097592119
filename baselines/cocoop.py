"""CoCoOp (Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022), as
``KaiyangZhou/CoOp`` trains it.

Reference: ``trainers/cocoop.py`` with ``configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml`` (the config of
``scripts/cocoop/base2new_train.sh`` and ``xd_train.sh``): CoOp's 4 context vectors from "a photo of a", plus a
meta-net Linear(D, D/16) - ReLU - Linear(D/16, width) on the normalised image feature whose output is added to every
context vector, so each image gets its own class prompts (its own text features for all classes); only the context and
the meta-net train. Recipe: batch 1, 10 epochs, SGD lr 0.002 (momentum 0.9, weight decay 5e-4), one warm-up epoch at
1e-5, Dassl's per-epoch cosine; the epoch-10 prompt is evaluated.

Cost: every image encodes the prompts of all classes, in training (batch 1: one image per step, as the reference)
and in evaluation (images are encoded in chunks of at most ``PROMPTS_PER_CHUNK`` prompts), so a step costs ``n_cls``
text-encoder passes.

Deviations: fp32 (the reference keeps CLIP and the meta-net in fp16, ``TRAINER.COCOOP.PREC: fp16``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

import torch
from torch import nn

from condu_bench.baselines.coop import DASSL_SGD
from condu_bench.data.task import TaskData
from condu_bench.method import RunContext
from condu_bench.prompt_method import PromptLearning, label_space_classnames
from condu_bench.recipes import Recipe

PROMPTS_PER_CHUNK = 4096  # evaluation: images per chunk x classes, bounding the text encoder's batch


def meta_net(image_dim: int, width: int) -> nn.Sequential:
    """CoCoOp's image-to-context-shift network (PyTorch's default Linear initialisation, as the reference)."""
    hidden = max(1, image_dim // 16)
    return nn.Sequential(OrderedDict([("linear1", nn.Linear(image_dim, hidden)), ("relu", nn.ReLU(inplace=True)),
                                      ("linear2", nn.Linear(hidden, width))]))


class CoCoOp(PromptLearning):
    """CoCoOp: CoOp's context shifted per image by a small meta-net on the image feature."""

    name: ClassVar[str] = "cocoop"
    recipe: ClassVar[Recipe] = Recipe("CoOp configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
                                      {**DASSL_SGD, "batch_size": 1, "epochs": 10})

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        image_dim = getattr(ctx.model.visual, "output_dim", None)
        if image_dim is None:
            raise ValueError("cocoop needs the image tower's output dimension (model.visual.output_dim)")
        self.meta_net = meta_net(image_dim, self.prompt.tower.width).to(ctx.device)

    def learned_modules(self) -> dict[str, nn.Module]:
        return {**super().learned_modules(), "meta_net": self.meta_net}

    def class_features(self, classnames: list[str], images: torch.Tensor, image_feats: torch.Tensor) -> torch.Tensor:
        return self.prompt.text_features(classnames, shift=self.meta_net(image_feats))  # (B, n_cls, D)

    def logits_from_features(self, image_feats: torch.Tensor, task: TaskData | None, ctx: RunContext) -> torch.Tensor:
        classnames = label_space_classnames(task, ctx)
        chunk = max(1, PROMPTS_PER_CHUNK // len(classnames))
        parts = [self.prompt_logits(f, self.class_features(classnames, None, f), ctx) for f in image_feats.split(chunk)]
        return torch.cat(parts)

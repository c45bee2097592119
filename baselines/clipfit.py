"""CLIPFit (Li et al., "Vision-Language Model Fine-Tuning via Simple Parameter-Efficient Modification", EMNLP 2024).

What it computes (``../shared/spec/methods.md``): CLIP's own prompts with the hand-crafted templates, no context
tokens; only two groups of existing weights train — in the text encoder the bias of every block's second MLP layer
(``mlp.c_proj.bias``), in the image encoder every LayerNorm's weight and bias (``ln_pre``, each block's ``ln_1`` and
``ln_2``, ``ln_post``): 46,080 parameters on ViT-B/16, everything else frozen. Loss: cross-entropy of
``s * cos(image, class text)`` over the training classes plus ``lambda * (1 - mean_c cos(t_c(theta), t_c^CLIP))``,
the text features of the classes under the trained weights against the frozen pretrained ones (lambda = 8 in
base-to-novel). Recipe: SGD lr 0.002, momentum 0.9, weight decay 5e-4, batch 32, cosine, 100 epochs (10 for
Food101 and ImageNet), on the Dassl/CoOp training code (one warm-up epoch at 1e-5, per-epoch cosine).

Deviations: the CLIPFit release was not available to read in this session; this plugin follows the spec above and
the CoOp/KgCoOp code it builds on (Dassl's schedule, the hand-crafted templates of the task, KgCoOp's cosine term
with eps 1e-7). fp32 training. Few-shot MTIL's per-dataset lambda (8 for DTD and SUN397, 2 otherwise) is the option
``weight_per_task``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from condu_bench.baselines.coop import DASSL_SGD
from condu_bench.baselines.kgcoop import COSINE_EPS
from condu_bench.method import Batch, BaseMethod, RunContext, TaskInfo
from condu_bench.recipes import Recipe

IMAGE_LAYERNORMS = ("ln_pre.", "ln_post.", ".ln_1.", ".ln_2.")


def clipfit_parameter_names(model: torch.nn.Module) -> list[str]:
    """The names of the weights CLIPFit trains: text ``mlp.c_proj.bias`` of every block, every image LayerNorm."""
    names = []
    for name, _ in model.named_parameters():
        in_image = name.startswith("visual.")
        if not in_image and name.endswith("mlp.c_proj.bias"):
            names.append(name)
        elif in_image and name.rsplit(".", 1)[-1] in ("weight", "bias") and any(part in name for part in IMAGE_LAYERNORMS):
            names.append(name)
    return names


class CLIPFit(BaseMethod):
    """CLIPFit: text MLP output biases and image LayerNorms train, with a cosine pull to the frozen text features."""

    name: ClassVar[str] = "clipfit"
    recipe: ClassVar[Recipe] = Recipe("CLIPFit (spec): Dassl SGD as CoOp, batch 32, 100 epochs (Food101, ImageNet 10)",
                                      {**DASSL_SGD, "batch_size": 32, "epochs": 100,
                                       "epochs_per_task": {"Food101": 10, "ImageNet": 10}})

    @dataclass(frozen=True)
    class Config:
        weight: float = 8.0  # lambda of the text-feature term
        weight_per_task: dict[str, float] = field(default_factory=dict)  # dataset name -> lambda (few-shot MTIL)

    def trainable_parameters(self, model: torch.nn.Module) -> Iterable[tuple[str, torch.nn.Parameter]]:
        wanted = set(clipfit_parameter_names(model))
        return [(n, p) for n, p in model.named_parameters() if n in wanted]

    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        from condu_bench.models.classifier import text_classifier

        with torch.no_grad():  # the frozen pretrained CLIP's text features of the task's classes
            teacher = ctx.frozen_copy()
            self.frozen_text = text_classifier(teacher, ctx.tokenizer, task.data.classnames, task.data.templates, ctx.device)
        del teacher

    def task_weight(self, task: TaskInfo) -> float:
        dataset = task.data.name.split("/")[0]
        return self.config.weight_per_task.get(task.data.name, self.config.weight_per_task.get(dataset, self.config.weight))

    def training_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        from condu_bench.models.classifier import cosine_logits, image_features, logit_scale, text_classifier

        class_feats = text_classifier(ctx.model, ctx.tokenizer, task.data.classnames, task.data.templates, ctx.device)
        logits = cosine_logits(image_features(ctx.model, batch.images), class_feats, logit_scale(ctx.model))
        ce = F.cross_entropy(logits, batch.labels, label_smoothing=ctx.train_config.label_smoothing)
        return ce + self.task_weight(task) * self.text_feature_pull(class_feats)

    def text_feature_pull(self, class_feats: torch.Tensor) -> torch.Tensor:
        """1 - mean over classes of cos(trained class text feature, frozen pretrained one)."""
        return 1.0 - F.cosine_similarity(class_feats, self.frozen_text, dim=-1, eps=COSINE_EPS).mean()

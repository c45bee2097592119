"""CLIPFit (Li et al., "Vision-Language Model Fine-Tuning via Simple Parameter-Efficient Modification", EMNLP 2024),
checked against the release ``minglllli/CLIPFit`` (commit 4dde049): ``CLIPFit/trainers/ClipFit.py``,
``configs/trainers/ClipFit/vit_b16_ep100_ctxv1.yaml`` and ``vit_b16_ep10_ctxv1.yaml``, ``scripts/ClipFit/
base2new_train.sh`` / ``new.sh``, ``train.py`` (config defaults) and the README.

What it computes: no context tokens; each class is one prompt, the dataset's hand-crafted template (KgCoOp's
``CUSTOM_TEMPLATES``: "a photo of a {}, a type of pet." ...). Trainable, everything else frozen: in the text encoder
every parameter named ``c_proj.bias`` (the bias of each block's second MLP layer; attention projections are
``out_proj``), in the image encoder every parameter whose name contains ``ln`` (``ln_pre``, each block's ``ln_1`` and
``ln_2``, ``ln_post``, weight and bias; named explicitly below, the same 52 tensors on open_clip's ViTs): 46,080
parameters on ViT-B/16. Loss per batch:
``CE(exp(logit_scale) * cos(image, class text)) + 8 * (1 - mean_c cos(t_c(theta), t_c^CLIP))``, the class features
of the training classes under the trained weights against those of a separately loaded, frozen pretrained CLIP,
both L2-normalised, ``nn.CosineSimilarity(eps=1e-7)``; lambda = 8 is hard-coded in the trainer (the README: 8 for
every base-to-novel dataset). Recipe (Dassl defaults where the yaml is silent): SGD lr 0.002, momentum 0.9, weight
decay 5e-4 (on every trained tensor), no nesterov, batch 32, one constant warm-up epoch at 1e-5, cosine stepped per
epoch, 100 epochs (10 for Food101 and ImageNet), no label smoothing, no gradient clipping; the last epoch is
evaluated (``new.sh`` loads epoch 100). The evaluation classifier is the training one (same single template).

Deviations:

- Precision: the release runs Dassl's default ``TRAINER.COOP.PREC = "fp16"`` (no script overrides it): CLIP's
  linear/attention weights, hence the trained text ``c_proj.bias`` and the frozen teacher's features, are half
  precision, while the LayerNorm parameters stay fp32 (``convert_weights`` skips them). This plugin trains and
  computes everything in fp32; a pure-fp16 SGD mode is not offered.
- Templates: the plugin encodes ``task.data.templates`` for both sides of the loss, the templates the harness also
  evaluates with. On ``base_to_novel`` (``templates: handcrafted``) that is exactly the reference's one prompt per
  class; a scenario with several templates (MTIL's ensemble, the synthetic worlds) gets the per-class mean of the
  normalised features, re-normalised, on both sides, where the reference has no such case.
- Lambda: ``weight`` (default 8, as the release). The README's few-shot classification protocol (CoOp's, all classes,
  K shots) uses 8 for DTD and SUN397 and 2 otherwise: set ``weight_per_task`` ({"DTD": 8, "SUN397": 8}, weight 2).
- The frozen teacher is theta_0 (the run's pretrained state), as the release's separately loaded CLIP.
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
    recipe: ClassVar[Recipe] = Recipe("CLIPFit configs/trainers/ClipFit/vit_b16_ep100_ctxv1.yaml "
                                      "(Food101, ImageNet: vit_b16_ep10_ctxv1), Dassl's optimizer defaults",
                                      {**DASSL_SGD, "batch_size": 32, "epochs": 100,
                                       "epochs_per_task": {"Food101": 10, "ImageNet": 10}})

    @dataclass(frozen=True)
    class Config:
        weight: float = 8.0  # lambda of the text-feature term
        weight_per_task: dict[str, float] = field(default_factory=dict)  # dataset name -> lambda (few-shot protocol)

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

"""The method side of prompt learning, shared by CoOp, CoCoOp and KgCoOp (and methods that continue from them).

Both encoders stay frozen: the optimizer sees only the prompt's parameters, which live in the method (saved in its
state after every task), never in the model. The loss is cross-entropy of ``s * cos(image, class prompt)``; inference
encodes each evaluated dataset's class prompts once per evaluation (cached until the context changes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from condu_bench.data.task import TaskData
from condu_bench.method import Batch, BaseMethod, RunContext, TaskInfo


def label_space_classnames(task: TaskData | None, ctx: RunContext) -> list[str]:
    """The classes a prediction ranges over: the task's, or (task-agnostic) every dataset of the label space in order."""
    return list(task.classnames) if task is not None else [c for t in ctx.label_space for c in t.classnames]


class PromptLearning(BaseMethod):
    """CoOp's training: a learnable context shared by all classes, cross-entropy over the current task's classes."""

    name: ClassVar[str] = "prompt_learning"
    frozen_image_tower: ClassVar[bool] = True

    @dataclass(frozen=True)
    class Config:
        n_ctx: int = 4  # context vectors
        ctx_init: str = "a photo of a"  # words whose embeddings start the context ("" = random N(0, 0.02))

        def __post_init__(self):
            if self.n_ctx < 1:
                raise ValueError(f"n_ctx must be at least 1, not {self.n_ctx}")

    def setup(self, ctx: RunContext) -> None:
        from condu_bench.prompting import PromptContext

        self.prompt = PromptContext(ctx.model, ctx.tokenizer, self.config.n_ctx, self.config.ctx_init)
        self._eval_features: dict[tuple[str, ...], torch.Tensor] = {}

    def learned_modules(self) -> dict[str, torch.nn.Module]:
        """The modules that train, by state prefix (subclasses add theirs)."""
        return {"prompt": self.prompt}

    def trainable_parameters(self, model: torch.nn.Module) -> Iterable[tuple[str, torch.nn.Parameter]]:
        return [(f"{prefix}.{n}", p) for prefix, module in self.learned_modules().items() for n, p in module.named_parameters()]

    def class_features(self, classnames: list[str], images: torch.Tensor, image_feats: torch.Tensor) -> torch.Tensor:
        """Normalised class features for these images: (n_cls, D) when they do not depend on the image."""
        return self.prompt.text_features(classnames)

    def prompt_logits(self, image_feats: torch.Tensor, class_feats: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        from condu_bench.models.classifier import logit_scale

        scale = logit_scale(ctx.model)
        if class_feats.dim() == 3:  # per-image class features
            return scale * torch.einsum("bd,bcd->bc", image_feats, class_feats)
        return scale * image_feats @ class_feats.t()

    def training_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        return self.prompt_loss(batch, task, ctx)[0]

    def prompt_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy over the task's classes, and the class features it used (for regularisers)."""
        from condu_bench.models.classifier import image_features

        image_feats = image_features(ctx.model, batch.images)
        class_feats = self.class_features(list(task.data.classnames), batch.images, image_feats)
        logits = self.prompt_logits(image_feats, class_feats, ctx)
        return F.cross_entropy(logits, batch.labels, label_smoothing=ctx.train_config.label_smoothing), class_feats

    # The context changes only in training and when restored: cached evaluation features are dropped then.
    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        self._eval_features.clear()

    def after_iteration(self, step: int, task: TaskInfo, ctx: RunContext) -> None:
        self._eval_features.clear()

    def after_task(self, task: TaskInfo, ctx: RunContext) -> None:
        self._eval_features.clear()  # model selection may have restored an earlier context

    def logits(self, images: torch.Tensor, task: TaskData | None, ctx: RunContext) -> torch.Tensor:
        from condu_bench.models.classifier import image_features

        return self.logits_from_features(image_features(ctx.model, images), task, ctx)

    def logits_from_features(self, image_feats: torch.Tensor, task: TaskData | None, ctx: RunContext) -> torch.Tensor:
        classnames = label_space_classnames(task, ctx)
        key = tuple(classnames)
        if key not in self._eval_features:
            self._eval_features[key] = self.prompt.text_features(classnames).detach()
        return self.prompt_logits(image_feats, self._eval_features[key], ctx)

    def state_dict(self) -> dict[str, Any]:
        return {f"{prefix}/{k}": v.detach().cpu().clone() for prefix, module in self.learned_modules().items()
                for k, v in module.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for prefix, module in self.learned_modules().items():
            module.load_state_dict({k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(f"{prefix}/")})
        self._eval_features.clear()

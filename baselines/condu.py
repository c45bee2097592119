"""ConDU (continual decoupling-unifying, ICLR 2026): experts trained from theta_0, merged into one unified delta.

Reference: ``zhangzicong518/ConDU`` (``src/main.py``, ``src/delta_models.py``, ``src/models/finetune.py``,
``src/models/evaluation.py``). Each task:

1. an expert is trained from theta_0 (never from the merged model) with plain cross-entropy (label smoothing of
   the run, 0.2 in the reference), every weight but ``logit_scale``;
2. its delta delta_t = theta_t - theta_0 joins the stored tasks, each decoupled as lambda_i * M_i * U, and all are
   unified again (:func:`condu_bench.merging.add_task`); only U, the bit-packed masks, the rescalers and the
   prototypes are kept;
3. prototypes per class, with theta_0: n((mean of n(f_img(x)) over the task's training images actually used +
   mean of n(f_txt) over the templates) / 2).

Inference: a dataset already learned is classified by its decoupled expert theta_0 + lambda_i M_i U, with its own
text encoder over all templates. An unseen dataset, and every dataset in task-agnostic scenarios, by theta_0 plus
the top-K experts ranked per image by w_i = max_k cos(n(f_img(x; theta_0)), p_i,k); each model classifies with
its own text encoder over the target classes; the logits are averaged unweighted (``aggregation: mean``, as
released) or weighted by the routing scores (``aggregation: weighted``: experts by w_i, theta_0 by the mean of the
chosen w_i, normalised; the paper's description). Every image is scored by exactly K+1 models (theta_0's one forward
pass both classifies and routes), so the cost grows linearly in K+1; up to K decoupled experts stay loaded between
batches (K extra model copies in memory at inference, none in what a task stores).

Deviations from the release, each deliberate:
- the first task's expert is used at step 1 (the release evaluates the first dataset with theta_0 there);
- prototypes come from the training images actually used (the shots in few-shot mode; the release uses the full
  train set) through the deterministic eval transform (the release: its augmented train loader);
- logits use 100 * cos as the harness's evaluator does for every method (the release hard-codes 100 too);
- a rescaler whose denominator is zero is 0, not NaN (:mod:`condu_bench.merging`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from condu_bench.data.task import TaskData
from condu_bench.merging import Unified, add_task, pack_masks, storage_bytes, task_delta, unpack_masks
from condu_bench.method import BaseMethod, RunContext, TaskInfo
from condu_bench.distillation import encode_texts
from condu_bench.models.classifier import class_prompts, cosine_logits, image_features, text_classifier

AGGREGATIONS = ("mean", "weighted")


class ConDU(BaseMethod):
    """ConDU with full fine-tuning experts."""

    name: ClassVar[str] = "condu"

    @dataclass(frozen=True)
    class Config:
        top_k: int = 4  # experts added to theta_0 for unseen / task-agnostic inference
        aggregation: str = "mean"  # mean (released code) | weighted (by routing score, as the paper describes)
        prototype_batch_size: int = 256

        def __post_init__(self):
            if self.top_k < 0:
                raise ValueError(f"top_k must be >= 0, got {self.top_k}")
            if self.aggregation not in AGGREGATIONS:
                raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {self.aggregation!r}")

    # ---------------------------------------------------------------- the experts' parameter space

    def expert_model(self, ctx: RunContext) -> torch.nn.Module:
        """The model experts are trained in (theta_0's architecture here; LoRA adds adapters)."""
        return ctx.model

    def expert_keys(self, model: torch.nn.Module) -> list[str]:
        return [n for n, _ in self.trainable_parameters(model)]

    # ---------------------------------------------------------------- lifecycle

    def setup(self, ctx: RunContext) -> None:
        ctx.model = self.expert_model(ctx)
        self.theta0 = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}  # experts start here
        self.keys = self.expert_keys(ctx.model)
        self.base = ctx.frozen_copy(self.theta0)  # routing features, prototypes, the "theta_0" model of inference
        self.U: dict[str, torch.Tensor] | None = None
        self.packed: list[dict[str, torch.Tensor]] = []
        self.rescalers: list[float] = []
        self.prototypes: list[torch.Tensor] = []
        self.task_names: list[str] = []
        self.base_feature_cache: dict[Any, torch.Tensor] = {}  # theta_0's features by evaluated batch (~200 MB for MTIL)
        self.forget_cache()

    def forget_cache(self) -> None:
        self.loaded: OrderedDict[int, torch.nn.Module] = OrderedDict()  # decoupled experts by task index
        self.classifiers: dict[tuple, torch.Tensor] = {}

    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        ctx.model.load_state_dict(self.theta0)  # every expert is trained from theta_0

    def after_task(self, task: TaskInfo, ctx: RunContext) -> None:
        state = ctx.model.state_dict()
        delta = task_delta({k: state[k] for k in self.keys}, {k: self.theta0[k] for k in self.keys})
        merged = add_task(self.unified(), delta)
        self.U, self.rescalers = merged.U, merged.rescalers
        self.packed = [pack_masks(m) for m in merged.masks]
        self.prototypes.append(self.class_prototypes(task.data, ctx))
        self.task_names.append(task.name)
        self.forget_cache()

    def unified(self) -> Unified | None:
        if self.U is None:
            return None
        shapes = {k: v.shape for k, v in self.U.items()}
        return Unified(self.U, [unpack_masks(p, shapes) for p in self.packed], list(self.rescalers))

    @torch.no_grad()
    def class_prototypes(self, task: TaskData, ctx: RunContext) -> torch.Tensor:
        from torch.utils.data import DataLoader

        from condu_bench.training.evaluate import Transformed

        loader = DataLoader(Transformed(task.train, ctx.eval_transform), batch_size=self.config.prototype_batch_size)
        sums = torch.zeros(task.num_classes, self.base.text_projection.shape[1], device=ctx.device)
        counts = torch.zeros(task.num_classes, device=ctx.device)
        for images, labels in loader:
            feats = image_features(self.base, images.to(ctx.device))
            labels = labels.to(ctx.device)
            sums.index_add_(0, labels, feats)
            counts.index_add_(0, labels, torch.ones_like(labels, dtype=counts.dtype))
        tokens = ctx.tokenizer(class_prompts(task.classnames, task.templates)).to(ctx.device)
        text = encode_texts(self.base, tokens).view(task.num_classes, len(task.templates), -1).mean(1)  # not renormalised
        image = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], text)  # no image: text alone
        return F.normalize((image + text) / 2, dim=-1).cpu()

    # ---------------------------------------------------------------- inference

    def load_expert(self, index: int, ctx: RunContext) -> torch.nn.Module:
        """Expert ``index`` decoupled into a model. Up to ``max(1, top_k)`` decoupled experts stay loaded (least
        recently used out), so routed inference over K experts rebuilds no weights between batches."""
        if index in self.loaded:
            self.loaded.move_to_end(index)
            return self.loaded[index]
        if len(self.loaded) < max(1, self.config.top_k):
            model = ctx.frozen_copy(self.theta0)
        else:
            _, model = self.loaded.popitem(last=False)
        shapes = {k: v.shape for k, v in self.U.items()}
        mask = unpack_masks(self.packed[index], shapes)
        scale = self.rescalers[index]
        weights = {k: self.theta0[k] + (scale * mask[k] * self.U[k]).to(self.theta0[k].dtype) for k in self.keys}
        model.load_state_dict(weights, strict=False)
        self.loaded[index] = model
        return model

    def classifier(self, which: Any, model: torch.nn.Module, space: list[TaskData], ctx: RunContext) -> torch.Tensor:
        key = (which, tuple(t.name for t in space))
        if key not in self.classifiers:
            self.classifiers[key] = torch.cat([
                text_classifier(model, ctx.tokenizer, t.classnames, t.templates, ctx.device) for t in space])
        return self.classifiers[key]

    @torch.no_grad()
    def logits(self, images: torch.Tensor, task: TaskData | None, ctx: RunContext) -> torch.Tensor:
        if task is not None and task.name in self.task_names:
            index = self.task_names.index(task.name)
            expert = self.load_expert(index, ctx)
            return cosine_logits(image_features(expert, images), self.classifier(("expert", index), expert, [task], ctx))
        space = [task] if task is not None else list(ctx.label_space)
        return self.routed_logits(images, space, ctx)

    def routing(self, base_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image (theta_0's normalised image features), the top-K learned tasks by prototype similarity and
        their scores, both (n, K)."""
        scores = torch.stack([(base_feats @ p.to(base_feats.device).t()).max(dim=1).values for p in self.prototypes], dim=1)
        k = min(self.config.top_k, len(self.prototypes))
        return scores.topk(k, dim=1)

    def base_features(self, images: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        """theta_0's normalised image features; theta_0 never changes, so an evaluated batch's are computed once per run
        (every later row of the matrix reuses them)."""
        if ctx.eval_batch is None:
            return image_features(self.base, images)
        if ctx.eval_batch not in self.base_feature_cache:
            self.base_feature_cache[ctx.eval_batch] = image_features(self.base, images)
        return self.base_feature_cache[ctx.eval_batch]

    def routed_logits(self, images: torch.Tensor, space: list[TaskData], ctx: RunContext) -> torch.Tensor:
        base_feats = self.base_features(images, ctx)  # classifies with theta_0 and routes
        total = cosine_logits(base_feats, self.classifier("base", self.base, space, ctx))
        if not self.prototypes or self.config.top_k == 0:
            return total
        top_scores, top_tasks = self.routing(base_feats)
        if self.config.aggregation == "mean":
            weights = torch.full_like(top_scores, 1.0)
            base_weight = torch.ones(len(images), device=images.device)
        else:
            weights, base_weight = top_scores, top_scores.mean(dim=1)
        total = total * base_weight[:, None]
        for index in top_tasks.unique().tolist():  # each image meets exactly K experts
            rows, slot = (top_tasks == index).nonzero(as_tuple=True)
            expert = self.load_expert(index, ctx)
            classifier = self.classifier(("expert", index), expert, space, ctx)
            total[rows] += weights[rows, slot][:, None] * cosine_logits(image_features(expert, images[rows]), classifier)
        return total / (base_weight + weights.sum(dim=1))[:, None]

    # ---------------------------------------------------------------- resume and report

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"task_names": list(self.task_names), "rescalers": list(self.rescalers)}
        for k, v in (self.U or {}).items():
            state[f"U/{k}"] = v
        for i, packed in enumerate(self.packed):
            state.update({f"mask{i}/{k}": v for k, v in packed.items()})
            state[f"prototypes{i}"] = self.prototypes[i]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task_names, self.rescalers = list(state["task_names"]), list(state["rescalers"])
        self.U = {k[2:]: v.to(self.theta0[k[2:]].device) for k, v in state.items() if k.startswith("U/")} or None
        device = next(iter(self.theta0.values())).device  # checkpoints load on the CPU; masks live beside U
        self.packed = [{k[len(f"mask{i}/"):]: v.to(device) for k, v in state.items() if k.startswith(f"mask{i}/")}
                       for i in range(len(self.task_names))]
        self.prototypes = [state[f"prototypes{i}"] for i in range(len(self.task_names))]
        self.forget_cache()

    def report(self) -> dict[str, Any]:
        masks = [storage_bytes(p) for p in self.packed]
        unified = storage_bytes(self.U or {})
        return {"storage_bytes": {"unified": unified, "masks_per_task": masks, "rescalers": 4 * len(self.rescalers),
                                  "prototypes": sum(storage_bytes({"p": p}) for p in self.prototypes),
                                  "total": unified + sum(masks) + 4 * len(self.rescalers)},
                "tasks": list(self.task_names),
                # what a task adds: its packed mask and rescaler (U is shared by all tasks)
                "per_task_storage_mib": round((sum(masks) / max(1, len(masks)) + 4) / 2**20, 3)}

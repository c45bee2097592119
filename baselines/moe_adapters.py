"""MoE-Adapters (Yu et al., CVPR 2024): frozen CLIP with mixtures of adapter experts and a router per task, plus
a distribution-discriminative auto-selector (DDAS) that picks the router, or zero-shot CLIP, at test time.

Reference: ``JiazuoYu/MoE-Adapters4CL``, ``mtil/`` (``clip/model.py``, ``clip/adapter.py``, ``src/models/
finetune.py``, ``src/models/AutoEncoder.py``, ``src/models/evaluation.py``, ``scripts/train/
train_full_shot_router11_experts22_1000iters.sh``). As released (:mod:`condu_bench.models.moe_adapters`):

- every residual block of both towers gets 22 bottleneck adapters (down 64, ReLU, dropout 0.1, up, scale 0.1;
  up-projection zero at the start) in parallel to its MLP, on the post-attention residual; 11 routers per block
  (gate and noise weights, zero at the start), router ``t`` used while training task ``t``;
- noisy top-2 gating on the sequence's first token (noise only while training); the load-balancing term
  ``cv^2(importance) + cv^2(load)`` is computed by the release but never added to its loss, so
  ``balance_loss_weight`` is 0 (the release's unused coefficient is 1e-2);
- CLIP frozen; trainable: the current task's router and the experts not yet frozen; CE with label smoothing;
- after each task, in every adapted block, the ``frozen_per_task`` (2) experts this task routed most samples to
  are frozen for all later tasks (the release's ``frozen_list`` file);
- DDAS (:mod:`condu_bench.task_selection`): after each task an autoencoder (code 100) is trained on its images
  (Adam, lr 0.01 decayed x0.1 every 10 epochs, weight decay 1e-4, batch 64, 300 steps); at test time the batch's
  mean reconstruction error picks the task, whose router then runs both towers (image and text classifier), or
  zero-shot CLIP when the best error exceeds ``threshold`` (0.0655 in the release). The release evaluates every
  dataset this way, learned or not; ``route_known_tasks: true`` uses the known task's router instead.

Selector features: ``selector_features: alexnet`` is the release's (ImageNet AlexNet's conv5 map, flattened, through
a sigmoid; :mod:`condu_bench.models.alexnet` reads torchvision's weight file, nothing is downloaded), with its
threshold 0.0655: the real-data benchmark files set it. ``clip`` (the default, and the synthetic preset's: the
embedded world has no ImageNet AlexNet) reads the pretrained CLIP's unnormalised image embeddings instead, a feature
space where 0.0655 means nothing: calibrate ``threshold`` per model (the synthetic preset does).

Deviations, each deliberate:
- the autoencoders are trained on the task's images through the eval transform (the release: its train
  transform); AlexNet reads the CLIP-normalised images, as in the release.
- the release also trains a 12th autoencoder on TinyImageNet whose wins route to zero-shot CLIP; here only the
  threshold sends inputs to zero-shot CLIP, and only the learned tasks' autoencoders compete (the release's
  not-yet-trained ones take part with random weights).
- the release runs ``iterations + 1`` steps per task (adapters and autoencoders); here ``iterations``.
- the number of routers is ``max_tasks`` (11 as released); a longer stream is an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from condu_bench.data.task import TaskData
from condu_bench.errors import UserError
from condu_bench.method import BaseMethod, Batch, RunContext, TaskInfo
from condu_bench.models.classifier import cosine_logits, image_features, text_classifier
from condu_bench.models.moe_adapters import ENCODERS, add_moe_adapters, balance_loss, mixtures, route
from condu_bench.task_selection import (GRANULARITIES, SELECTOR_FEATURES, ZERO_SHOT, FeatureAutoencoder, reconstruction_errors,
                                        select_tasks, selector_inputs, train_autoencoder)


class MoEAdapters(BaseMethod):
    """Mixture-of-experts adapters with per-task routers, frozen experts and an autoencoder task selector."""

    name: ClassVar[str] = "moe_adapters"

    @dataclass(frozen=True)
    class Config:
        num_experts: int = 22
        top_k: int = 2
        bottleneck: int = 64
        adapter_scale: float = 0.1
        adapter_dropout: float = 0.1
        encoders: str = "both"  # both | image (the release's AdapterDoubleEncoder / AdapterImageEncoder)
        max_tasks: int = 11  # routers per block
        noise_epsilon: float = 1e-2
        balance_loss_weight: float = 0.0  # the release computes the term (x1e-2) but never adds it
        frozen_per_task: int = 2  # experts frozen per block after each task
        threshold: float = 0.0655  # DDAS: best reconstruction error above this -> zero-shot CLIP
        selector_granularity: str = "batch"  # batch (release) | image
        selector_iterations: int = 300
        selector_lr: float = 0.01
        selector_weight_decay: float = 1e-4
        selector_decay_epochs: int = 10
        selector_code_dim: int = 100
        selector_batch_size: int = 64
        selector_features: str = "clip"  # clip (the pretrained CLIP's embeddings) | alexnet (the release's conv5 map)
        selector_weights: str = ""  # alexnet: an ImageNet AlexNet state dict; "" = torchvision's hub cache file
        route_known_tasks: bool = False  # true: a learned task given at test time uses its own router

        def __post_init__(self):
            positive = ("num_experts", "top_k", "bottleneck", "max_tasks", "selector_code_dim", "selector_batch_size",
                        "selector_decay_epochs")
            for name in positive:
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
            if self.top_k > self.num_experts:
                raise ValueError(f"top_k ({self.top_k}) cannot exceed num_experts ({self.num_experts})")
            if not 0 <= self.frozen_per_task <= self.num_experts:
                raise ValueError(f"frozen_per_task must be in 0..{self.num_experts}, got {self.frozen_per_task}")
            if self.encoders not in ENCODERS:
                raise ValueError(f"encoders must be one of {', '.join(ENCODERS)}, got {self.encoders!r}")
            if self.selector_granularity not in GRANULARITIES:
                raise ValueError(f"selector_granularity must be one of {', '.join(GRANULARITIES)}, "
                                 f"got {self.selector_granularity!r}")
            if self.selector_features not in SELECTOR_FEATURES:
                raise ValueError(f"selector_features must be one of {', '.join(SELECTOR_FEATURES)}, "
                                 f"got {self.selector_features!r}")
            if self.selector_iterations < 0:
                raise ValueError(f"selector_iterations must be >= 0, got {self.selector_iterations}")

    # ---------------------------------------------------------------- lifecycle

    def setup(self, ctx: RunContext) -> None:
        import copy

        cfg = self.config
        model = copy.deepcopy(ctx.model)  # the run's shared model stays plain CLIP
        add_moe_adapters(model, cfg.encoders, cfg.num_experts, cfg.max_tasks, cfg.top_k, cfg.bottleneck,
                         cfg.adapter_scale, cfg.adapter_dropout, cfg.noise_epsilon)
        route(model, None)
        ctx.model = model
        self.device = ctx.device
        self.alexnet = None
        if cfg.selector_features == "alexnet":
            from condu_bench.models.alexnet import load_alexnet_conv5

            self.alexnet = load_alexnet_conv5(cfg.selector_weights or None).to(ctx.device)
            size = ctx.model.visual.image_size
            probe = torch.zeros(1, 3, *(size if isinstance(size, tuple) else (size, size)), device=ctx.device)
            self.selector_dim = self.alexnet(probe).shape[1]  # 256 x 13 x 13 at 224 px
        else:
            self.selector_dim = ctx.model.text_projection.shape[1]
        self.frozen: set[str] = set()  # "<block>.moe.experts.<e>"
        self.autoencoders: list[FeatureAutoencoder] = []
        self.task_names: list[str] = []
        self.classifiers: dict[tuple, torch.Tensor] = {}

    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        if task.index >= self.config.max_tasks:
            raise UserError(f"moe_adapters has {self.config.max_tasks} routers per block but the stream has a task "
                            f"{task.index + 1}; set method_options.moe_adapters.max_tasks to the stream's length")
        route(ctx.model, task.index)
        for _, moe in mixtures(ctx.model):
            moe.usage.zero_()
            moe.track_balance = self.config.balance_loss_weight > 0

    def trainable_parameters(self, model: torch.nn.Module):
        chosen = []
        for block, moe in mixtures(model):
            if moe.active is None:
                raise RuntimeError("moe_adapters: no router is active outside a task")
            chosen += [(f"{block}.moe.routers.{moe.active}", moe.routers[moe.active]),
                       (f"{block}.moe.noise.{moe.active}", moe.noise[moe.active])]
            for e, expert in enumerate(moe.experts):
                if f"{block}.moe.experts.{e}" not in self.frozen:
                    chosen += [(f"{block}.moe.experts.{e}.{n}", p) for n, p in expert.named_parameters()]
        return chosen

    def training_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        loss = super().training_loss(batch, task, ctx)
        if self.config.balance_loss_weight:
            loss = loss + self.config.balance_loss_weight * balance_loss(ctx.model).to(loss)
        return loss

    def after_task(self, task: TaskInfo, ctx: RunContext) -> None:
        self.frozen |= set(most_used_experts(ctx.model, self.config.frozen_per_task))
        route(ctx.model, None)
        self.autoencoders.append(self.train_selector(task, ctx))
        self.task_names.append(task.name)
        self.classifiers = {}

    # ---------------------------------------------------------------- the task selector

    def selector_batches(self, task: TaskInfo, ctx: RunContext) -> Iterator[tuple[torch.Tensor, int]]:
        """Endless shuffled batches of selector inputs (pretrained image features) with their epoch number."""
        from torch.utils.data import DataLoader, RandomSampler

        from condu_bench.training.evaluate import Transformed

        data = Transformed(task.data.train, ctx.eval_transform)
        sampler = RandomSampler(data, generator=ctx.task_generator(task.index, "moe_adapters/selector_order"))
        loader = DataLoader(data, batch_size=self.config.selector_batch_size, sampler=sampler)
        epoch = 0
        while True:
            for images, _ in loader:
                yield self.selector_features(images.to(ctx.device), ctx), epoch
            epoch += 1

    @torch.no_grad()
    def selector_features(self, images: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        """Selector inputs: AlexNet's conv5 map, or the pretrained CLIP's embeddings (experts bypassed; the active
        router is restored)."""
        if self.alexnet is not None:
            return selector_inputs(self.alexnet(images))
        active = [moe.active for _, moe in mixtures(ctx.model)]
        route(ctx.model, None)
        try:
            return selector_inputs(ctx.model.encode_image(images))
        finally:
            for (_, moe), a in zip(mixtures(ctx.model), active):
                moe.active = a

    def train_selector(self, task: TaskInfo, ctx: RunContext) -> FeatureAutoencoder:
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.task_seed(task.index, "moe_adapters/selector_init"))
            autoencoder = FeatureAutoencoder(self.selector_dim, cfg.selector_code_dim).to(ctx.device)
        was_training = ctx.model.training
        ctx.model.eval()
        with torch.enable_grad():
            train_autoencoder(autoencoder, self.selector_batches(task, ctx), cfg.selector_iterations, cfg.selector_lr,
                              cfg.selector_weight_decay, cfg.selector_decay_epochs)
        ctx.model.train(was_training)
        return autoencoder.requires_grad_(False).eval()

    # ---------------------------------------------------------------- inference

    @torch.no_grad()
    def choose_routers(self, images: torch.Tensor, task: TaskData | None, ctx: RunContext) -> torch.Tensor:
        """Per image, the router to use (``ZERO_SHOT``: pretrained CLIP)."""
        if task is not None and self.config.route_known_tasks and task.name in self.task_names:
            return torch.full((len(images),), self.task_names.index(task.name), device=images.device)
        if not self.autoencoders:
            return torch.full((len(images),), ZERO_SHOT, device=images.device)
        errors = reconstruction_errors(self.autoencoders, self.selector_features(images, ctx))
        return select_tasks(errors, self.config.threshold, self.config.selector_granularity)

    def classifier(self, router: int, space: list[TaskData], ctx: RunContext) -> torch.Tensor:
        key = (router, tuple(t.name for t in space))
        if key not in self.classifiers:
            self.classifiers[key] = torch.cat([
                text_classifier(ctx.model, ctx.tokenizer, t.classnames, t.templates, ctx.device) for t in space])
        return self.classifiers[key]

    @torch.no_grad()
    def logits(self, images: torch.Tensor, task: TaskData | None, ctx: RunContext) -> torch.Tensor:
        space = [task] if task is not None else list(ctx.label_space)
        routers = self.choose_routers(images, task, ctx)
        out = None
        try:
            for router in routers.unique().tolist():
                rows = (routers == router).nonzero().flatten()
                route(ctx.model, None if router == ZERO_SHOT else router)
                part = cosine_logits(image_features(ctx.model, images[rows]), self.classifier(router, space, ctx))
                if out is None:
                    out = part.new_zeros(len(images), part.shape[1])
                out[rows] = part
        finally:
            route(ctx.model, None)
        return out

    # ---------------------------------------------------------------- resume and report

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"task_names": list(self.task_names), "frozen": sorted(self.frozen)}
        for i, ae in enumerate(self.autoencoders):
            state.update({f"autoencoder{i}/{k}": v.detach().clone() for k, v in ae.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task_names, self.frozen = list(state["task_names"]), set(state["frozen"])
        self.autoencoders = []
        for i in range(len(self.task_names)):
            prefix = f"autoencoder{i}/"
            weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            ae = FeatureAutoencoder(self.selector_dim, self.config.selector_code_dim)
            ae.load_state_dict(weights)
            self.autoencoders.append(ae.to(self.device).requires_grad_(False).eval())
        self.classifiers = {}

    def report(self) -> dict[str, Any]:
        return {"tasks": list(self.task_names), "frozen_experts": len(self.frozen),
                "selector_features": self.config.selector_features, "selector_input_dim": self.selector_dim}


def most_used_experts(model: torch.nn.Module, per_block: int) -> list[str]:
    """In every adapted block, the ``per_block`` experts this task's training routed most samples to (ties: the
    lower index), as ``<block>.moe.experts.<e>``."""
    names = []
    for block, moe in mixtures(model):
        if per_block == 0 or int(moe.usage.sum()) == 0:
            continue
        order = sorted((e for e in range(len(moe.usage)) if moe.usage[e] > 0), key=lambda e: (-int(moe.usage[e]), e))
        names += [f"{block}.moe.experts.{e}" for e in order[:per_block]]
    return names

"""The interface every method plugin satisfies, and a base class with the plain fine-tuning defaults.

The runner owns the loop (data, optimizer, schedule, precision, evaluation, outputs); a method only says
- which parameters train (``trainable_parameters``; the optimizer sees exactly these),
- the loss of a batch (``training_loss``: add regularisers, distillation, frozen teachers here),
- what happens around tasks and iterations (``before_task``, ``after_iteration``, ``after_task``: weight
  ensembles, merging, consolidation),
- optionally how to classify (``logits``: replaced inference such as experts or routers),
- its state for resuming (``state_dict`` / ``load_state_dict``),
- optionally its reference training recipe (``recipe``: see :mod:`condu_bench.recipes`),
- optionally that its image tower never changes (``frozen_image_tower = True``, with ``logits_from_features``):
  evaluation then computes each split's image features once per run and classifies from them.

A plugin is one file with one class registered by name; its options are a dataclass ``Config``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F

from condu_bench.data.task import TaskData
from condu_bench.errors import UserError


@dataclass
class Batch:
    images: torch.Tensor
    labels: torch.Tensor  # 0..num_classes-1 of the current task


@dataclass
class TaskInfo:
    """A training task as a method sees it."""

    index: int  # position in the stream (the task label)
    data: TaskData
    iterations: int
    lr: float

    @property
    def name(self) -> str:
        return self.data.name


@dataclass
class RunContext:
    """Everything the runner shares with a method. ``model`` is the live model being trained and evaluated.

    A method may replace ``model`` in ``setup`` by a model of its own (e.g. with adapters); the runner trains,
    checkpoints and restores whatever ``model`` is after ``setup``, and hands the next stream the original.
    """

    model: torch.nn.Module
    tokenizer: Any
    device: torch.device
    pretrained_state: dict[str, torch.Tensor]  # theta_0 on the CPU, never modified
    train_config: Any  # condu_bench.config.TrainConfig
    seed: int
    train_transform: Any = None
    eval_transform: Any = None
    coop_train_transform: Any = None  # CoOp/Dassl's augmentation (train.augment=coop)
    autocast: Any = None  # callable returning the autocast context of this run
    tasks_seen: list[TaskData] = field(default_factory=list)
    # Task-agnostic evaluation calls ``logits(images, None, ctx)``: logits then cover the classes of these
    # datasets, concatenated in this order (the evaluated dataset alone, or every evaluated dataset with the
    # scenario's ``label_space: union``).
    label_space: list[TaskData] = field(default_factory=list)
    scenario_name: str = ""  # the built scenario's name (e.g. "synthetic_mtil", "mtil_order1")
    data_root: str | None = None  # the run's data_root (methods resolve their relative input paths against it)
    # While the evaluator calls ``logits``: a key of the evaluated split and batch, the same in every evaluation of the
    # run (None otherwise, and with ``eval.feature_cache: false``). What a method computes from weights that never
    # change and these images can be cached under it.
    eval_batch: Any = None

    def augmentation(self, augment: str) -> Any:
        """The train transform ``train.augment`` names: ``model`` | ``coop`` | ``none`` (the eval transform)."""
        transform = {"model": self.train_transform, "coop": self.coop_train_transform, "none": self.eval_transform}.get(augment)
        if transform is None:
            raise UserError(f"train.augment={augment!r}: this run has no such transform (model, coop or none; "
                            "a RunContext made by hand needs train_transform / coop_train_transform / eval_transform)")
        return transform

    @property
    def synthetic(self) -> bool:
        """Whether the scenario is the embedded synthetic world (its reference data may stand in for real data)."""
        return self.scenario_name.startswith("synthetic")

    def task_seed(self, task_index: int, purpose: str) -> int:
        """A seed for a method's own randomness in one task (reference loaders, random texts).

        Derived from (run seed, task, purpose) alone, so a run resumed at a task boundary draws exactly what an
        uninterrupted run draws, without any generator state in the checkpoint.
        """
        from condu_bench.training.device import derived_seed

        return derived_seed(self.seed, "method", purpose, task_index)

    def task_generator(self, task_index: int, purpose: str) -> torch.Generator:
        return torch.Generator().manual_seed(self.task_seed(task_index, purpose))

    def text_classifier(self, task: TaskData, templates: str = "train", model: torch.nn.Module | None = None) -> torch.Tensor:
        """Class embeddings of ``task``; differentiable when called with grad enabled.

        ``templates="train"`` follows ``train.train_templates`` (first template, as the references train);
        ``"all"`` averages every template (as evaluation does).
        """
        from condu_bench.models.classifier import text_classifier

        which = self.train_config.train_templates if templates == "train" else templates
        chosen = task.templates[:1] if which == "first" else task.templates
        return text_classifier(model or self.model, self.tokenizer, task.classnames, chosen, self.device)

    def frozen_copy(self, state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
        """A frozen copy of the model (a teacher), with ``state`` (default: theta_0) loaded."""
        import copy

        teacher = copy.deepcopy(self.model)
        teacher.load_state_dict(state if state is not None else self.pretrained_state)
        teacher.requires_grad_(False).eval()
        return teacher


class Method(Protocol):
    """What the runner calls on a plugin; :func:`check_method_class` holds every registered class to it."""

    name: ClassVar[str]
    trains: ClassVar[bool]
    Config: ClassVar[type]  # a dataclass of the method's options (``method_options.<name>``)

    def setup(self, ctx: RunContext) -> None: ...

    def trainable_parameters(self, model: torch.nn.Module) -> Iterable[tuple[str, torch.nn.Parameter]]: ...

    def before_task(self, task: TaskInfo, ctx: RunContext) -> None: ...

    def training_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor: ...

    def after_iteration(self, step: int, task: TaskInfo, ctx: RunContext) -> None: ...

    def after_task(self, task: TaskInfo, ctx: RunContext) -> None: ...

    def logits(self, images: torch.Tensor, task: TaskData | None, ctx: RunContext) -> torch.Tensor | None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def report(self) -> dict[str, Any]: ...


def check_method_class(registered_as: str, cls: type) -> type:
    """``cls`` if it has every member of :class:`Method` (hooks callable); else a UserError naming what is missing."""
    import dataclasses

    hooks = [n for n, v in vars(Method).items() if callable(v) and not n.startswith("_")]
    missing = [n for n in Method.__annotations__ if not hasattr(cls, n)]
    missing += [n for n in hooks if not callable(getattr(cls, n, None))]
    if getattr(cls, "frozen_image_tower", False) and not callable(getattr(cls, "logits_from_features", None)):
        missing.append("logits_from_features (it declares frozen_image_tower)")
    if not missing and not dataclasses.is_dataclass(cls.Config):
        missing.append("Config (a dataclass)")
    if missing:
        raise UserError(f"method {registered_as!r} ({cls.__module__}.{cls.__qualname__}) lacks {', '.join(missing)}: "
                        "subclass condu_bench.method.BaseMethod, which supplies every hook's default")
    return cls


class BaseMethod:
    """Continual fine-tuning defaults; subclasses override only what differs.

    Defaults: every parameter trains except ``logit_scale``; the loss is cross-entropy with label smoothing
    over the current task's text classifier (text encoder trained too); standard inference.
    """

    name: ClassVar[str] = "base"
    trains: ClassVar[bool] = True
    # The reference code's training recipe (condu_bench.recipes.Recipe), layered over the run's train section;
    # None: the train section as it is.
    recipe: ClassVar[Any] = None
    # True: the image tower is theta_0's throughout (never trained, never changed by a hook); evaluation reuses image
    # features and calls ``logits_from_features``. The runner refuses a declared method that trains the tower.
    frozen_image_tower: ClassVar[bool] = False

    @dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    def setup(self, ctx: RunContext) -> None:
        pass

    def trainable_parameters(self, model: torch.nn.Module) -> Iterable[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in model.named_parameters() if n != "logit_scale"]

    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        pass

    def task_loss(self, features: torch.Tensor, labels: torch.Tensor, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        """Cross-entropy (with the run's label smoothing) of normalised image ``features`` over the current task's
        text classifier, with gradients through both encoders. Methods that reuse the features for other terms
        (distillation) compute them once and pass them here."""
        from condu_bench.models.classifier import cosine_logits, logit_scale

        logits = cosine_logits(features, ctx.text_classifier(task.data), logit_scale(ctx.model))
        return F.cross_entropy(logits, labels, label_smoothing=ctx.train_config.label_smoothing)

    def training_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        from condu_bench.models.classifier import image_features

        return self.task_loss(image_features(ctx.model, batch.images), batch.labels, task, ctx)

    def after_iteration(self, step: int, task: TaskInfo, ctx: RunContext) -> None:
        pass

    def after_task(self, task: TaskInfo, ctx: RunContext) -> None:
        pass

    def logits(self, images: torch.Tensor, task: TaskData | None, ctx: RunContext) -> torch.Tensor | None:
        return None  # the runner's standard inference

    def logits_from_features(self, features: torch.Tensor, task: TaskData | None, ctx: RunContext) -> torch.Tensor | None:
        """``logits`` given the normalised image features (only called for ``frozen_image_tower`` methods); None:
        the runner's standard inference."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def report(self) -> dict[str, Any]:
        """JSON facts about the finished run worth keeping in ``metrics.json`` (e.g. storage per task)."""
        return {}

"""Per-method training recipes: the run's ``train`` section < the method's reference recipe < ``recipes.<method>``.

A method declares the recipe of its reference code as data, the class attribute ``recipe`` (a :class:`Recipe` of
``train`` keys). For each method the run resolves one :class:`~condu_bench.config.TrainConfig`, layer over layer:

1. the benchmark file's ``train`` section (with its ``train.*`` overrides): the harness defaults;
2. the method's ``recipe``;
3. ``recipes.<method>`` in the config (e.g. ``recipes.coop.epochs=5``).

A higher layer replaces the keys it names, except that the budget (``iterations``, ``epochs`` and their per-task maps)
and the warm-up (``warmup_steps``, ``warmup_epochs``) are each taken whole from the highest layer naming any of their
keys, so a recipe in epochs is never mixed with the train section's iterations. One layer giving both ``iterations``
and ``epochs`` (or both warm-ups) is an error. The resolved config is what the run records in ``config.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from condu_bench.config import TRAIN_CHOICES, TrainConfig, from_dict, to_dict
from condu_bench.errors import UserError

GROUPS = (("iterations", "epochs", "iterations_per_task", "epochs_per_task"), ("warmup_steps", "warmup_epochs"))
EXCLUSIVE = (("iterations", "epochs"), ("warmup_steps", "warmup_epochs"), ("iterations_per_task", "epochs_per_task"))
DEFAULT_ITERATIONS = 100
DEFAULT_WARMUP_STEPS = 10


@dataclass(frozen=True)
class Recipe:
    """A method's reference training recipe: ``train`` keys, and where they come from (recorded in the README)."""

    source: str
    train: Mapping[str, Any] = field(default_factory=dict)


def check_train_keys(keys: Mapping[str, Any], where: str) -> None:
    """``keys`` (one layer) are ``train`` keys of the right types, without two budgets or two warm-ups."""
    check_train_config(from_dict(TrainConfig, dict(keys), where), where)


def check_train_config(t: TrainConfig, where: str) -> None:
    for key, allowed in TRAIN_CHOICES.items():
        if getattr(t, key) not in allowed:
            raise UserError(f"{where}.{key}={getattr(t, key)!r} is not one of {sorted(allowed)}")
    for a, b in EXCLUSIVE:
        va, vb = getattr(t, a), getattr(t, b)
        clash = sorted(set(va) & set(vb)) if isinstance(va, dict) else (va is not None and vb is not None)
        if clash:
            detail = f" (both name {clash[0]!r})" if isinstance(clash, list) else ""
            raise UserError(f"{where}: give {a} or {b}, not both{detail}; set the other to null (e.g. train.{b}=null)")
    for key in ("iterations", "epochs", "warmup_steps", "warmup_epochs"):
        value = getattr(t, key)
        if value is not None and value < 0:
            raise UserError(f"{where}: {key} must be >= 0, not {value}")
    for key in ("iterations_per_task", "epochs_per_task"):
        bad = {k: v for k, v in getattr(t, key).items() if v < 0}
        if bad:
            raise UserError(f"{where}: {key} must be >= 0 (got {bad})")
    if t.batch_size < 1:
        raise UserError(f"{where}: batch_size must be >= 1, not {t.batch_size}")
    if t.schedule == "epoch_cosine":
        if t.warmup_steps:
            raise UserError(f"{where}: schedule epoch_cosine warms up in whole epochs: give warmup_epochs, not warmup_steps")
        if t.warmup_epochs and t.warmup_lr is None:
            raise UserError(f"{where}: schedule epoch_cosine with warmup_epochs needs warmup_lr (the constant warm-up lr)")


def resolve_train(base: TrainConfig, recipe: Recipe | None, override: Mapping[str, Any] | None, method: str) -> TrainConfig:
    """The train config of ``method``: ``base`` < ``recipe`` < ``override``, defaults filled in (see the module)."""
    data = to_dict(base)
    layers = [(recipe.train if recipe is not None else {}, f"the recipe of method {method!r}"),
              (override or {}, f"recipes.{method}")]
    for keys, where in layers:
        check_train_keys(keys, where)
        for group in GROUPS:
            if any(k in keys for k in group):
                data.update({k: {} if k.endswith("_per_task") else None for k in group})
        data.update(to_dict(dict(keys)))
    train = from_dict(TrainConfig, data, f"train of method {method!r}")
    if train.iterations is None and train.epochs is None:
        train = replace(train, iterations=DEFAULT_ITERATIONS)
    if train.warmup_steps is None and train.warmup_epochs is None:
        train = replace(train, **({"warmup_epochs": 0} if train.schedule == "epoch_cosine" else {"warmup_steps": DEFAULT_WARMUP_STEPS}))
    check_train_config(train, f"train of method {method!r}")
    return train


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Batches in one pass: the last partial batch is dropped once a full one exists (as the training loader does)."""
    return max(1, n_train // batch_size)


def task_iterations(train: TrainConfig, task: str, n_train: int, dataset: str | None = None) -> int:
    """The optimizer steps of one task: a per-task entry for the task's name (e.g. ``ImageNet/base``) or else its
    dataset's (``ImageNet``), then the global budget."""
    per_epoch = steps_per_epoch(n_train, train.batch_size)
    for name in (task, dataset):
        if name in train.iterations_per_task:
            return train.iterations_per_task[name]
        if name in train.epochs_per_task:
            return train.epochs_per_task[name] * per_epoch
    if train.epochs is not None:
        return train.epochs * per_epoch
    return train.iterations if train.iterations is not None else DEFAULT_ITERATIONS


def warmup_steps(train: TrainConfig, n_train: int) -> int:
    if train.warmup_epochs is not None:
        return train.warmup_epochs * steps_per_epoch(n_train, train.batch_size)
    return train.warmup_steps if train.warmup_steps is not None else DEFAULT_WARMUP_STEPS

"""The finished solution that continued fine-tuning (MergeTune) starts from: read from a finished run of the base
method, or trained first on the same task in the same run.

A finished run keeps its learned state after every task (:mod:`condu_bench.task_states`); :func:`finished_base_run`
finds that run and checks that it is of the same scenario and seed. :func:`train_base_first` trains a fresh
instance of the base method on the live model with the base's own recipe, as the references' first stage does.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from condu_bench.errors import UserError
from condu_bench.method import RunContext, TaskInfo


class ImagesWithTransform(torch.utils.data.Dataset):
    """(image, label) pairs of a task's split with a transform applied (the base's training data)."""

    def __init__(self, data: Any, transform: Any):
        self.data, self.transform, self.targets = data, transform, data.targets

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        image, label = self.data[index][:2]
        return self.transform(image), label


def finished_base_run(from_run: str, base: str, seed: int, scenario: str, option: str) -> Path:
    """The run directory of ``base`` at ``seed`` that ``from_run`` names (the run directory, or the output directory
    holding it), after checking it fits this run; ``option`` names the setting in error messages."""
    from condu_bench import run_store

    root = Path(from_run).expanduser()
    candidates = [root, run_store.run_dir(root, base, seed)]
    found = next((c for c in candidates if (c / run_store.METRICS).is_file()), None)
    if found is None:
        raise UserError(f"{option}: no finished run at {root} (looked for "
                        f"{' and '.join(str(c / run_store.METRICS) for c in candidates)}); give the run directory of a "
                        f"finished {base!r} run, or leave from_run unset to train {base!r} first in this run")
    metrics = run_store.finished_metrics(found)
    expected = {"method": base, "seed": seed, "scenario": scenario}
    for key, want in expected.items():
        if metrics.get(key) != want:
            raise UserError(f"{option}: {found} is a run with {key} {metrics.get(key)!r}, but this run needs {key} "
                            f"{want!r} (base {base!r}, seed {seed}, scenario {scenario!r})")
    return found


def base_train_config(own: Any, base: str, budget: dict[str, Any] | None, overrides: dict[str, Any]) -> Any:
    """The base's train config: the run's train section under the base's recipe, at ``budget`` (the budget the
    continuing method's scripts give the base, if they differ from its own), then ``overrides``; the selection is
    not inherited from the continuing method's (the bases keep their last epoch)."""
    from condu_bench.recipes import resolve_train
    from condu_bench.registries import METHODS

    train = resolve_train(replace(own, select="last"), METHODS.get(base).recipe, budget, base)
    return resolve_train(train, None, overrides, base)


def train_base_first(base: str, options: dict[str, Any], train: Any, task: TaskInfo, ctx: RunContext,
                     owner: str) -> Any:
    """A fresh ``base`` method (``options`` its config) trained on ``task`` with ``train`` on the live model; returns
    the trained method (its learned state: its own, e.g. a prompt, or the model's weights it trains)."""
    from condu_bench.config import from_dict
    from condu_bench.recipes import task_iterations
    from condu_bench.registries import METHODS
    from condu_bench.training.loop import train_task

    cls = METHODS.get(base)
    method = cls(from_dict(cls.Config, options, f"the {base} base of {owner}"))
    data = task.data
    info = TaskInfo(index=task.index, data=data, lr=train.lr_per_task.get(task.name, train.lr),
                    iterations=task_iterations(train, task.name, len(data.train), data.info.get("dataset")))
    transform = ctx.augmentation(train.augment)
    own_train = ctx.train_config
    ctx.train_config = train
    try:
        method.setup(ctx)
        train_task(method, info, ImagesWithTransform(data.train, transform), ctx,
                   stream_index=ctx.task_seed(task.index, f"{owner} base"), progress=False,
                   fixed_items=train.augment == "none")
    finally:
        ctx.train_config = own_train
    return method

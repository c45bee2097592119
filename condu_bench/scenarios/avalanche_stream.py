"""Turn a :class:`Stream` into an Avalanche benchmark: one experience per dataset, task label = position.

Avalanche supplies the stream/experience structure (task labels, transform groups). Each experience also
carries the :class:`TaskData` it came from (class names, templates, split convention) as ``exp.task_data``.
Training and evaluation are done by condu_bench's own runner, not by Avalanche strategies (see the spec's
list of Avalanche 0.6 bugs: optimizer re-creation, accuracy-matrix rows, checkpoint pickling).
"""

from __future__ import annotations

import warnings
from typing import Any

from condu_bench.data.task import TaskData
from condu_bench.scenarios.base import Stream


def _taskaware(dataset: Any, task_label: int, train_transform: Any, eval_transform: Any, group: str) -> Any:
    from avalanche.benchmarks.utils import _make_taskaware_classification_dataset

    return _make_taskaware_classification_dataset(
        dataset,
        task_labels=task_label,
        targets=list(dataset.targets),
        transform_groups={"train": train_transform, "eval": eval_transform},
        initial_transform_group=group,
    )


def build_avalanche_benchmark(stream: Stream, train_transform: Any, eval_transform: Any) -> Any:
    """A CLScenario whose ``train_stream`` has one experience per training dataset of ``stream``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # avalanche's optional solvers warn at import
        from avalanche.benchmarks.scenarios import benchmark_from_datasets, with_task_labels

    missing = [t.name for t in stream.train if t.train is None]
    if missing:
        raise ValueError(f"stream {stream.name!r}: datasets {missing} have no training split")
    train = [_taskaware(t.train, i, train_transform, eval_transform, "train") for i, t in enumerate(stream.train)]
    # no test stream: the runner evaluates every dataset of the stream itself (a whole accuracy-matrix row per task)
    benchmark = with_task_labels(benchmark_from_datasets(train=train))
    for experience, task in zip(benchmark.train_stream, stream.train):
        attach(experience, task)
    return benchmark


def attach(experience: Any, task: TaskData) -> None:
    experience.task_data = task
    experience.classes_in_this_experience_names = list(task.classnames)

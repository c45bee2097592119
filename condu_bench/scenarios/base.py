"""The shape every scenario takes: independent streams, each trained from the pretrained model.

- MTIL: one stream of T datasets learned one after another, every dataset evaluated after every step.
- Base-to-novel: one single-step stream per dataset (train on base classes; evaluate base and novel).
- Cross-dataset / domain generalisation: one stream training on the source, evaluating the targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from condu_bench.data.task import TaskData
from condu_bench.errors import UserError

Protocol = Literal["mtil", "base_to_novel", "cross_dataset", "domain_generalisation"]
#: What a task-agnostic evaluation scores an image over. ``dataset``: its own dataset's classes, the task identity
#: withheld from the method (ConDU's released ``agnostic_evaluate``: prototype routing, then each model's zero-shot
#: classifier of the target dataset). ``union``: every evaluated dataset's classes, a hit only for the right class of
#: the right dataset (stricter; no published table uses it).
LabelSpace = Literal["dataset", "union"]
LABEL_SPACES = ("dataset", "union")


def checked_label_space(value: object, task_agnostic: bool) -> str:
    """The ``label_space`` option, checked; it only means something in task-agnostic scenarios."""
    if value not in LABEL_SPACES:
        raise UserError(f"scenario.options.label_space must be one of {', '.join(LABEL_SPACES)}, not {value!r}")
    if value != "dataset" and not task_agnostic:
        raise UserError(f"scenario.options.label_space={value} needs task_agnostic: true (with the task known, each "
                        "dataset is scored over its own classes)")
    return str(value)


def agnostic_suffix(task_agnostic: bool, label_space: str) -> str:
    """The scenario-name suffix of a task-agnostic evaluation, so that the two label spaces never share a table."""
    if not task_agnostic:
        return ""
    return "_agnostic" + ("_union" if label_space == "union" else "")


@dataclass
class Stream:
    """Tasks trained in order from the pretrained weights, and the tasks evaluated after each step.

    ``evaluate`` defaults to the training tasks (MTIL). With ``evaluate_before_training`` the runner
    also scores the pretrained model (used by protocols that report zero-shot rows).
    """

    name: str
    train: list[TaskData]
    evaluate: list[TaskData] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.evaluate:
            self.evaluate = list(self.train)
        names = [t.name for t in self.evaluate]
        if len(set(names)) != len(names):
            raise ValueError(f"stream {self.name!r} evaluates a dataset twice: {names}")


@dataclass
class Scenario:
    name: str
    protocol: Protocol
    streams: list[Stream]
    task_agnostic: bool = False
    label_space: LabelSpace = "dataset"  # task-agnostic only: see LabelSpace
    info: dict[str, Any] = field(default_factory=dict)  # split convention, shots, order, ... recorded in results

    def for_zero_shot(self) -> Scenario:
        """The scenario as zero-shot CLIP rows see it: every task with its zero-shot templates (itself when none has
        any); a task trained and evaluated in a stream stays one object."""
        if all(t.zeroshot_templates is None for s in self.streams for t in s.train + s.evaluate):
            return self
        swapped: dict[int, TaskData] = {}

        def swap(task: TaskData) -> TaskData:
            return swapped.setdefault(id(task), task.for_zero_shot())

        streams = [Stream(s.name, [swap(t) for t in s.train], [swap(t) for t in s.evaluate]) for s in self.streams]
        info = {**self.info, "templates": self.info.get("zeroshot_templates", self.info.get("templates"))}
        return replace(self, streams=streams, info=info)

    def evaluation_space(self, stream: Stream, task: TaskData) -> list[TaskData]:
        """The datasets whose classes ``task``'s test images are scored over."""
        return list(stream.evaluate) if self.task_agnostic and self.label_space == "union" else [task]

    @property
    def split_conventions(self) -> list[str]:
        return sorted({t.split_convention for s in self.streams for t in s.train + s.evaluate})

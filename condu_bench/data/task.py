"""What a scenario hands the runner for one dataset: images, class names, prompt templates, provenance."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class ImageDataset(Protocol):
    """Indexable ``(PIL.Image.Image, int label)`` pairs; ``targets`` lists every label without decoding images."""

    targets: Sequence[int]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Any, int]: ...


@dataclass
class TaskData:
    """One dataset of a scenario.

    ``train`` is None for evaluation-only datasets (cross-dataset / domain-generalisation targets); ``val`` is None
    where the split convention has no validation split.
    ``split_convention`` records how train/test were made (e.g. ``"synthetic"``, ``"zscl"``, ``"coop"``)
    and is written into every result.
    """

    name: str
    classnames: list[str]
    templates: list[str]
    test: ImageDataset
    train: ImageDataset | None = None
    split_convention: str = "unspecified"
    val: ImageDataset | None = None  # a validation split (CoOp layouts), for methods that select a model on it
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.classnames:
            raise ValueError(f"task {self.name!r} has no class names")
        bad = [t for t in self.templates if t.count("{}") != 1]
        if not self.templates or bad:
            raise ValueError(f"task {self.name!r}: every template needs exactly one '{{}}' (bad: {bad})")

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

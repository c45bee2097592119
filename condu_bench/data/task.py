"""What a scenario hands the runner for one dataset: images, class names, prompt templates, provenance."""

from __future__ import annotations

import dataclasses
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
    # The templates zero-shot CLIP rows are scored with, where the protocol's references used others than
    # ``templates`` (CoOp: trainers/zsclip.py); None: the same. Names of both sets are in info["templates"] /
    # info["zeroshot_templates"].
    zeroshot_templates: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.classnames:
            raise ValueError(f"task {self.name!r} has no class names")
        for templates in (self.templates, self.zeroshot_templates):
            bad = [t for t in templates or [] if t.count("{}") != 1]
            if templates is not None and (not templates or bad):
                raise ValueError(f"task {self.name!r}: every template needs exactly one '{{}}' (bad: {bad})")

    def for_zero_shot(self) -> TaskData:
        """This task as zero-shot CLIP rows see it: ``zeroshot_templates`` as ``templates`` (itself when there are none)."""
        if self.zeroshot_templates is None:
            return self
        info = {**self.info, "templates": self.info.get("zeroshot_templates", "zeroshot")}
        return dataclasses.replace(self, templates=list(self.zeroshot_templates), info=info)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

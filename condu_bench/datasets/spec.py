"""What the registry holds for one real dataset, and what a layout reader hands back.

A :class:`DatasetSpec` is data: its class names and prompt templates live in ``classnames/<file>.json``
(read on first use), and each supported layout (``zscl``, ``coop``) is a :class:`LayoutSpec` naming the
folder, the files that must exist, the official archive that provides them and the reader that lists the
images. Nothing here imports torch or PIL, so listing the registry stays cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from condu_bench.errors import UserError

LAYOUTS = ("zscl", "coop")
# Named prompt-template sets, each a key of the dataset's data file: "handcrafted" is the one template of KgCoOp /
# CLIPFit / MergeTune (trainers/kgcoop.py CUSTOM_TEMPLATES), "coop_zeroshot" the one CoOp scored zero-shot CLIP with
# (trainers/zsclip.py; differs for DTD), "ensemble" the MTIL references' list (ZSCL / OpenAI CLIP).
TEMPLATE_SETS = {"handcrafted": "coop_template", "coop_zeroshot": "coop_zeroshot_template", "ensemble": "templates"}
TEMPLATE_ALIASES = {"coop": "handcrafted"}  # the older name of the hand-crafted set
Problem = Literal["missing", "malformed", "unsupported"]


class DataLayoutError(UserError):
    """A dataset folder that cannot be used: ``kind`` is missing / malformed / unsupported.

    ``path`` is the exact path at fault; ``problems`` lists the first offending entries (split-file lines,
    labels) so that ``data check`` can print them.
    """

    def __init__(self, message: str, kind: Problem = "malformed", path: str | Path | None = None,
                 problems: list[str] | None = None):
        super().__init__(message)
        self.kind, self.path, self.problems = kind, (str(path) if path is not None else None), list(problems or [])


@dataclass(frozen=True)
class LayoutSpec:
    """Where one layout keeps a dataset under the data root.

    ``dirs``: candidate dataset folders relative to the root; the first holding every ``required`` path wins
    (torchvision's DTD nests ``dtd/dtd/``, the bare archive gives ``dtd/``). ``required`` entries are relative
    to that folder; ``a|b`` accepts either. ``archive`` says which official download provides them, with
    ``{root}`` standing for the data root. ``reader`` is ``"module:function"``, called as
    ``reader(spec, layout_spec, folder, root)`` and returning a :class:`Listing`.
    """

    reader: str
    dirs: tuple[str, ...]
    required: tuple[str, ...]
    archive: str
    split: str
    num_classes: int
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    data_file: str  # file name under condu_bench/datasets/classnames/
    layouts: dict[str, LayoutSpec] = field(hash=False, compare=False)
    aliases: tuple[str, ...] = ()
    mtil_name: str | None = None  # the column name ZSCL/ConDU tables use (Flowers, Food, OxfordPet)
    description: str = ""

    @cached_property
    def data(self) -> dict[str, Any]:
        text = resources.files("condu_bench.datasets").joinpath("classnames", self.data_file).read_text("utf-8")
        return json.loads(text)

    @property
    def classnames(self) -> list[str] | None:
        """The reference class names in label order, or None where they are derived from the files at load time."""
        names = self.data.get("classnames")
        return list(names) if names is not None else None

    @property
    def templates(self) -> list[str]:
        """The prompt-template ensemble of the MTIL references (ZSCL / OpenAI CLIP)."""
        return list(self.data["templates"])

    @property
    def coop_template(self) -> str:
        """The single hand-crafted CoOp/KgCoOp template (base-to-novel, cross-dataset, domain generalisation)."""
        return self.data["coop_template"]

    def template_set(self, name: str) -> tuple[str, list[str]]:
        """``(set name, templates)`` of a named template set (:data:`TEMPLATE_SETS`; ``coop`` is ``handcrafted``)."""
        canonical = TEMPLATE_ALIASES.get(name, name)
        if canonical not in TEMPLATE_SETS:
            raise UserError(f"unknown template set {name!r} (valid: {', '.join(TEMPLATE_SETS)}; coop = handcrafted)")
        value = self.data.get(TEMPLATE_SETS[canonical])
        if value is None:
            raise UserError(f"{self.name} has no {canonical!r} templates (its data file {self.data_file} lacks "
                            f"{TEMPLATE_SETS[canonical]!r}); choose another template set")
        return canonical, [value] if isinstance(value, str) else list(value)

    def layout(self, layout: str) -> LayoutSpec:
        if layout not in LAYOUTS:
            raise UserError(f"unknown data layout {layout!r} (valid: {', '.join(LAYOUTS)})")
        if layout not in self.layouts:
            have = ", ".join(self.layouts)
            raise DataLayoutError(
                f"{self.name} has no {layout!r} layout (only {have}): "
                + {"coop": f"{self.name} is not part of the CoOp protocol; use layout=zscl",
                   "zscl": f"{self.name} is only read from the CoOp directory layout; use layout=coop"}[layout],
                kind="unsupported",
            )
        return self.layouts[layout]


@dataclass
class Listing:
    """A dataset as found on disk: class names in label order and one dataset per split (train / val / test).

    ``notes`` records anything worth keeping with the results (e.g. class names on disk that differ from the
    reference list). ``files`` names the split files / folders the listing came from, for error messages.
    """

    dataset: str
    layout: str
    classnames: list[str]
    splits: dict[str, Any]
    folder: Path
    split_description: str
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {name: len(ds) for name, ds in self.splits.items()}

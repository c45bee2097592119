"""Base/novel halves (CoOp/CoCoOp protocol): labels sorted, m = ceil(n / 2), base = first m, novel = the rest.

Each half is relabelled 0.. and keeps its class names, so base is scored with a base-only classifier and
novel with a novel-only one.
"""

from __future__ import annotations

import math
from typing import Any, Literal

Half = Literal["base", "novel"]


def base_novel_labels(num_classes: int) -> tuple[list[int], list[int]]:
    m = math.ceil(num_classes / 2)
    return list(range(m)), list(range(m, num_classes))


def split_half(dataset: Any, classnames: list[str], half: Half) -> tuple[Any, list[str]]:
    """The items of ``dataset`` in the given half, relabelled 0.., and that half's class names."""
    base, novel = base_novel_labels(len(classnames))
    labels = {"base": base, "novel": novel}[half]
    label_map = {old: new for new, old in enumerate(labels)}
    indices = [i for i, t in enumerate(dataset.targets) if t in label_map]
    return dataset.subset(indices, label_map), [classnames[old] for old in labels]

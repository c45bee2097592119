"""Image features of methods whose image tower never changes (zero-shot, prompt learning): computed once per
evaluated split and reused by every later evaluation of the run.

A method opts in with ``frozen_image_tower = True``; the runner refuses such a method if it trains an image-tower
parameter (:func:`check_frozen_image_tower`). Features are keyed by the evaluated split (its images and transform,
see the evaluator) and by a checksum of the live image tower, so weights that changed in any other way (a hook, a
merge) are never served stale features: they are computed again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from condu_bench.errors import UserError


def image_tower(model: torch.nn.Module) -> torch.nn.Module:
    tower = getattr(model, "visual", None)
    if not isinstance(tower, torch.nn.Module):
        raise UserError(f"{type(model).__name__} has no image tower at .visual; a frozen-image-tower feature cache needs one")
    return tower


@torch.no_grad()
def tower_checksum(model: torch.nn.Module) -> tuple[float, ...]:
    """Per-tensor sums (float64) of the image tower's parameters and buffers: any update changes them."""
    tower = image_tower(model)
    tensors = [*tower.parameters(), *tower.buffers()]
    return tuple(float(t.detach().double().sum()) for t in tensors)


def check_frozen_image_tower(method: Any, model: torch.nn.Module, trainable: Iterable[torch.nn.Parameter]) -> None:
    """UserError if a method that declares a frozen image tower trains one of its parameters."""
    if not getattr(method, "frozen_image_tower", False):
        return
    tower = {id(p) for p in image_tower(model).parameters()}
    if any(id(p) in tower for p in trainable):
        raise UserError(f"method {method.name!r} declares frozen_image_tower = True but trains image-tower parameters; "
                        "drop the declaration or the parameters")


class FeatureCache:
    """Features per evaluated split, for the image-tower checksum they were computed with (the latest one only)."""

    def __init__(self) -> None:
        self._features: dict[Any, tuple[tuple[float, ...], list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        self.computed = 0  # splits whose features were computed (a hit computes nothing)

    def batches(self, key: Any, model: torch.nn.Module,
                compute: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(features, labels)`` batches of split ``key``; ``compute()`` yields them when they are not cached."""
        checksum = tower_checksum(model)
        cached = self._features.get(key)
        if cached is not None and cached[0] == checksum:
            return cached[1]
        batches = list(compute())
        self._features[key] = (checksum, batches)
        self.computed += 1
        return batches

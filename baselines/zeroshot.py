"""Zero-shot CLIP: the pretrained model, never trained."""

from __future__ import annotations

from typing import ClassVar

from condu_bench.method import BaseMethod


class ZeroShot(BaseMethod):
    """Zero-shot CLIP: no training; every accuracy-matrix row is equal."""

    name: ClassVar[str] = "zeroshot"
    trains: ClassVar[bool] = False  # the runner evaluates once and repeats the row
    frozen_image_tower: ClassVar[bool] = True

    def trainable_parameters(self, model):
        return []

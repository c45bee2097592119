"""Zero-shot CLIP: the pretrained model, never trained."""

from __future__ import annotations

from typing import ClassVar

from condu_bench.method import BaseMethod


class ZeroShot(BaseMethod):
    """Zero-shot CLIP: no training; every accuracy-matrix row is equal."""

    name: ClassVar[str] = "zeroshot"
    trains: ClassVar[bool] = False  # the runner evaluates once and repeats the row
    frozen_image_tower: ClassVar[bool] = True
    # Its rows are zero-shot CLIP's: scored with the scenario's zero-shot templates where the protocol has them
    # (CoOp's protocols: trainers/zsclip.py's, e.g. DTD "{} texture."; Scenario.for_zero_shot)
    zero_shot_templates: ClassVar[bool] = True

    def trainable_parameters(self, model):
        return []

"""Continual fine-tuning (Continual-FT): every weight but logit_scale, cross-entropy, task after task."""

from __future__ import annotations

from typing import ClassVar

from condu_bench.method import BaseMethod


class ContinualFinetune(BaseMethod):
    """Continual fine-tuning of every weight (except logit_scale), task after task."""

    name: ClassVar[str] = "finetune"

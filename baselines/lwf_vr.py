"""LwF-VR (Ding et al., 2022) as ZSCL's released scripts run it (``mtil/scripts/lwf_vr.sh``).

Reference: ``Thunderbeee/ZSCL``, ``mtil/src/models/finetune.py`` with ``--ref-sentences random``, whose texts
come from ``virtual_vocab`` in ``mtil/src/models/helpers.py``. Everything is LwF (:mod:`.lwf`: teacher = the
task-start model, the current task's images through the eval transform, two-way distillation at T = 2) except
the texts: 1000 sequences of 10 token ids drawn uniformly from the whole vocabulary (start and end tokens
around them, no template), drawn once per task and encoded once by the teacher.

Deviations: the draw uses a generator derived from (run seed, task) rather than the global seed, so each task
gets its own sequences (the reference, reseeding identically, probably repeats one draw) and resumed runs repeat
them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from condu_bench.baselines.lwf import LwF
from condu_bench.distillation import random_token_sequences
from condu_bench.method import RunContext, TaskInfo


class LwFVR(LwF):
    """LwF-VR: LwF whose distillation texts are random token sequences of the vocabulary."""

    name: ClassVar[str] = "lwf_vr"

    @dataclass(frozen=True)
    class Config(LwF.Config):
        sequences: int = 1000  # virtual vocabulary size
        tokens_per_sequence: int = 10

    def distillation_texts(self, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        cfg = self.config
        return random_token_sequences(ctx.tokenizer, cfg.sequences, cfg.tokens_per_sequence,
                                      ctx.task_generator(task.index, f"{self.name}/vocabulary"))

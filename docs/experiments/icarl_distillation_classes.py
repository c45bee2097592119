"""Does iCaRL forget more than Continual-FT on the embedded world because its distillation sees too few classes?

As released (ZSCL's ``mtil/src/models/icarl.py``), iCaRL distils zero-shot CLIP's logits on the earlier datasets'
exemplars over the *current* dataset's class names: 37-397 of them on most MTIL datasets, 5-10 a domain here. This
plugin, ``icarl_seen_classes``, is iCaRL with one change: the distillation's texts are the class names of every
domain learned so far and the current one (each in its own domain's first template), so the softmax the exemplars
are pinned by grows from 5-10 to 40 classes over the stream. Nothing else differs (memory, herding, teacher,
temperature, weights).

    condu-bench run --plugin docs/experiments/icarl_distillation_classes.py methods=icarl,icarl_seen_classes \\
        seeds=0 --out /tmp/icarl_classes

Compare the two rows' forgetting (the diagonal minus the last row of their accuracy matrices). Session 15 (second
kind of machine, seed-0 tiny CLIP, training seed 0; 90 s): forgetting 28.6 against iCaRL's 29.1 (Continual-FT 27.5),
diagonal 87.7 against 87.2, Last 63.9 against 63.0. The number of classes is not why iCaRL forgets here; the README
reads it.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from condu_bench.baselines.icarl import ICaRL
from condu_bench.distillation import prompt_tokens
from condu_bench.method import RunContext, TaskInfo
from condu_bench.registries import METHODS


@METHODS.register("icarl_seen_classes")
class ICaRLSeenClasses(ICaRL):
    name: ClassVar[str] = "icarl_seen_classes"

    def distillation_tokens(self, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        return torch.cat([prompt_tokens(ctx.tokenizer, data.classnames, data.templates[0])
                          for data in [*ctx.tasks_seen, task.data]])

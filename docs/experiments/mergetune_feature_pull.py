"""Does MergeTune's pull towards the zero-shot features of the *base* classes reach the novel ones on the embedded
world? A method plugin, ``mergetune_pull``: MergeTune itself, plus, after each domain's training, the mean cosine
between the zero-shot class features (the domain's templates, averaged) and the prompt's class features, for the base
and for the novel classes, under three contexts: the zero-shot init ("a photo of a"), the CoOp prompt MergeTune
starts from, and the prompt MergeTune keeps (best-val selection has run by then; ``select=last`` scores the trained
continuation). They land in ``metrics.json`` under
``method_report.feature_pull``.

    condu-bench run synthetic_b2n --plugin docs/experiments/mergetune_feature_pull.py methods=mergetune_pull \\
        recipes.mergetune_pull.select=last model.pretrained=synthetic-seed2 seeds=1,2,3 --out /tmp/pull

Session 12 (world version 6, second machine, the tiny CLIP pretrained with seed 2, seeds 1-3, ``select=last``;
1.5 minutes), mean over the six domains of the cosine to the zero-shot class features: base 0.84 (init), 0.77
(CoOp), 0.99 (MergeTune); novel 0.91, 0.78, 0.97. The pull on the base classes carries to the novel ones; Novel
67.7 against CoOp's 61.6 and zero-shot's 70.4 (HM 74.0 against CoOp's 70.5). The README reads it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from condu_bench.baselines.mergetune import MergeTune, raw_class_features
from condu_bench.method import RunContext, TaskInfo
from condu_bench.models.classifier import text_classifier
from condu_bench.registries import METHODS
from condu_bench.synthetic.domains import domain_classnames


@METHODS.register("mergetune_pull")
class MergeTunePull(MergeTune):
    name: ClassVar[str] = "mergetune_pull"

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        self.pull: dict[str, dict[str, float]] = {}

    @torch.no_grad()
    def after_task(self, task: TaskInfo, ctx: RunContext) -> None:
        domain = task.name.split("/")[0]
        base = list(task.data.classnames)
        novel = [c for c in domain_classnames(domain) if c not in base]
        scores = {}
        for half, names in (("base", base), ("novel", novel)):
            zeroshot = text_classifier(ctx.model, ctx.tokenizer, names, task.data.templates, ctx.device)
            for label, context in (("init", self.zeroshot_ctx), ("coop", self.finetuned.ctx), ("mergetune", self.prompt.ctx)):
                feats = F.normalize(raw_class_features(self.prompt, names, context), dim=-1)
                scores[f"{half}/{label}"] = round(float((feats * zeroshot).sum(-1).mean()), 4)
        self.pull[domain] = scores
        super().after_task(task, ctx)

    def report(self) -> dict[str, Any]:
        return {**super().report(), "feature_pull": dict(self.pull)}

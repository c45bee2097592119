"""Why task-agnostic ConDU trails task-known ConDU on the embedded world: who wins the vote of theta_0 and the top-K
experts on a learned domain.

A method plugin, ``condu_votes``: ConDU itself, plus, in the task-agnostic evaluation after the last task, per domain:
the accuracy of theta_0 alone, of the domain's own decoupled expert alone, of the released routed mean, and of theta_0
averaged with the own expert; each model's mean top-1 minus top-2 logit gap (at the evaluation's 100 * cos); and how
often routing puts the own expert among the top K and first. They land in ``metrics.json`` under
``method_report.votes``.

    condu-bench run synthetic_mtil_task_agnostic --plugin docs/experiments/condu_agnostic_votes.py \\
        methods=condu_votes seeds=0 --out /tmp/votes     # about 2 minutes on 2 CPU cores

Session 7 (world version 6, tiny CLIP pretrained with seed 0, training seed 0): the own expert is among the top 4
for 99-100 % of every domain's images, but theta_0's logit gap is 9-22 against the own expert's 5-10, so the mean
follows theta_0: shapes 42 % (theta_0), 89 % (expert), 58 % (routed mean); colours 66 / 98 / 87; textures
56 / 89 / 62.

Session 8 added every other domain's decoupled expert alone (``other_expert:<domain>``) and the mean of the routed
experts without theta_0 (``routed_experts_only``): the other experts score about as theta_0 does (shapes: 42-60 %
against theta_0's 42 %; digits: 38.6-52.4 % against 55.6 %), and the experts-only mean is 65 % on shapes and 49 % on
digits against the own expert's 89 % and 67 %. So the vote has one informed voter of five, whichever is dropped.

The evaluator hands ``logits`` images, not labels; to score accuracies here the plugin reads the labels of the batch
being evaluated from the evaluation loop (a patch of ``EvalSet.batches`` made when the plugin is imported, so only
runs that load this file are affected).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

import torch

from condu_bench.baselines.condu import ConDU
from condu_bench.models.classifier import cosine_logits, image_features
from condu_bench.registries import METHODS
from condu_bench.training import evaluate

_current_labels: dict[str, torch.Tensor] = {}
_plain_batches = evaluate.EvalSet.batches


def _batches_keeping_labels(self, *args, **kwargs):
    for images, labels in _plain_batches(self, *args, **kwargs):
        _current_labels["batch"] = labels
        yield images, labels


evaluate.EvalSet.batches = _batches_keeping_labels


def _gap(logits: torch.Tensor) -> float:
    top = logits.topk(2, dim=1).values
    return float((top[:, 0] - top[:, 1]).sum())


@METHODS.register("condu_votes")
class ConDUVotes(ConDU):
    """ConDU, reporting the task-agnostic vote on each learned domain after the last task."""

    name: ClassVar[str] = "condu_votes"

    def __init__(self, config: Any = None):
        super().__init__(config)
        # per evaluation row (tasks learned so far) and domain; the report shows the last row
        self.votes: dict[int, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))

    def routed_logits(self, images: torch.Tensor, space: list, ctx) -> torch.Tensor:
        routed = super().routed_logits(images, space, ctx)
        if len(space) == 1 and space[0].name in self.task_names:  # a learned domain, scored over its own classes
            self.count(images, space, routed, ctx)
        return routed

    @torch.no_grad()
    def count(self, images: torch.Tensor, space: list, routed: torch.Tensor, ctx) -> None:
        labels = _current_labels["batch"].to(images.device)
        own = self.task_names.index(space[0].name)
        base_feats = self.base_features(images, ctx)
        theta0 = cosine_logits(base_feats, self.classifier("base", self.base, space, ctx))
        model = self.load_expert(own, ctx)
        expert = cosine_logits(image_features(model, images), self.classifier(("expert", own), model, space, ctx))
        _, top_tasks = self.routing(base_feats)
        k = top_tasks.shape[1]
        experts_only = ((k + 1) * routed - theta0) / k  # the routed mean is (theta_0 + the K experts) / (K + 1)
        tally = self.votes[len(self.task_names)][space[0].name]
        tally["images"] += len(images)
        for key, logits in (("theta0", theta0), ("expert", expert), ("routed_mean", routed),
                            ("theta0_and_expert", (theta0 + expert) / 2), ("routed_experts_only", experts_only)):
            tally[f"accuracy/{key}"] += float((logits.argmax(1) == labels).sum())
        for other, name in enumerate(self.task_names):  # what every decoupled expert knows of this domain
            if other != own:
                model = self.load_expert(other, ctx)
                logits = cosine_logits(image_features(model, images), self.classifier(("expert", other), model, space, ctx))
                tally[f"accuracy/other_expert:{name}"] += float((logits.argmax(1) == labels).sum())
        for key, logits in (("theta0", theta0), ("expert", expert), ("routed_mean", routed)):
            tally[f"logit_gap/{key}"] += _gap(logits)
        tally["routing/own_in_top_k"] += float((top_tasks == own).any(1).sum())
        tally["routing/own_first"] += float((top_tasks[:, 0] == own).sum())

    def report(self) -> dict[str, Any]:
        out = super().report()
        last = self.votes[max(self.votes)] if self.votes else {}
        out["votes"] = {
            domain: {key: round(value / tally["images"] * (1 if key.startswith("logit_gap") else 100), 2)
                     for key, value in tally.items() if key != "images"}
            for domain, tally in last.items()
        }
        return out

"""MergeTune's objectives (Wang et al., "MergeTune: Continued Fine-Tuning of Vision-Language Models", ICLR 2026).

Continued fine-tuning looks for parameters w with low-loss linear paths to both the zero-shot solution w_zs and a
fine-tuned solution w_ft (e.g. CoOp's prompt). Two variants, both on plain tensors:

``released`` -- what ``Surrey-UP-Lab/MERGETUNE`` (``trainers/kgcoop_coop_LMC.py``) trains and the paper's tables report.
The path lives in text-feature space:

- f_w, f_ft: the class features the learned and the fine-tuned prompts give, as the text encoder returns them
  (not normalised: the reference interpolates the raw features and normalises after);
- main = CE(s * img . norm(f_w)) + W * (1 - mean_c cos(norm(f_w)_c, f_zs_c)), f_zs the normalised features of the
  hand-crafted zero-shot prompts (KgCoOp's term; W = 10 on CoOp, 8 on KgCoOp);
- path = mean over t in {0.1, 0.3, 0.5, 0.7, 0.9} (``np.arange(0.1, 1.01, 1 / 5)``) of
  CE(s * img . norm(f_ft + t (f_w - f_ft)));
- loss = main + path_weight * path (path_weight = ``W_LMC`` = 1.0). f_ft is a constant (frozen fine-tuned prompt).

``released`` on a base that trains model weights (``trainers/mma_LMC.py``, MMA + MergeTune; here CLIPFit): no
fine-tuned prompt stays frozen beside the learned one, so the path runs from the learned class features to the
zero-shot ones, and the image features are the current model's:

- main = the base method's own training loss (MMA's CE; CLIPFit's CE + 8 * cosine pull);
- path = mean over t in {0.1, ..., 0.9} of CE(s * img . norm(f_w + t (f_zs - f_w))), f_w raw, f_zs normalised, as
  the reference mixes them (:func:`zeroshot_path_loss`);
- loss = main + W_LMC * path (W_LMC = 10, the reference README's MMA command).

``paper`` -- the parameter-space objective of the paper's method section:
L(w) = L_task(w) + lambda ||w - w_zs||^2 + beta * mean_{alpha in {0, 1/N, ..., (N-1)/N}} L_task(w_ft + alpha (w - w_ft)),
started from w_0 = (1 - tau) w_zs + tau w_ft. ||.||^2 is the squared L2 norm summed over every tensor of w.
The alpha = 0 point is the fine-tuned solution itself: it adds a constant (no gradient) and is kept so that the value
is the paper's mean over N points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

VARIANTS = ("released", "paper")
COSINE_EPS = 1e-7  # the reference's nn.CosineSimilarity(eps=1e-07)
RELEASED_START = 0.1  # the reference's first path point
ANCHOR_WEIGHTS = {"coop": 10.0, "kgcoop": 8.0}  # W of the reference's scripts (coop_LMC passes 10.0; kgcoop_LMC keeps the default 8.0)

Params = Mapping[str, Tensor]


@dataclass(frozen=True)
class ContinuationOptions:
    """The options every MergeTune plugin shares (mixed into each plugin's ``Config``)."""

    variant: str = "released"  # released (the paper's tables) | paper
    from_run: str | None = None  # a finished base run (its run directory, or the output directory holding it)
    base_recipe: dict[str, Any] = field(default_factory=dict)  # train keys over the base's recipe (no from_run)
    path_samples: int = 5  # released: NUM_SAMPLES (t = 0.1, 0.3, .. for 5)
    lam: float = 12.0  # paper: lambda (stable 8-16)
    beta: float = 0.3  # paper: beta (stable 0.1-0.5)
    tau: float = 0.5  # paper: tau (stable 0.3-0.6)
    n_alpha: int = 5  # paper: N_alpha

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {self.variant!r}")
        if self.path_samples < 1 or self.n_alpha < 1:
            raise ValueError("path_samples and n_alpha must be at least 1")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], not {self.tau}")


def released_path_points(num_samples: int = 5) -> list[float]:
    """The reference's ``np.arange(0.1, 1.01, 1 / num_samples)``: 0.1, 0.3, 0.5, 0.7, 0.9 for 5 samples."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, not {num_samples}")
    step = 1.0 / num_samples
    points, i = [], 0
    while RELEASED_START + i * step < 1.01:
        points.append(RELEASED_START + i * step)
        i += 1
    return points


def paper_path_points(n_alpha: int = 5) -> list[float]:
    """N evenly spaced alphas in [0, 1): 0, 1/N, ..., (N-1)/N."""
    if n_alpha < 1:
        raise ValueError(f"n_alpha must be at least 1, not {n_alpha}")
    return [i / n_alpha for i in range(n_alpha)]


def cosine_anchor(class_feats: Tensor, zeroshot_feats: Tensor) -> Tensor:
    """1 - mean over classes of cos(class_feats_c, zeroshot_feats_c)."""
    return 1.0 - F.cosine_similarity(class_feats, zeroshot_feats, dim=-1, eps=COSINE_EPS).mean()


def feature_logits(image_feats: Tensor, class_feats: Tensor, logit_scale: Tensor | float) -> Tensor:
    """``logit_scale * image . norm(class)``; image features are expected normalised already."""
    return logit_scale * image_feats @ F.normalize(class_feats, dim=-1).t()


@dataclass
class ReleasedLoss:
    total: Tensor
    task: Tensor  # CE of the learned prompt
    anchor: Tensor  # 1 - mean cos to the zero-shot features (before the weight W)
    path: Tensor  # mean CE over the path points (before path_weight)


def released_loss(image_feats: Tensor, labels: Tensor, learned_feats: Tensor, finetuned_feats: Tensor,
                  zeroshot_feats: Tensor, logit_scale: Tensor | float, anchor_weight: float, path_weight: float = 1.0,
                  path_points: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9), label_smoothing: float = 0.0) -> ReleasedLoss:
    """The released code's loss for one batch.

    ``image_feats``: (B, D) normalised; ``learned_feats`` / ``finetuned_feats``: (C, D) raw text-encoder outputs of the
    learned and the frozen fine-tuned prompts; ``zeroshot_feats``: (C, D) normalised hand-crafted class features.
    """
    finetuned_feats = finetuned_feats.detach()
    task = F.cross_entropy(feature_logits(image_feats, learned_feats, logit_scale), labels, label_smoothing=label_smoothing)
    anchor = cosine_anchor(F.normalize(learned_feats, dim=-1), zeroshot_feats)
    path = torch.stack([
        F.cross_entropy(feature_logits(image_feats, finetuned_feats + t * (learned_feats - finetuned_feats), logit_scale),
                        labels, label_smoothing=label_smoothing)
        for t in path_points
    ]).mean()
    return ReleasedLoss(task + anchor_weight * anchor + path_weight * path, task, anchor, path)


def zeroshot_path_loss(image_feats: Tensor, labels: Tensor, learned_feats: Tensor, zeroshot_feats: Tensor,
                       logit_scale: Tensor | float, path_points: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
                       label_smoothing: float = 0.0) -> Tensor:
    """Mean over t of CE(s * img . norm(f_w + t (f_zs - f_w))): the released path of a weight-training base.

    ``learned_feats``: (C, D) raw text-encoder outputs under the trained weights (differentiable);
    ``zeroshot_feats``: (C, D) the frozen zero-shot classifier, normalised; ``image_feats``: (B, D) normalised.
    """
    zeroshot_feats = zeroshot_feats.detach()
    return torch.stack([
        F.cross_entropy(feature_logits(image_feats, learned_feats + t * (zeroshot_feats - learned_feats), logit_scale),
                        labels, label_smoothing=label_smoothing)
        for t in path_points
    ]).mean()


def paper_init(zeroshot: Params, finetuned: Params, tau: float) -> dict[str, Tensor]:
    """w_0 = (1 - tau) w_zs + tau w_ft, per tensor."""
    check_same_keys(zeroshot, finetuned)
    return {k: (1.0 - tau) * zeroshot[k] + tau * finetuned[k] for k in finetuned}


def interpolate(start: Params, end: Params, alpha: float) -> dict[str, Tensor]:
    """start + alpha (end - start), per tensor (differentiable in both)."""
    return {k: start[k] + alpha * (end[k] - start[k]) for k in start}


def squared_distance(a: Params, b: Params) -> Tensor:
    """||a - b||^2 summed over every tensor."""
    return sum(((a[k] - b[k].detach()) ** 2).sum() for k in a)


@dataclass
class PaperLoss:
    total: Tensor
    task: Tensor  # L_task(w)
    distance: Tensor  # ||w - w_zs||^2 (before lambda)
    path: Tensor  # mean over alpha of L_task on the path to w_ft (before beta)


def paper_loss(task_loss: Callable[[Params], Tensor], params: Params, zeroshot: Params, finetuned: Params,
               lam: float, beta: float, path_points: Sequence[float]) -> PaperLoss:
    """The paper's objective at ``params``; ``task_loss`` maps a parameter dict to the task loss (batch fixed)."""
    check_same_keys(params, zeroshot)
    check_same_keys(params, finetuned)
    frozen_ft = {k: v.detach() for k, v in finetuned.items()}
    task = task_loss(params)
    distance = squared_distance(params, zeroshot)
    path = torch.stack([task_loss(interpolate(frozen_ft, params, a)) for a in path_points]).mean()
    return PaperLoss(task + lam * distance + beta * path, task, distance, path)


def check_same_keys(a: Params, b: Params) -> None:
    if set(a) != set(b):
        raise ValueError(f"parameter sets differ: {sorted(set(a) ^ set(b))}")
    for k in a:
        if a[k].shape != b[k].shape:
            raise ValueError(f"parameter {k!r}: shape {tuple(a[k].shape)} != {tuple(b[k].shape)}")

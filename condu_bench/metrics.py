"""Protocol metrics (spec: shared/spec/protocols.md), pure numpy so that tables and tests never import torch.

MTIL: A[j, i] = accuracy (%) on dataset i after training step j, rows and columns in training order.
  Transfer_i = mean_{j<i} A[j, i] for i >= 2 (the first dataset has no Transfer entry),
  Avg_i      = mean_j A[j, i],
  Last_i     = A[T, i];
  each headline number is the unweighted mean of its per-dataset entries (as the papers print them).
Base-to-novel: HM = 2BN / (B + N); the average row's HM is the HM of the averaged Base and Novel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _check_matrix(matrix, dataset_names: Sequence[str]) -> np.ndarray:
    a = np.asarray(matrix, dtype=float)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"accuracy matrix must be square T×T (rows = training steps), got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError("accuracy matrix is empty (T = 0)")
    if len(dataset_names) != a.shape[1]:
        raise ValueError(
            f"accuracy matrix has {a.shape[1]} columns but {len(dataset_names)} dataset names were given"
        )
    if len(set(dataset_names)) != len(dataset_names):
        raise ValueError(f"dataset names must be unique, got {list(dataset_names)}")
    if not np.all(np.isfinite(a)):
        bad = [(int(j), int(i)) for j, i in zip(*np.nonzero(~np.isfinite(a)))]
        raise ValueError(f"accuracy matrix has non-finite values at (step, dataset) {bad[:5]}")
    return a


def mtil_metrics(matrix, dataset_names: Sequence[str]) -> dict:
    """MTIL Transfer / Avg / Last of a T×T accuracy matrix (percent).

    Returns ``{"transfer", "avg", "last", "per_dataset": {name: {"transfer", "avg", "last"}}}``.
    The first dataset's ``transfer`` is None (nothing was trained before it could be measured "before");
    with T = 1 there is no Transfer entry at all, so the top-level ``transfer`` is None too.
    """
    a = _check_matrix(matrix, dataset_names)
    t = a.shape[0]
    per_dataset: dict[str, dict] = {}
    for i, name in enumerate(dataset_names):
        per_dataset[name] = {
            # float() so JSON gets plain numbers, not numpy scalars
            "transfer": float(a[:i, i].mean()) if i > 0 else None,
            "avg": float(a[:, i].mean()),
            "last": float(a[t - 1, i]),
        }
    transfers = [d["transfer"] for d in per_dataset.values() if d["transfer"] is not None]
    return {
        "transfer": float(np.mean(transfers)) if transfers else None,
        "avg": float(np.mean([d["avg"] for d in per_dataset.values()])),
        "last": float(np.mean([d["last"] for d in per_dataset.values()])),
        "per_dataset": per_dataset,
    }


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2BN / (B + N); 0 when both are 0 (no accuracy on either side)."""
    base, novel = float(base), float(novel)
    if base < 0 or novel < 0:
        raise ValueError(f"accuracies must be non-negative, got base={base}, novel={novel}")
    if base + novel == 0:
        return 0.0
    return 2.0 * base * novel / (base + novel)


def base_to_novel_metrics(per_dataset: Mapping[str, tuple[float, float]]) -> dict:
    """Per-dataset base/novel/HM plus the average row, ``{"base", "novel", "hm", "per_dataset"}``.

    The average HM is the HM of the averaged base and novel accuracies (CoCoOp convention),
    which differs from the mean of per-dataset HMs.
    """
    if not per_dataset:
        raise ValueError("base_to_novel_metrics needs at least one dataset")
    rows: dict[str, dict] = {}
    for name, pair in per_dataset.items():
        try:
            base, novel = (float(x) for x in pair)
        except (TypeError, ValueError) as e:
            raise ValueError(f"dataset {name!r}: expected (base_acc, novel_acc), got {pair!r}") from e
        if not (np.isfinite(base) and np.isfinite(novel)):
            raise ValueError(f"dataset {name!r}: non-finite accuracy (base={base}, novel={novel})")
        rows[name] = {"base": base, "novel": novel, "hm": harmonic_mean(base, novel)}
    base = float(np.mean([r["base"] for r in rows.values()]))
    novel = float(np.mean([r["novel"] for r in rows.values()]))
    return {"base": base, "novel": novel, "hm": harmonic_mean(base, novel), "per_dataset": rows}


def target_average(per_dataset: Mapping[str, float]) -> float:
    """Unweighted mean over target datasets (cross-dataset Avg-C, domain-generalisation Avg-D)."""
    if not per_dataset:
        raise ValueError("target_average needs at least one target dataset")
    values = np.array([float(v) for v in per_dataset.values()])
    if not np.all(np.isfinite(values)):
        raise ValueError(f"non-finite target accuracy in {dict(per_dataset)}")
    return float(values.mean())


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b rank correlation of two paired score lists (ties handled as in tau-b).

    Used to compare a leaderboard's order with a published one (e.g. the synthetic world against MTIL order I).
    """
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("kendall_tau_b needs two lists of the same length, at least 2")
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denominator = np.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    if denominator == 0:
        raise ValueError("kendall_tau_b is undefined when one list is constant")
    return float((concordant - discordant) / denominator)


# ---------------------------------------------------------------- metrics beyond the papers' tables

def backward_transfer(matrix, dataset_names: Sequence[str]) -> dict:
    """Backward transfer (Lopez-Paz & Ranzato, GEM): BWT_i = A[T, i] - A[i, i] for every dataset but the last.

    Negative = forgetting. Returns ``{"bwt": mean over i < T, "per_dataset": {name: BWT_i or None}}``;
    the last dataset (and every dataset when T = 1) has no entry, ``bwt`` is then None.
    """
    a = _check_matrix(matrix, dataset_names)
    t = a.shape[0]
    per = {name: (float(a[t - 1, i] - a[i, i]) if i < t - 1 else None) for i, name in enumerate(dataset_names)}
    values = [v for v in per.values() if v is not None]
    return {"bwt": float(np.mean(values)) if values else None, "per_dataset": per}


def forgetting(matrix, dataset_names: Sequence[str]) -> dict:
    """Forgetting (Chaudhry et al.): F_i = max_{i <= j < T} A[j, i] - A[T, i], the drop from the best accuracy
    dataset i had after being learned, for every dataset but the last. ``{"forgetting", "per_dataset"}`` as
    :func:`backward_transfer`."""
    a = _check_matrix(matrix, dataset_names)
    t = a.shape[0]
    per = {name: (float(a[i:t - 1, i].max() - a[t - 1, i]) if i < t - 1 else None) for i, name in enumerate(dataset_names)}
    values = [v for v in per.values() if v is not None]
    return {"forgetting": float(np.mean(values)) if values else None, "per_dataset": per}


def matrix_area(matrix, dataset_names: Sequence[str]) -> float:
    """Area under the seen-task accuracy curve: after each step j, the mean accuracy over the datasets learned so
    far (row j, columns 0..j: the lower triangle with the diagonal), averaged over the T steps (percent).

    The mean of the *whole* matrix would only repeat MTIL's Avg; this area weighs what has been learned and kept
    along the stream, not zero-shot transfer to datasets still ahead.
    """
    a = _check_matrix(matrix, dataset_names)
    return float(np.mean([a[j, : j + 1].mean() for j in range(a.shape[0])]))


def matrix_metrics(matrix, dataset_names: Sequence[str]) -> dict:
    """Backward transfer, forgetting and matrix area of one run: ``{"bwt", "forgetting", "area", "per_dataset"}``."""
    bwt, forget = backward_transfer(matrix, dataset_names), forgetting(matrix, dataset_names)
    return {
        "bwt": bwt["bwt"], "forgetting": forget["forgetting"], "area": matrix_area(matrix, dataset_names),
        "per_dataset": {n: {"bwt": bwt["per_dataset"][n], "forgetting": forget["per_dataset"][n]} for n in dataset_names},
    }

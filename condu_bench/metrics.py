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

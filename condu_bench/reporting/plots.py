"""PNG figures. matplotlib is imported inside the functions (with the Agg backend) so importing the
package stays cheap and never changes the backend of an interactive session that merely imports it."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from condu_bench.atomic_io import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: runs write files, they never open windows
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    """The figure as a file whose format follows the suffix (PNG by default), written atomically."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=120, format=path.suffix.lstrip(".") or "png")
    return atomic_write_bytes(path, buffer.getvalue())


def plot_accuracy_matrix(matrix, step_names: Sequence[str], column_names: Sequence[str], path, title: str = "") -> Path:
    """Heatmap of A[step, dataset] (%) with each value written in its cell."""
    a = np.asarray(matrix, dtype=float)
    if a.shape != (len(step_names), len(column_names)):
        raise ValueError(f"matrix shape {a.shape} does not match {len(step_names)}×{len(column_names)} names")
    plt = _pyplot()
    rows, cols = a.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.75 * cols + 2.5), max(3.0, 0.5 * rows + 2.0)))
    try:
        image = ax.imshow(a, cmap="viridis", vmin=0.0, vmax=100.0, aspect="auto")
        fig.colorbar(image, ax=ax, label="accuracy (%)")
        ax.set_xticks(range(cols), labels=list(column_names), rotation=45, ha="right")
        ax.set_yticks(range(rows), labels=list(step_names))
        ax.set_xlabel("evaluated dataset")
        ax.set_ylabel("after training on")
        if title:
            ax.set_title(title)
        for j in range(rows):
            for i in range(cols):
                # dark text on the bright (high) end of viridis, light text elsewhere
                ax.text(i, j, f"{a[j, i]:.1f}", ha="center", va="center", fontsize=7,
                        color="black" if a[j, i] > 60 else "white")
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)  # long benchmark sessions write many figures


def plot_metric_bars(leaderboard_df, path, metrics: Sequence[str] = ("transfer", "avg", "last")) -> Path:
    """Grouped bars, one group per method, one bar per metric (error bars from ``<metric>_std`` when present)."""
    metrics = [m for m in metrics if m in leaderboard_df.columns]
    if not metrics or leaderboard_df.empty:
        raise ValueError(f"leaderboard has none of the metric columns {list(metrics)} or no rows")
    plt = _pyplot()
    labels = [str(m) for m in leaderboard_df["method"]]
    x = np.arange(len(labels))
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels) + 2.0), 3.5))
    try:
        for k, metric in enumerate(metrics):
            values = leaderboard_df[metric].astype(float).to_numpy()
            std_col = f"{metric}_std"
            err = leaderboard_df[std_col].astype(float).fillna(0).to_numpy() if std_col in leaderboard_df else None
            ax.bar(x + (k - (len(metrics) - 1) / 2) * width, values, width, yerr=err, label=metric.capitalize(), capsize=2)
        ax.set_xticks(x, labels=labels, rotation=30, ha="right")
        ax.set_ylabel("accuracy (%)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside the bars
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)

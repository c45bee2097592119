"""Figures over several runs (PNG and PDF): accuracy along the stream, Transfer / Avg / Last bars with error bars over
seeds, base-vs-novel scatter with HM iso-lines. Every method has one fixed colour in every figure."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from condu_bench.reporting.collect import Group, label_groups
from condu_bench.reporting.plots import _pyplot, _save
from condu_bench.reporting.tables import METHOD_ALIASES

# Known methods take the palette in this order; other names a slot fixed by their hash, so a method keeps its
# colour whichever runs a figure shows.
_KNOWN = list(METHOD_ALIASES)
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
            "#756bb1", "#636363"]


def method_colour(method: str) -> str:
    if method in _KNOWN:
        return _PALETTE[_KNOWN.index(method) % len(_PALETTE)]
    return _PALETTE[int(hashlib.sha1(method.encode()).hexdigest(), 16) % len(_PALETTE)]


def _save_both(fig, stem: Path) -> list[Path]:
    return [_save(fig, stem.with_suffix(".png")), _save(fig, stem.with_suffix(".pdf"))]


def _mean_matrix(group: Group) -> tuple[np.ndarray, list[str]] | None:
    matrices = [r.matrix for r in group.runs if r.matrix is not None]
    if not matrices or any(m[2] != matrices[0][2] for m in matrices):
        return None
    return np.mean([m[0] for m in matrices], axis=0), matrices[0][2]


def plot_stream(groups: list[Group], stem) -> list[Path]:
    """One panel per dataset: its accuracy after each training step (seed mean), one line per method."""
    curves = {id(g): _mean_matrix(g) for g in groups}
    groups = [g for g in groups if curves[id(g)] is not None]
    if not groups:
        raise ValueError("no run with an accuracy matrix to plot along the stream")
    labels = label_groups(groups)
    datasets = curves[id(groups[0])][1]
    plt = _pyplot()
    cols = min(4, len(datasets))
    rows = -(-len(datasets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows + 0.6), squeeze=False, sharey=True)
    try:
        for k, name in enumerate(datasets):
            ax = axes[k // cols][k % cols]
            for g in groups:
                values, columns = curves[id(g)]
                if name in columns:
                    ax.plot(range(1, values.shape[0] + 1), values[:, columns.index(name)], marker="o", markersize=3,
                            color=method_colour(g.method), label=labels[id(g)])
            ax.axvline(k + 1, color="grey", linewidth=0.6, linestyle=":")  # the step that trains this dataset
            ax.set_title(name, fontsize=9)
            ax.set_xticks(range(1, len(datasets) + 1))
            ax.tick_params(labelsize=7)
        for k in range(len(datasets), rows * cols):
            axes[k // cols][k % cols].axis("off")
        for ax in axes[:, 0]:
            ax.set_ylabel("accuracy (%)", fontsize=8)
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.supxlabel("after training step (dotted: the step that trains this dataset)", fontsize=8)
        top = 1 - 0.5 / (2.6 * rows + 0.6)  # room for one legend line above the panels
        fig.tight_layout(rect=(0, 0, 1, top))
        fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=min(6, len(names)), fontsize=8,
                   frameon=False)
        return _save_both(fig, Path(stem))
    finally:
        plt.close(fig)


def plot_headline_bars(groups: list[Group], stem, metrics=(("transfer", "Transfer"), ("avg", "Avg."), ("last", "Last"))) -> list[Path]:
    """Grouped bars: one group per metric, one bar per method (its colour), error bars = std over seeds."""
    labels = label_groups(groups)
    plt = _pyplot()
    x = np.arange(len(metrics))
    width = 0.8 / max(1, len(groups))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(groups) + 3.0), 3.4))
    try:
        for k, g in enumerate(groups):
            stats = [g.headline(key) for key, _ in metrics]
            ax.bar(x + (k - (len(groups) - 1) / 2) * width, [s.mean if s.mean is not None else np.nan for s in stats], width,
                   yerr=[s.std or 0.0 for s in stats], capsize=2, color=method_colour(g.method),
                   label=f"{labels[id(g)]} (n={len(g.runs)})")
        ax.set_xticks(x, labels=[title for _, title in metrics])
        ax.set_ylabel("accuracy (%)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        fig.tight_layout()
        return _save_both(fig, Path(stem))
    finally:
        plt.close(fig)


def plot_base_novel(groups: list[Group], stem, published: dict[str, tuple[float, float]] | None = None) -> list[Path]:
    """Average Base (x) against Novel (y) per method, with iso-HM curves; published points as hollow markers."""
    labels = label_groups(groups)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    try:
        points = []
        for g in groups:
            base, novel = g.headline("base"), g.headline("novel")
            if base.empty or novel.empty:
                continue
            ax.errorbar(base.mean, novel.mean, xerr=base.std or 0, yerr=novel.std or 0, fmt="o",
                        color=method_colour(g.method), label=labels[id(g)], capsize=2)
            points.append((base.mean, novel.mean))
        for k, (name, (b, n)) in enumerate(sorted((published or {}).items(), key=lambda item: item[1])):
            ax.scatter([b], [n], facecolors="none", edgecolors="black", s=30)
            # neighbouring published points sit close together: stagger their labels vertically
            ax.annotate(name, (b, n), fontsize=6, xytext=(4, -8 + 8 * (k % 3)), textcoords="offset points")
            points.append((b, n))
        if not points:
            raise ValueError("no base-to-novel result to plot")
        lo = max(0.0, min(min(p) for p in points) - 10)
        hi = min(100.0, max(max(p) for p in points) + 10)
        b = np.linspace(lo + 1e-6, hi, 200)
        for hm in np.arange(10, 100, 5):
            n = hm * b / (2 * b - hm)  # HM = 2bn / (b + n) solved for n
            ok = (2 * b - hm > 0) & (n >= lo) & (n <= hi)
            if ok.any():
                ax.plot(b[ok], n[ok], color="lightgrey", linewidth=0.7, zorder=0)
                ax.annotate(f"HM {hm:.0f}", (b[ok][-1], n[ok][-1]), fontsize=6, color="grey")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("Base accuracy (%)")
        ax.set_ylabel("Novel accuracy (%)")
        ax.legend(fontsize=7, loc="lower left")
        fig.tight_layout()
        return _save_both(fig, Path(stem))
    finally:
        plt.close(fig)

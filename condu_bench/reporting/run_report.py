"""Human-readable outputs of a run: ``report.md`` + ``accuracy_matrix.png`` per run, and the leaderboard
(``leaderboard.md`` / ``leaderboard.csv``) at the top of a run output directory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from condu_bench.atomic_io import atomic_write_text
from condu_bench.reporting.plots import plot_accuracy_matrix, plot_metric_bars
from condu_bench.reporting.tables import (
    PER_DATASET_METRICS,
    PROTOCOL_METRICS,
    protocol_decimals,
    leaderboard,
    match_method,
    results_frame,
    to_csv,
    to_markdown,
)


def _per_dataset_rows(metrics: Mapping) -> pd.DataFrame:
    """Rows = datasets, columns = the protocol's per-dataset metrics, then the headline ``average`` row."""
    keys = PER_DATASET_METRICS.get(metrics.get("protocol"), ())
    per = metrics.get("per_dataset") or {}
    rows = [{"dataset": name, **{k: values.get(k) for k in keys}} for name, values in per.items()]
    headline = {k: metrics.get("average" if k == "accuracy" else k) for k in keys}
    rows.append({"dataset": "average", **headline})
    df = pd.DataFrame(rows, columns=["dataset", *keys])
    return df.astype({k: float for k in keys})  # None -> NaN so the writer prints "-"


def write_run_report(run_dir, metrics: Mapping, matrix, step_names: Sequence[str] | None,
                     column_names: Sequence[str] | None, published_rows: pd.DataFrame | None = None) -> Path:
    """Write ``report.md`` (and ``accuracy_matrix.png`` when a matrix is given) into ``run_dir``; returns the report path.

    ``published_rows`` may hold any published table; only the rows of this run's method are shown.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    protocol = metrics.get("protocol", "")
    dec = protocol_decimals(protocol)
    method, scenario, seed = metrics.get("method", "?"), metrics.get("scenario", "?"), metrics.get("seed", "?")
    out = [f"# {method} on {scenario} (seed {seed})", ""]
    for label, key in (("Scenario", "scenario"), ("Protocol", "protocol"), ("Method", "method"), ("Seed", "seed"),
                       ("Config hash", "config_hash"), ("Split convention", "split_convention"),
                       ("Wall time (s)", "wall_time_s")):
        if metrics.get(key) is not None:
            out.append(f"- {label}: `{metrics[key]}`")
    headline = list(PROTOCOL_METRICS.get(protocol, ()))
    if headline:
        summary = pd.DataFrame([{m: metrics.get(m) for m in headline}], columns=headline).astype(float)
        out += ["", "## Averages", "", to_markdown(summary, dec)]
    if matrix is not None:
        title = f"{method} on {scenario} (seed {seed})"
        plot_accuracy_matrix(matrix, step_names, column_names, run_dir / "accuracy_matrix.png", title)
        table = pd.DataFrame(matrix, columns=list(column_names))
        table.insert(0, "step", list(step_names))
        out += ["", "## Accuracy matrix (%)", "",
                "Row = the task just learned, column = the dataset evaluated.", "",
                to_markdown(table, dec), "![accuracy matrix](accuracy_matrix.png)"]
    if metrics.get("per_dataset"):
        out += ["", "## Per dataset", "", to_markdown(_per_dataset_rows(metrics), dec)]
    out += ["", "## Published numbers", ""]
    paper = match_method(method, published_rows["method"]) if published_rows is not None and "method" in published_rows else None
    if paper is None:
        out.append(f"No published numbers for `{method}`.")
    else:
        rows = published_rows[published_rows["method"] == paper]
        cols = ["method", *(m for m in headline if m in rows), *(c for c in ("source",) if c in rows)]
        out.append(to_markdown(rows[cols].reset_index(drop=True), dec))
    return atomic_write_text(run_dir / "report.md", "\n".join(out).rstrip() + "\n")


def write_leaderboard(out_dir, metrics_list: Sequence[Mapping]) -> str:
    """``leaderboard.md`` + ``leaderboard.csv`` over the given runs (seeds averaged); returns the Markdown."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not metrics_list:
        text = "No runs.\n"
        atomic_write_text(out_dir / "leaderboard.md", text)
        to_csv(pd.DataFrame(columns=["protocol", "scenario", "method", "n_seeds"]), out_dir / "leaderboard.csv")
        return text
    df = results_frame(list(metrics_list))
    protocols = list(dict.fromkeys(df["protocol"]))  # first-seen order
    boards, parts = [], []
    for protocol in protocols:
        board = leaderboard(df, protocol)
        boards.append(board.assign(protocol=protocol)[["protocol", *board.columns]])
        table = to_markdown(board, protocol_decimals(protocol))
        parts.append(table if len(protocols) == 1 else f"### {protocol}\n\n{table}")
    text = "\n".join(parts)
    figures = []
    for protocol, board in zip(protocols, boards):
        name = "leaderboard.png" if len(protocols) == 1 else f"leaderboard_{protocol}.png"
        plot_metric_bars(board, out_dir / name, PROTOCOL_METRICS[protocol])
        figures.append(f"![{protocol} leaderboard]({name})")
    atomic_write_text(out_dir / "leaderboard.md", text + "\n\n" + "\n".join(figures) + "\n")
    to_csv(pd.concat(boards, ignore_index=True), out_dir / "leaderboard.csv")
    return text

"""Tables in the papers' layouts, built from grouped runs (:mod:`condu_bench.reporting.collect`) and the published
numbers, as a small data model (:class:`Table`) that the Markdown / LaTeX / CSV / HTML writers render.

Layouts: MTIL (one block per metric Transfer / Avg / Last: methods as rows, datasets in training order plus the
average), base-to-novel (Base / Novel / HM per dataset and the average), cross-dataset (Avg-C) and domain
generalisation (Avg-D) (source column, targets, and the unweighted target average), a cost block and a block of
metrics beyond the papers' (backward transfer, forgetting, seen-task area).

Each harness row may be followed by the paper's row (``published``, with its source) and the difference
(``Δ``, harness minus paper). A row with no run keeps its cells empty, shown as ``—``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from condu_bench import metrics as protocol_metrics
from condu_bench.reporting.collect import EMPTY, Group, Stat, label_groups
from condu_bench.reporting.matrix_io import read_accuracy_matrix
from condu_bench.reporting.tables import match_method, normalise_name

RUN, PUBLISHED, DIFF = "run", "published", "diff"
EMPTY_MARK = "—"
MTIL_METRICS = (("transfer", "Transfer"), ("avg", "Avg."), ("last", "Last"))


@dataclass
class Row:
    label: str
    kind: str  # RUN, PUBLISHED or DIFF
    cells: dict[str, Stat]
    source: str = ""
    seeds: int = 0

    def value(self, column: str) -> float | None:
        return self.cells.get(column, EMPTY).mean


@dataclass
class Table:
    name: str  # file stem
    title: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    decimals: int = 1
    higher_is_better: bool | None = True  # None: no ranking (e.g. the cost block)
    notes: list[str] = field(default_factory=list)

    def ranks(self, column: str) -> dict[int, int]:
        """Row index -> 1 (best) or 2 (second) among run and published rows; ties share a rank."""
        if self.higher_is_better is None:
            return {}
        values = sorted({round(r.value(column), self.decimals) for r in self.rows
                         if r.kind != DIFF and r.value(column) is not None}, reverse=self.higher_is_better)
        out = {}
        for k, r in enumerate(self.rows):
            v = r.value(column)
            if r.kind != DIFF and v is not None and round(v, self.decimals) in values[:2]:
                out[k] = values.index(round(v, self.decimals)) + 1
        return out


# ---------------------------------------------------------------- published numbers

PUBLISHED_NAMES_OF_MATRIX_FILES = {"continual-ft": "Continual-FT", "icarl": "iCaRL", "lwf-vr": "LwF-VR", "lwf": "LwF",
                                   "wise-ft": "WiSE-FT", "zscl-star": "ZSCL*", "zscl": "ZSCL"}


@dataclass
class Published:
    """One paper table: headline numbers per method, and per-dataset numbers where they were released."""

    headline: dict[str, dict[str, float]]  # method -> metric -> value
    per_dataset: dict[str, dict[str, dict[str, float]]]  # method -> metric -> canonical dataset key -> value
    sources: dict[str, str]

    def methods(self) -> list[str]:
        return list(self.headline)


def dataset_key(name: str) -> str:
    """Names that mean the same dataset agree (``Food`` = ``Food101``; case and punctuation ignored)."""
    from condu_bench.datasets.catalog import canonical_name

    return normalise_name(canonical_name(str(name)))


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def load_published(csv_path, matrices_dir=None, order: str | None = None, per_dataset_csv=None) -> Published:
    """A published CSV (method, metrics..., source), with per-dataset numbers from ZSCL's released matrices
    (``<order>_<method>.csv`` in ``matrices_dir``, MTIL formulas applied) and/or a per-dataset CSV."""
    table = pd.read_csv(csv_path)
    metric_columns = [c for c in table.columns if c not in ("method", "source", "verified")]
    headline = {r["method"]: {m: _number(r[m]) for m in metric_columns} for _, r in table.iterrows()}
    sources = {r["method"]: str(r.get("source", "published")) for _, r in table.iterrows()}
    per: dict[str, dict[str, dict[str, float]]] = {}
    if per_dataset_csv is not None and Path(per_dataset_csv).is_file():
        pd_table = pd.read_csv(per_dataset_csv)
        datasets = [c for c in pd_table.columns if c not in ("method", "metric", "source", "average")]
        for _, r in pd_table.iterrows():
            metrics = [r["metric"]] if "metric" in pd_table else ["hm"]
            if metrics == ["all"]:
                metrics = [m for m, _ in MTIL_METRICS]
            for m in metrics:
                per.setdefault(r["method"], {})[m] = {dataset_key(d): _number(r[d]) for d in datasets if _number(r[d]) is not None}
    if matrices_dir is not None and order is not None:
        for path in sorted(Path(matrices_dir).glob(f"{order}_*.csv")):
            file_method = path.stem[len(order) + 1:]
            method = PUBLISHED_NAMES_OF_MATRIX_FILES.get(file_method, file_method)
            values, _steps, columns = read_accuracy_matrix(path)
            result = protocol_metrics.mtil_metrics(values, columns)
            for m, _ in MTIL_METRICS:
                per.setdefault(method, {})[m] = {dataset_key(d): v[m] for d, v in result["per_dataset"].items() if v[m] is not None}
            if method not in headline:  # e.g. order-II Continual-FT: released matrix, no printed row
                headline[method] = {m: result[m] for m, _ in MTIL_METRICS}
                sources[method] = f"ZSCL released matrix {path.name}"
    return Published(headline, per, sources)


# ---------------------------------------------------------------- building blocks

def _group_cells(group: Group, columns: list[tuple[str, str | None, str]]) -> dict[str, Stat]:
    """columns: (column label, dataset or None for the headline, metric key)."""
    cells = {}
    for label, dataset, key in columns:
        cells[label] = group.headline(key) if dataset is None else group.per_dataset(dataset, key)
    return cells


def _published_cells(published: Published, method: str, columns: list[tuple[str, str | None, str]]) -> dict[str, Stat]:
    cells = {}
    for label, dataset, key in columns:
        if dataset is None:
            value = published.headline.get(method, {}).get(key)
        else:
            value = published.per_dataset.get(method, {}).get(key, {}).get(dataset_key(dataset))
        cells[label] = Stat(value, None, 1) if value is not None else EMPTY
    return cells


@dataclass(frozen=True)
class Wanted:
    """A row a paper table must have: the runs of ``method`` whose resolved config has every ``KEY=VALUE`` of
    ``overrides`` (dotted keys), compared with the paper's row ``paper`` (None: matched by name)."""

    label: str
    method: str
    overrides: tuple[str, ...] = ()
    paper: str | None = None

    def selects(self, group: Group) -> bool:
        return group.method == self.method and all(_config_value(group, o) for o in self.overrides)


def _config_value(group: Group, override: str) -> bool:
    key, _, expected = override.partition("=")
    for run in group.runs:
        node = run.config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None or str(node).lower() != expected.lower():
            return False
    return True


def _rows(groups: list[Group], columns, published: Published | None, wanted: list | None, placeholders: bool) -> list[Row]:
    """Harness rows (each followed by its paper row and the difference); ``wanted`` rows (Wanted or method names)
    come first in that order, one with no run as an empty row when ``placeholders``; then every other run."""
    labels = label_groups(groups)
    paper_names = published.methods() if published else []
    entries: list[tuple[str, list[Group], str | None]] = []
    used: set[int] = set()
    for w in wanted or []:
        w = Wanted(w, w) if isinstance(w, str) else w
        chosen = [g for g in groups if id(g) not in used and w.selects(g)]
        used.update(id(g) for g in chosen)
        paper = w.paper if w.paper in paper_names else match_method(w.method, paper_names) if published else None
        entries.append((w.label, chosen, paper))
    entries += [(labels[id(g)], [g], match_method(g.method, paper_names) if published else None)
                for g in groups if id(g) not in used]
    rows: list[Row] = []
    shown_papers = set()
    for label, present, paper in entries:
        if not present and not placeholders:
            continue
        run_rows = [Row(label if len(present) == 1 else f"{label} [{g.config_key}]", RUN, _group_cells(g, columns),
                        "this harness", len(g.runs)) for g in present]
        if not run_rows:
            run_rows = [Row(label, RUN, {c[0]: EMPTY for c in columns}, "no run yet", 0)]
        for run_row in run_rows:
            rows.append(run_row)
            if paper is not None:
                pub = Row(f"{paper} (published)", PUBLISHED, _published_cells(published, paper, columns), published.sources[paper], 0)
                rows.append(pub)
                shown_papers.add(paper)
                diff = {}
                for column, *_ in columns:
                    a, b = run_row.value(column), pub.value(column)
                    diff[column] = Stat(a - b, None, 1) if a is not None and b is not None else EMPTY
                rows.append(Row(f"Δ {run_row.label} − paper", DIFF, diff))
    if published and placeholders:  # the paper's other rows (methods the harness does not have), for reference
        for paper in paper_names:
            if paper not in shown_papers:
                rows.append(Row(f"{paper} (published)", PUBLISHED, _published_cells(published, paper, columns), published.sources[paper]))
    return rows


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(text)).strip("_") or "results"


def _datasets(groups: list[Group]) -> list[str]:
    names: list[str] = []
    for g in groups:
        names += [n for n in g.datasets if n not in names]
    return names


def mtil_tables(scenario: str, groups: list[Group], published: Published | None = None,
                wanted: list | None = None, placeholders: bool = False) -> list[Table]:
    """Transfer, Avg. and Last blocks; columns = datasets in training order + Average (the run's headline)."""
    datasets = _datasets(groups)
    if not datasets and published:  # nothing run yet: the paper's datasets
        datasets = sorted({d for m in published.per_dataset.values() for v in m.values() for d in v})
    tables = []
    for key, title in MTIL_METRICS:
        columns = [(d, d, key) for d in datasets] + [("Average", None, key)]
        table = Table(f"mtil_{_slug(scenario)}_{key}", f"{scenario}: {title}", [c[0] for c in columns],
                      _rows(groups, columns, published, wanted, placeholders), decimals=1)
        if key == "transfer" and datasets:
            table.notes.append(f"Transfer has no entry for the first dataset ({datasets[0]}).")
        tables.append(table)
    return tables


def base_to_novel_table(scenario: str, groups: list[Group], published: Published | None = None,
                        wanted: list | None = None, placeholders: bool = False) -> Table:
    """Per dataset Base / Novel / HM, then the average (HM of the averaged Base and Novel)."""
    datasets = _datasets(groups)
    columns = [(f"{d} {label}", d, key) for d in datasets for key, label in (("base", "Base"), ("novel", "Novel"), ("hm", "HM"))]
    columns += [(f"Average {label}", None, key) for key, label in (("base", "Base"), ("novel", "Novel"), ("hm", "HM"))]
    table = Table(f"b2n_{_slug(scenario)}", f"{scenario}: base-to-novel", [c[0] for c in columns],
                  _rows(groups, columns, published, wanted, placeholders), decimals=2)
    table.notes.append("Average HM is the HM of the averaged Base and Novel accuracies (CoCoOp convention).")
    return table


def target_average_table(scenario: str, protocol: str, groups: list[Group]) -> Table:
    """Cross-dataset (Avg-C) or domain generalisation (Avg-D): the source, each target, the target average."""
    datasets = _datasets(groups)
    avg_label = "Avg-C" if protocol == "cross_dataset" else "Avg-D"
    columns = [(d, d, "accuracy") for d in datasets] + [("Source", None, "source"), (avg_label, None, "average")]
    table = Table(f"{protocol}_{_slug(scenario)}", f"{scenario}: {protocol.replace('_', ' ')}", [c[0] for c in columns],
                  _rows(groups, columns, None, None, False), decimals=2)
    table.notes.append(f"{avg_label} is the unweighted mean over the target datasets (the source is excluded).")
    return table


# Cost fields: (column, dotted key in metrics.json). Only what runs record today is filled; the rest stay empty.
COST_FIELDS = (
    ("trainable params", "method_report.trainable_parameters"),
    ("training time (s)", "wall_time_s"),
    ("peak GPU memory (MiB)", "method_report.peak_gpu_memory_mib"),
    ("per-task storage (MiB)", "method_report.per_task_storage_mib"),
    ("inference cost vs zero-shot", "method_report.inference_cost_ratio"),
)
EVAL_TIME = "method_report.eval_seconds_per_image"


def cost_table(scenario: str, groups: list[Group]) -> Table:
    labels = label_groups(groups)
    zero_shot = next((g.recorded(EVAL_TIME).mean for g in groups if g.method == "zeroshot"), None)
    rows = []
    for g in groups:
        cells = {c: g.recorded(key) for c, key in COST_FIELDS}
        own = g.recorded(EVAL_TIME)
        if cells["inference cost vs zero-shot"].empty and own.mean is not None and zero_shot:
            # evaluation time per image over zero-shot's, in the runs of this report (timings of one machine)
            cells["inference cost vs zero-shot"] = Stat(own.mean / zero_shot, None, own.n, own.runs)
        rows.append(Row(labels[id(g)], RUN, cells, "this harness", len(g.runs)))
    table = Table(f"cost_{_slug(scenario)}", f"{scenario}: cost", [c for c, _ in COST_FIELDS], rows, decimals=1,
                  higher_is_better=None)
    missing = [c for c, key in COST_FIELDS if all(r.cells[c].empty for r in rows)]
    if missing:
        table.notes.append("Not recorded by these runs (left empty, not estimated): " + ", ".join(missing) + ".")
    table.notes.append("training time = wall time of the whole run (training and evaluation), from metrics.json.")
    if any(not r.cells["inference cost vs zero-shot"].empty for r in rows):
        table.notes.append("inference cost = evaluation seconds per image of the last evaluation over zero-shot's, "
                           "from runs of this report (compare only runs timed on one machine).")
    return table


def beyond_table(scenario: str, groups: list[Group]) -> Table | None:
    """Backward transfer and forgetting per dataset, with the overall values and the seen-task area (MTIL only)."""
    if not any(r.matrix is not None for g in groups for r in g.runs):
        return None
    datasets = _datasets(groups)
    labels = label_groups(groups)
    columns = [f"{d} BWT" for d in datasets[:-1]] + [f"{d} F" for d in datasets[:-1]] + ["BWT", "Forgetting", "Area"]
    rows = []
    for g in groups:
        cells = {f"{d} BWT": g.derived("bwt", d) for d in datasets[:-1]}
        cells.update({f"{d} F": g.derived("forgetting", d) for d in datasets[:-1]})
        cells.update({"BWT": g.derived("bwt"), "Forgetting": g.derived("forgetting"), "Area": g.derived("area")})
        rows.append(Row(labels[id(g)], RUN, cells, "this harness", len(g.runs)))
    table = Table(f"beyond_{_slug(scenario)}", f"{scenario}: backward transfer (BWT), forgetting (F), seen-task area",
                  columns, rows, decimals=1, higher_is_better=None)
    table.notes.append("BWT_i = A[T,i] − A[i,i]; F_i = max over steps i..T−1 of A[j,i] − A[T,i]; Area = mean over steps "
                       "of the mean accuracy on the datasets learned so far. The last dataset has no BWT/F.")
    return table

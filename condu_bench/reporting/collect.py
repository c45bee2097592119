"""Every finished run below some directories, grouped by (scenario, method, resolved config without the seed), with
seed aggregation (mean ± sample std, n). Reads result files only: ``metrics.json``, ``config.yaml`` and the
accuracy-matrix CSVs a run writes; never trains, never imports torch.

A run directory is one that holds ``metrics.json`` (written last, so its presence means "finished"). Directories
archived by ``--force`` (``seed0.replaced-<time>``) are old results and are skipped.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from condu_bench import metrics as protocol_metrics
from condu_bench.errors import UserError
from condu_bench.reporting.matrix_io import read_accuracy_matrix

ARCHIVED_MARK = ".replaced-"
# The resolved-config keys that may differ between the seeds of one configuration: the seed, and the CPU thread count
# (``num_threads`` changes at most the order of floating-point sums, as another CPU does; running seeds side by side
# with one thread each must not split them into two settings). Both stay in the run's config hash.
SEED_KEYS = ("seeds", "seed", "num_threads")


@dataclass(frozen=True)
class Stat:
    """A value aggregated over seeds: mean, sample standard deviation (None with one seed), seed count, and the
    run directories behind it (for links)."""

    mean: float | None
    std: float | None = None
    n: int = 0
    runs: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.mean is None


EMPTY = Stat(None)


def aggregate(values, runs=()) -> Stat:
    """Mean ± sample std (ddof = 1) of the values that are not None/NaN."""
    kept = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not kept:
        return EMPTY
    std = float(np.std(kept, ddof=1)) if len(kept) > 1 else None
    return Stat(float(np.mean(kept)), std, len(kept), tuple(runs))


@dataclass
class Run:
    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any] | None
    matrix: tuple[np.ndarray, list[str], list[str]] | None  # MTIL accuracy matrix (values, steps, columns)

    @property
    def scenario(self) -> str:
        return str(self.metrics.get("scenario", ""))

    @property
    def method(self) -> str:
        return str(self.metrics["method"])

    @property
    def protocol(self) -> str:
        return str(self.metrics["protocol"])

    @property
    def config_key(self) -> str:
        """A short hash of the resolved config without :data:`SEED_KEYS`: runs with equal keys are seeds of one
        setting."""
        if self.config is None:
            return ""
        data = {k: v for k, v in self.config.items() if k not in SEED_KEYS}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]

    def derived(self) -> dict[str, Any]:
        """Metrics beyond the papers' (backward transfer, forgetting, seen-task area) from the MTIL matrix."""
        if self.matrix is None:
            return {}
        values, _steps, columns = self.matrix
        if values.shape[0] != values.shape[1]:
            return {}
        return protocol_metrics.matrix_metrics(values, columns)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read result file {path}: {exc}") from exc
    if not isinstance(data, dict) or "method" not in data or "protocol" not in data:
        raise UserError(f"{path} is not a run's metrics.json (no 'method'/'protocol' keys)")
    return data


def load_run(directory: Path) -> Run:
    import yaml

    metrics = _read_json(directory / "metrics.json")
    config_path = directory / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    matrix_path = directory / "accuracy_matrix.csv"
    matrix = read_accuracy_matrix(matrix_path) if matrix_path.is_file() else None
    return Run(directory, metrics, config, matrix)


def collect_runs(directories) -> list[Run]:
    """Every finished run below each directory (a run directory itself counts), sorted by path."""
    found: dict[Path, None] = {}
    for directory in directories:
        directory = Path(directory)
        if not directory.is_dir():
            raise UserError(f"results directory {directory} does not exist (give run or sweep directories "
                            "written by `condu-bench run --out`)")
        for path in sorted(directory.rglob("metrics.json")):
            if not any(ARCHIVED_MARK in part for part in path.parts):
                found[path.parent.resolve()] = None
    return [load_run(p) for p in sorted(found)]


@dataclass
class Group:
    """The seeds of one (scenario, method, configuration)."""

    scenario: str
    protocol: str
    method: str
    config_key: str
    runs: list[Run] = field(default_factory=list)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(str(r.path) for r in self.runs)

    @property
    def datasets(self) -> list[str]:
        names: list[str] = []
        for r in self.runs:
            for name in list(r.metrics.get("datasets") or []) + list(r.metrics.get("per_dataset") or {}):
                if name not in names:
                    names.append(name)
        return names

    def headline(self, key: str) -> Stat:
        """A top-level number of metrics.json over seeds. Base-to-novel HM is the HM of the seed-averaged Base and
        Novel (the papers' rule); its std is the std of the per-seed HMs."""
        stat = aggregate([r.metrics.get(key) for r in self.runs], self.paths)
        if key == "hm" and self.protocol == "base_to_novel":
            base, novel = self.headline("base"), self.headline("novel")
            if not (base.empty or novel.empty):
                return Stat(protocol_metrics.harmonic_mean(base.mean, novel.mean), stat.std, stat.n, stat.runs)
        return stat

    def per_dataset(self, dataset: str, key: str) -> Stat:
        """``per_dataset[dataset][key]`` over seeds; B2N HM again as the HM of averaged Base and Novel."""
        if key == "hm" and self.protocol == "base_to_novel":
            base, novel = self.per_dataset(dataset, "base"), self.per_dataset(dataset, "novel")
            if base.empty or novel.empty:
                return EMPTY
            hms = [protocol_metrics.harmonic_mean(b, n) for b, n in zip(self._per(dataset, "base"), self._per(dataset, "novel"))
                   if b is not None and n is not None]
            spread = aggregate(hms)
            return Stat(protocol_metrics.harmonic_mean(base.mean, novel.mean), spread.std, base.n, self.paths)
        return aggregate(self._per(dataset, key), self.paths)

    def _per(self, dataset: str, key: str) -> list:
        return [((r.metrics.get("per_dataset") or {}).get(dataset) or {}).get(key) for r in self.runs]

    def derived(self, key: str, dataset: str | None = None) -> Stat:
        """A metric beyond the papers' (``bwt``, ``forgetting``, ``area``) over seeds, overall or per dataset."""
        values = []
        for r in self.runs:
            d = r.derived()
            values.append(d.get(key) if dataset is None else (d.get("per_dataset", {}).get(dataset) or {}).get(key))
        return aggregate(values, self.paths)

    def recorded(self, key: str) -> Stat:
        """A number a run records outside the metrics (``wall_time_s``, ``method_report.<key>``, ...), dotted paths."""
        values = []
        for r in self.runs:
            node: Any = r.metrics
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            values.append(node if isinstance(node, (int, float)) and not isinstance(node, bool) else None)
        return aggregate(values, self.paths)


def group_runs(runs: list[Run]) -> list[Group]:
    """Groups in first-seen order (runs are sorted by path, so the order is stable)."""
    groups: dict[tuple[str, str, str, str], Group] = {}
    for r in runs:
        key = (r.scenario, r.protocol, r.method, r.config_key)
        groups.setdefault(key, Group(*key)).runs.append(r)
    return list(groups.values())


def label_groups(groups: list[Group]) -> dict[int, str]:
    """Row labels: the method name, plus the config key where one scenario has several configs of one method."""
    counts: dict[tuple[str, str], int] = {}
    for g in groups:
        counts[(g.scenario, g.method)] = counts.get((g.scenario, g.method), 0) + 1
    return {id(g): g.method if counts[(g.scenario, g.method)] == 1 else f"{g.method} [{g.config_key}]" for g in groups}

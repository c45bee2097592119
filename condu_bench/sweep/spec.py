"""Sweep files: benchmarks x methods x option grids x seeds, expanded into runs with stable ids.

A sweep file (``benchmarks/sweeps/*.yaml``)::

    name: my_sweep
    benchmarks: [synthetic_mtil]            # names in benchmarks/ or YAML paths (relative to this file)
    overrides: {train.iterations: 50}       # dotted config keys set in every run
    grid: {train.lr: [1.0e-4, 3.0e-4]}      # every method runs every combination of these values
    methods:
      zeroshot: {}
      wise_ft:
        overrides: {...}                    # only this method's runs
        grid: {method_options.wise_ft.alpha: [0.5, 0.8]}
        resources: {gpus: 1}                # replaces keys of the sweep's resources
        benchmarks: [synthetic_mtil]        # only these of the sweep's benchmarks (default: all)
    seeds: [0, 1]
    resources: {gpus: 1, cpus: 8, mem_gb: 48, time_min: 240}   # what ONE run needs (Ray / SLURM requests)

A run's config is built as: the benchmark file, the sweep's ``overrides``, the method's ``overrides``, one grid
point, the command line's KEY=VALUE overrides, then ``methods=[method]``, ``seeds=[seed]``. Its id is
``<method>-seed<seed>-<hash>``: the hash is taken over the resolved config of that single run (as written to
``config.yaml``) without the machine-local paths (``data_root``, ``model.cache_dir``) and thread count, so the id is
the same in every process and on every machine, and two option settings of a method get two directories.
Identical resolved configs (a grid value equal to the default, say) are one run.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from condu_bench import resources
from condu_bench.config import RunConfig, apply_overrides, config_hash, from_dict, read_yaml, to_dict, validate
from condu_bench.errors import UnknownNameError, UserError, closest

SWEEP_KEYS = ("name", "benchmarks", "overrides", "grid", "methods", "seeds", "resources")
METHOD_KEYS = ("benchmarks", "overrides", "grid", "resources")
HASH_LENGTH = 10  # hex digits: 40 bits, and expansion refuses two different configs with one id anyway
# Where files are and how many threads read them: not part of a run's identity.
MACHINE_LOCAL = (("data_root",), ("model", "cache_dir"), ("num_threads",))


@dataclass(frozen=True)
class Resources:
    """What one run needs: GPUs, CPU cores, memory and wall time (requested from Ray / SLURM; local uses gpus)."""

    gpus: int = 0
    cpus: int = 1
    mem_gb: float | None = None
    time_min: int | None = None

    def __post_init__(self):
        if self.gpus < 0 or self.cpus < 1:
            raise ValueError(f"gpus must be >= 0 and cpus >= 1 (got gpus={self.gpus}, cpus={self.cpus})")


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: everything a worker on any machine needs, in plain data."""

    run_id: str
    benchmark: str
    method: str
    seed: int
    variant: dict[str, Any]  # the grid values of this run (what tells it apart from its siblings)
    config: dict[str, Any]  # the full RunConfig of this single run, as a dict
    resources: Resources
    cost_iterations: int | None  # training iterations over all tasks (None: unknown before the data is read)
    tasks: int | None

    @property
    def label(self) -> str:
        """The method with its grid values, as the leaderboard shows it (``wise_ft (alpha=0.5)``)."""
        if not self.variant:
            return self.method
        prefix = f"method_options.{self.method}."
        parts = [f"{k[len(prefix):] if k.startswith(prefix) else k}={v}" for k, v in self.variant.items()]
        return f"{self.method} ({', '.join(parts)})"

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "resources": to_dict(self.resources)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**{**data, "resources": Resources(**data["resources"])})


@dataclass(frozen=True)
class Sweep:
    name: str
    path: Path
    runs: list[RunSpec] = field(default_factory=list)


def sweeps_dir() -> Path:
    return resources.benchmarks_dir() / "sweeps"


def resolve_sweep(name_or_path: str) -> Path:
    """A YAML path, or the name of a file in benchmarks/sweeps/."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"sweep file not found: {path}")
        return path
    candidate = sweeps_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    from condu_bench.errors import unknown_name_message

    known = sorted(p.stem for p in sweeps_dir().glob("*.yaml"))
    raise UserError(unknown_name_message("sweep", name_or_path, known) + "; or give a path to a sweep YAML file")


def _check_keys(where: str, data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            hint = closest(str(key), allowed)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise UserError(f"{where}: unknown key {key!r}{suggestion} (valid keys: {', '.join(allowed)})")


def _mapping(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping of dotted config keys to values, got {value!r}")
    return value


def _grid(where: str, value: Any) -> dict[str, list[Any]]:
    grid = _mapping(where, value)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}.{key}: a grid entry is a non-empty list of values, got {values!r}")
    return grid


def set_dotted(data: dict[str, Any], key: str, value: Any, where: str) -> None:
    """``data[a][b][c] = value`` for ``key = "a.b.c"`` (sections are created as needed)."""
    node = data
    *sections, last = key.split(".")
    for part in sections:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"{where}: {key!r}: {part!r} is not a section")
        node = child
    node[last] = value


def _without_machine_local(run_config: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(run_config))  # deep copy of plain data
    for path in MACHINE_LOCAL:
        node = data
        for part in path[:-1]:
            node = node.get(part, {})
        node.pop(path[-1], None)
    return data


def run_identity(config: RunConfig, method: str, seed: int) -> tuple[str, dict[str, Any]]:
    """``(<method>-seed<seed>-<hash>, resolved config of the run)`` for a single-run config."""
    from condu_bench.experiment import method_run_config
    from condu_bench.registries import METHODS

    cls = METHODS.get(method)
    method_config = from_dict(cls.Config, config.method_options.get(method, {}), f"method_options.{method}")
    run_config = method_run_config(config, method, seed, method_config, method_train(config, method))
    digest = config_hash(_without_machine_local(run_config))[:HASH_LENGTH]
    return f"{method}-seed{seed}-{digest}", run_config


def method_train(config: RunConfig, method: str) -> Any:
    """The method's resolved train config: the train section < its reference recipe < ``recipes.<method>``."""
    from condu_bench.recipes import resolve_train
    from condu_bench.registries import METHODS

    return resolve_train(config.train, getattr(METHODS.get(method), "recipe", None), config.recipes.get(method), method)


def planned_tasks(config: RunConfig) -> list[str] | None:
    """The training tasks of the config's scenario, when they follow from its options alone (no data read)."""
    order = config.scenario.options.get("order")
    if config.scenario.name == "synthetic_mtil":  # as build_synthetic_mtil reads it: a string is one domain
        from condu_bench.synthetic.domains import DOMAIN_NAMES

        names = order or DOMAIN_NAMES
        return [names] if isinstance(names, str) else [str(n) for n in names]
    if config.scenario.name == "mtil":  # as the real MTIL builder reads it: I / II, or names separated by commas
        from condu_bench.scenarios.real import MTIL_ORDERS

        key = str(order if order is not None else "I").strip().upper()
        names = MTIL_ORDERS.get({"1": "I", "2": "II"}.get(key, key), order)
        return [n.strip() for n in names.split(",") if n.strip()] if isinstance(names, str) else [str(n) for n in names]
    return None


def training_cost(config: RunConfig, method: str) -> tuple[int | None, int | None]:
    """(iterations summed over the tasks, number of tasks); 0 iterations for a method that never trains."""
    from condu_bench.registries import METHODS

    tasks = planned_tasks(config)
    if tasks is None:
        return None, None
    if not METHODS.get(method).trains:
        return 0, len(tasks)
    train = method_train(config, method)
    if train.epochs is not None or train.epochs_per_task:
        return None, len(tasks)  # a budget in epochs depends on the training-set sizes, known only once data is read
    return sum(train.iterations_per_task.get(t, train.iterations) for t in tasks), len(tasks)


def _benchmark_path(sweep_path: Path, name: str) -> Path:
    local = (sweep_path.parent / name)
    if local.suffix in (".yaml", ".yml"):
        if not local.is_file():
            raise UserError(f"{sweep_path}: benchmark file not found: {local}")
        return local
    from condu_bench.cli import resolve_benchmark

    return resolve_benchmark(name)


def load_sweep(path: Path, cli_overrides: list[str] = ()) -> Sweep:
    """Read, check and expand a sweep file into its runs (in file order: benchmark, method, grid point, seed)."""
    from condu_bench.registries import METHODS

    where = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: a sweep file is a mapping with keys {', '.join(SWEEP_KEYS)}")
    _check_keys(where, data, SWEEP_KEYS)
    for required in ("benchmarks", "methods"):
        if not data.get(required):
            raise UserError(f"{where}: `{required}` is missing or empty")
    benchmarks = data["benchmarks"] if isinstance(data["benchmarks"], list) else [data["benchmarks"]]
    methods = data["methods"]
    if isinstance(methods, list):
        methods = {m: {} for m in methods}
    if not isinstance(methods, dict):
        raise UserError(f"{where}: `methods` maps method names to {{overrides, grid, resources}} (or is a list of names)")
    seeds = data.get("seeds", [0])
    seeds = seeds if isinstance(seeds, list) else [seeds]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UserError(f"{where}: `seeds` is a non-empty list of integers, got {seeds!r}")
    common = _mapping(f"{where}: overrides", data.get("overrides"))
    common_grid = _grid(f"{where}: grid", data.get("grid"))
    base_resources = _mapping(f"{where}: resources", data.get("resources"))

    runs: dict[str, RunSpec] = {}
    for method, entry in methods.items():
        if method not in METHODS:
            raise UnknownNameError("method", method, METHODS.names())
        entry = _mapping(f"{where}: methods.{method}", entry)
        _check_keys(f"{where}: methods.{method}", entry, METHOD_KEYS)
        unknown = [b for b in entry.get("benchmarks") or [] if b not in benchmarks]
        if unknown:
            raise UserError(f"{where}: methods.{method}.benchmarks names {unknown[0]!r}, which is not in the sweep's "
                            f"benchmarks ({', '.join(map(str, benchmarks))})")
    for bench in benchmarks:
        bench_path = _benchmark_path(path, str(bench))
        base = read_yaml(bench_path)
        for method, entry in methods.items():
            entry = entry or {}
            if entry.get("benchmarks") and bench not in entry["benchmarks"]:
                continue
            mwhere = f"{where}: methods.{method}"
            grid = {**common_grid, **_grid(f"{mwhere}.grid", entry.get("grid"))}
            res = from_dict(Resources, {**base_resources, **_mapping(f"{mwhere}.resources", entry.get("resources"))},
                            f"{mwhere}.resources")
            for point in itertools.product(*grid.values()):
                variant = dict(zip(grid, point))
                for seed in seeds:
                    cfg = yaml.safe_load(yaml.safe_dump(base))
                    for key, value in {**common, **_mapping(f"{mwhere}.overrides", entry.get("overrides")), **variant}.items():
                        set_dotted(cfg, key, value, where)
                    cfg = apply_overrides(cfg, list(cli_overrides))
                    cfg.update(methods=[method], seeds=[seed], progress=False)
                    context = f"{where} ({bench_path.name}, {method}, {variant or 'no grid'}, seed {seed})"
                    config = from_dict(RunConfig, cfg, context)
                    validate(config, context)
                    run_id, _ = run_identity(config, method, seed)
                    cost, n_tasks = training_cost(config, method)
                    spec = RunSpec(run_id, bench_path.stem, method, seed, variant, to_dict(replace(config)), res, cost, n_tasks)
                    previous = runs.get(run_id)
                    if previous is not None and run_identity(from_dict(RunConfig, previous.config), method, seed)[1] != \
                            run_identity(config, method, seed)[1]:
                        raise UserError(f"{where}: runs {previous.variant} and {variant} of {method} share the id {run_id} "
                                        "with different configs (a hash collision); report this")
                    runs.setdefault(run_id, spec)  # identical resolved configs are one run
    return Sweep(str(data.get("name") or path.stem), path, list(runs.values()))

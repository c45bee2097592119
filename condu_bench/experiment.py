"""A whole benchmark run: scenario x methods x seeds, one result directory each, then the leaderboard."""

from __future__ import annotations

import contextlib
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from condu_bench import __version__, run_store
from condu_bench.atomic_io import atomic_write_json, atomic_write_text
from condu_bench.config import RunConfig, config_hash, from_dict, to_dict
from condu_bench.errors import UserError, closest
from condu_bench.recipes import resolve_train
from condu_bench.registries import METHODS, SCENARIOS
from condu_bench.resources import published_dir
from condu_bench.run_lock import RunBusy, RunLock


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version(), "condu_bench": __version__}
    for dist in ("torch", "torchvision", "open_clip_torch", "avalanche-lib", "numpy"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def method_run_config(config: RunConfig, method: str, seed: int, method_config: Any, train: Any) -> dict[str, Any]:
    """The resolved config of one (method, seed) run: what is hashed and written as config.yaml. ``train`` is the
    method's resolved recipe (:func:`condu_bench.recipes.resolve_train`), which replaces the ``recipes`` layers."""
    from condu_bench.scenarios.real import hashed_options
    from condu_bench.scenarios.synthetic import versioned_options

    data = to_dict(replace(config, methods=[method], seeds=[seed], method_options={}, progress=True, train=train))
    options = hashed_options(config.scenario.name, data["scenario"]["options"])
    data["scenario"]["options"] = versioned_options(config.scenario.name, options)
    data.pop("recipes")
    data["method_options"] = {method: to_dict(method_config)}
    data.pop("progress")
    data.pop("num_workers")
    data.pop("logging")
    data["model"].pop("trust_torchscript")  # none of these changes results
    if not data["model"]["pretrain"]:
        data["model"].pop("pretrain")  # the calibrated recipe: the hashes of runs from before the option stay valid
    for speed_only in ("decoded_cache", "cache_dir", "feature_cache"):
        data["eval"].pop(speed_only)
    return data


def summarise(scenario: Any, results: list[Any]) -> dict[str, Any]:
    """Protocol metrics from the accuracy rows of every stream."""
    from condu_bench import metrics

    if scenario.protocol == "mtil":
        (stream,) = results
        out = metrics.mtil_metrics(stream.rows, stream.column_names)
        out["datasets"] = list(stream.column_names)
        return out
    if scenario.protocol == "base_to_novel":
        pairs = {}
        for stream in results:
            last = dict(zip(stream.column_names, stream.rows[-1]))
            pairs[stream.name] = (last[f"{stream.name}/base"], last[f"{stream.name}/novel"])
        out = metrics.base_to_novel_metrics(pairs)
        out["datasets"] = list(pairs)
        return out
    (stream,) = results
    last = dict(zip(stream.column_names, stream.rows[-1]))
    source = stream.step_names[-1]
    targets = {name: acc for name, acc in last.items() if name != source}
    return {
        "source": last.get(source),
        "average": metrics.target_average(targets),
        "per_dataset": {name: {"accuracy": acc} for name, acc in last.items()},
        "datasets": list(last),
    }


def dataset_info(scenario: Any) -> dict[str, Any]:
    """Per dataset: sizes, split description, shots and any skipped corrupt images, as the loaders recorded."""
    tasks = {t.name: t for s in scenario.streams for t in s.train + s.evaluate}
    return {name: {"num_classes": t.num_classes, "split_convention": t.split_convention, **t.info} for name, t in tasks.items()}


def write_outputs(directory: Path, record: dict[str, Any], results: list[Any], run_config: dict[str, Any]) -> None:
    """Every result file is written atomically (see :mod:`condu_bench.atomic_io`), ``metrics.json`` last."""
    import yaml

    from condu_bench.reporting.matrix_io import write_accuracy_matrix
    from condu_bench.reporting.run_report import write_run_report

    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "config.yaml", yaml.safe_dump(run_config, sort_keys=False))
    published = published_rows(record["scenario"], record["protocol"])
    if record["protocol"] == "mtil":
        (stream,) = results
        write_accuracy_matrix(directory / "accuracy_matrix.csv", stream.rows, stream.step_names, stream.column_names)
        write_run_report(directory, record, stream.rows, stream.step_names, stream.column_names, published)
    else:
        for stream in results:
            name = stream.name.replace("/", "_")
            write_accuracy_matrix(directory / f"accuracy_matrix_{name}.csv", stream.rows, stream.step_names, stream.column_names)
        write_run_report(directory, record, None, None, None, published)
    atomic_write_json(directory / run_store.METRICS, record, default=str)  # last: its presence means "finished"
    run_store.clear_progress(directory)


def published_rows(scenario: str, protocol: str):
    import pandas as pd

    from condu_bench.reporting.tables import published_csv_for

    path = published_csv_for(scenario, protocol, published_dir())
    return pd.read_csv(path) if path is not None else None


def known_dataset_names() -> list[str]:
    """Every dataset name a scenario can train on: the registered real datasets and the synthetic domains."""
    from condu_bench.registries import DATASETS
    from condu_bench.synthetic.domains import DOMAIN_NAMES

    return [*DATASETS.names(), *DOMAIN_NAMES]


def check_per_task_keys(config: RunConfig, scenario: Any, trains: dict[str, Any] | None = None) -> None:
    """Every key of ``train.lr_per_task`` / ``iterations_per_task`` / ``epochs_per_task`` (of the train section and of
    each method's resolved recipe in ``trains``) must name a dataset: a task of the scenario, or a known dataset that
    this order leaves out (a benchmark file's keys stay valid for a shorter order).
    A misspelt name is an error with the closest task name."""
    tasks = list(dict.fromkeys(t.name for s in scenario.streams for t in s.train))
    known = set(tasks) | set(known_dataset_names())
    for option in ("lr_per_task", "iterations_per_task", "epochs_per_task"):
        for key in {k for train in [config.train, *(trains or {}).values()] for k in getattr(train, option)}:
            if key not in known:
                hint = closest(key, tasks) or closest(key, sorted(known))
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                raise UserError(f"train.{option}: {key!r} is not a dataset of scenario {scenario.name}{suggestion} "
                                f"(its tasks: {', '.join(tasks)})")


def run_experiment(config: RunConfig, out: Path, force: bool = False, log=print,
                   directory_for=run_store.run_dir) -> list[dict[str, Any]]:
    """Run every (seed, method) of ``config`` under ``out``; returns the metrics records (finished ones reused).

    Each run directory (``directory_for(out, method, seed)``) is locked by this process from planning to the end
    (:mod:`condu_bench.run_lock`); a run another live process holds is left to it (logged ``[busy]``, no record).
    """
    with contextlib.ExitStack() as held:
        return _run_locked(config, out, force, log, directory_for, held)


def _run_locked(config: RunConfig, out: Path, force: bool, log, directory_for, held: contextlib.ExitStack) -> list[dict[str, Any]]:
    import torch

    from condu_bench.method import RunContext, check_method_class
    from condu_bench.models.loading import check_pretrain_vocabulary, load_model
    from condu_bench.run_observer import make_observer
    from condu_bench.training.device import autocast_factory, pick_device
    from condu_bench.training.runner import MethodRun

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    method_classes = {name: check_method_class(name, METHODS.get(name)) for name in config.methods}
    method_configs = {
        name: from_dict(cls.Config, config.method_options.get(name, {}), f"method_options.{name}")
        for name, cls in method_classes.items()
    }
    trains = {name: resolve_train(config.train, getattr(cls, "recipe", None), config.recipes.get(name), name)
              for name, cls in method_classes.items()}
    plans = []
    for seed in config.seeds:
        for name in config.methods:
            run_config = method_run_config(config, name, seed, method_configs[name], trains[name])
            digest = config_hash(run_config)
            directory = directory_for(out, name, seed)
            try:
                held.enter_context(RunLock(directory))
            except RunBusy as busy:
                log(f"[busy] {name} seed {seed}: {busy}")
                continue
            plans.append((seed, name, run_config, digest, directory, run_store.prepare(directory, digest, force)))
    records: dict[tuple[int, str], dict[str, Any]] = {}
    for seed, name, _cfg, _digest, directory, action in plans:
        if action == "skip":
            log(f"[skip] {name} seed {seed}: finished result found (use --force to re-run)")
            records[(seed, name)] = run_store.finished_metrics(directory)
    pending = [p for p in plans if p[5] != "skip"]
    if not pending:
        return [records[(p[0], p[1])] for p in plans]

    published_dir()  # an install without its package data fails here, not after the first training run
    build_scenario = SCENARIOS.get(config.scenario.name)
    scenarios: dict[int, Any] = {}
    for seed in dict.fromkeys(p[0] for p in pending):  # all of them before any training: config errors surface now
        scenarios[seed] = build_scenario(dict(config.scenario.options), seed=seed, data_root=config.data_root)
        check_per_task_keys(config, scenarios[seed], trains)
    check_pretrain_vocabulary(config.model, [v for s in scenarios.values() for v in s.info.get("pretrain_vocabulary", ())])
    device = pick_device(config.device)
    loaded = load_model(config.model, progress=config.progress)
    model = loaded.model.to(device)
    pretrained_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    for seed, name, run_config, digest, directory, action in pending:
        scenario = scenarios[seed]
        if getattr(method_classes[name], "zero_shot_templates", False):
            scenario = scenario.for_zero_shot()
        log(f"[{action}] {name} seed {seed} -> {directory}")
        ctx = RunContext(
            model=model, tokenizer=loaded.tokenizer, device=device, pretrained_state=pretrained_state,
            train_config=trains[name], seed=seed, train_transform=loaded.train_transform,
            eval_transform=loaded.eval_transform, coop_train_transform=loaded.coop_train_transform,
            autocast=autocast_factory(device, trains[name].precision), scenario_name=scenario.name, data_root=config.data_root,
        )
        observer = make_observer(config.logging, directory, f"{name}-seed{seed}-{digest}", run_config)
        runner = MethodRun(method_classes[name], method_configs[name], config, scenario, ctx, directory, digest, observer)
        started = time.time()
        try:
            results, wall = runner.run(resume=action == "resume")
        finally:
            if observer is not None:
                observer.close()
        record = {
            "scenario": scenario.name, "protocol": scenario.protocol, "method": name, "seed": seed,
            **summarise(scenario, results),
            "config_hash": digest, "split_convention": ",".join(scenario.split_conventions),
            "task_agnostic": scenario.task_agnostic, "scenario_info": scenario.info,
            "dataset_info": dataset_info(scenario),
            "model": loaded.info, "device": str(device), "versions": versions(),
            "method_report": runner.report,
            # SHA-256 of the last checkpoint (model + method state after the last task): equal for bit-identical runs
            "final_state_sha256": (run_store.read_progress(directory) or {}).get("state_sha256"),
            "wall_time_s": round(wall, 2), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started + wall)),
            "argv": sys.argv,
        }
        write_outputs(directory, record, results, run_config)
        records[(seed, name)] = record
    return [records[(p[0], p[1])] for p in plans]  # in the config's order, for the leaderboard

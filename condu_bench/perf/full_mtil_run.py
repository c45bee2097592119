"""``condu-bench bench --full-mtil``: one whole MTIL order-I run per method over the generated tree
(:mod:`condu_bench.perf.full_mtil`) with random weights, timed end to end, and where the time went as the runner
recorded it (``metrics.json`` ``method_report.seconds``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from condu_bench.errors import UserError
from condu_bench.perf.full_mtil import REF_IMAGES_DIR, REF_SENTENCES_FILE

BENCHMARK = "mtil_order1"


def run_overrides(tree: Path, method: str, scratch: Path) -> list[str]:
    """What every timed run sets before the user's overrides: random ViT-B/16, the tree, its ZSCL reference input,
    and a decoded-evaluation cache of its own (each run pays the first decode, as a first real run does)."""
    return ["model.arch=ViT-B-16", "model.pretrained=none", f"data_root={tree}", f"methods={method}",
            "method_options.zscl.reference=files", f"method_options.zscl.ref_images_dir={tree / REF_IMAGES_DIR}",
            f"method_options.zscl.ref_sentences_file={tree / REF_SENTENCES_FILE}", f"eval.cache_dir={scratch / 'decoded'}"]


def run_method(tree: Path, method: str, overrides: list[str], scratch: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from condu_bench.cli import resolve_benchmark
    from condu_bench.config import load_config
    from condu_bench.experiment import run_experiment
    from condu_bench.run_store import run_dir

    config = load_config(resolve_benchmark(BENCHMARK), run_overrides(tree, method, scratch) + list(overrides))
    if config.methods != [method] or len(config.seeds) != 1:
        raise UserError(f"--full-mtil times one run per method: leave methods= and seeds= out of the overrides "
                        f"(got methods {config.methods}, seeds {config.seeds}); use --methods")
    out = scratch / "runs"
    started = time.perf_counter()
    run_experiment(config, out, force=True, log=log)
    wall = time.perf_counter() - started
    return breakdown(run_dir(out, method, config.seeds[0]), wall)


def breakdown(directory: Path, wall: float) -> dict[str, Any]:
    """Where one finished run's time went, from its ``metrics.json`` and ``config.yaml``."""
    import yaml

    from condu_bench.config import TrainConfig, from_dict
    from condu_bench.recipes import task_iterations

    metrics = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
    report = metrics["method_report"]
    if "seconds" not in report:
        raise UserError(f"{directory / 'metrics.json'} has no method_report.seconds: the runner did not record its timings")
    seconds = report["seconds"]
    train = from_dict(TrainConfig, yaml.safe_load((directory / "config.yaml").read_text(encoding="utf-8"))["train"], "train")
    tasks = metrics["dataset_info"]
    # The same per-task budget the runner gave each task (recipes.task_iterations), at the method's resolved recipe.
    iterations = sum(task_iterations(train, name, info["n_train"], info["dataset"]) for name, info in tasks.items())
    per_image = report.get("eval_seconds_per_image")
    return {
        "wall_seconds": round(wall, 2),
        "train_seconds": seconds["train_seconds"],
        "data_wait_seconds": seconds["data_wait_seconds"],
        "eval_seconds": seconds["eval_seconds"],
        "other_seconds": round(wall - seconds["train_seconds"] - seconds["eval_seconds"], 3),
        "tasks": seconds["tasks"],
        "iterations": iterations,
        "batch_size": train.batch_size,
        "train_images_per_s": round(iterations * train.batch_size / seconds["train_seconds"], 2) if seconds["train_seconds"] else None,
        "eval_images_per_row": sum(info["n_test"] for info in tasks.values()),
        "eval_images_per_s": round(1 / per_image, 2) if per_image else None,
        "device": metrics["device"],
        "model": metrics["model"].get("arch") if isinstance(metrics.get("model"), dict) else metrics.get("model"),
    }


def run_full_mtil(scale: float, methods: list[str], overrides: list[str], workers: int | None,
                  log: Callable[[str], None] = print, cache_dir: Path | None = None) -> dict[str, Any]:
    import tempfile

    from condu_bench.perf.full_mtil import ensure_tree

    if not methods:
        raise UserError("--methods needs at least one method name, e.g. --methods finetune,zscl")
    tree, manifest, built = ensure_tree(scale, cache_dir=cache_dir, workers=workers, log=log)
    log(f"{'generated' if built else 'reusing'} {tree}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="condu-bench-full-mtil-") as scratch:
        for method in methods:
            log(f"{method}: one MTIL order-I run")
            results[method] = run_method(tree, method, overrides, Path(scratch) / method, log)
    return {"tree": str(tree), "scale": scale, "generated_now": built,
            "generation": {k: manifest[k] for k in ("jpegs", "links", "workers", "seconds")},
            "test_images": {name: d["test"] for name, d in manifest["datasets"].items() if "test" in d},
            "overrides": list(overrides), "methods": results}


def format_full_mtil(out: dict[str, Any]) -> str:
    gen = out["generation"]
    lines = [f"tree: {out['tree']} (scale {out['scale']}, {sum(out['test_images'].values())} test images; "
             f"{gen['jpegs']} JPEGs + {gen['links']} links generated in {gen['seconds']} s with {gen['workers']} process(es)"
             f"{'' if out['generated_now'] else ', reused'})", "",
             "| method | wall s | train s | of which data wait s | eval s | other s | tasks | train img/s | eval img/s |",
             "|:--|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for method, r in out["methods"].items():
        lines.append(f"| {method} | {r['wall_seconds']:.1f} | {r['train_seconds']:.1f} | {r['data_wait_seconds']:.1f} | "
                     f"{r['eval_seconds']:.1f} | {r['other_seconds']:.1f} | {r['tasks']} | {_num(r['train_images_per_s'])} | "
                     f"{_num(r['eval_images_per_s'])} |")
    lines.append("")
    lines.append("other = wall - train - eval: model loading, listing the datasets, checkpoints, reports")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"

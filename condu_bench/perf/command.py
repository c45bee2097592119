"""``condu-bench bench [--quick] [--json FILE] [KEY=VALUE ...]``: the five speed ratios of
:mod:`condu_bench.perf.ratios`, side by side on this machine, with random weights (no download).

``--quick`` (minutes on 2 CPU cores) uses the project's tiny open_clip configs: the training-step and ConDU ratios on
``condu-tiny-vit``, the evaluation-cache ratios on ``condu-micro-vit-224`` (224 px input, so decoding costs what it
costs at real size). Without it every ratio uses ``model.arch`` (default ViT-B-16) at its real input size.

``--full-mtil`` instead times whole MTIL order-I runs on a generated tree (:mod:`condu_bench.perf.full_mtil_run`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from condu_bench.errors import UserError

QUICK = {"train_arch": "condu-tiny-vit", "eval_arch": "condu-micro-vit-224", "batch_size": 32, "steps": 30,
         "eval_images": 128, "eval_batch_size": 64, "repeats": 7, "experts": 4, "expert_images": 16}
FULL = {"train_arch": None, "eval_arch": None, "batch_size": None, "steps": 20, "eval_images": 512,
        "eval_batch_size": None, "repeats": 5, "experts": 4, "expert_images": 64}


def context_for(config: Any, arch: str):
    """A run context over random weights of ``arch`` (device, precision and train settings from ``config``)."""
    from condu_bench.method import RunContext
    from condu_bench.models.loading import load_model
    from condu_bench.training.device import autocast_factory, pick_device

    device = pick_device(config.device)
    loaded = load_model(replace(config.model, arch=arch, pretrained=None, checkpoint=None), progress=False)
    model = loaded.model.to(device).eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return RunContext(model=model, tokenizer=loaded.tokenizer, device=device, pretrained_state=state,
                      train_config=config.train, seed=0, train_transform=loaded.train_transform,
                      eval_transform=loaded.eval_transform, coop_train_transform=loaded.coop_train_transform, autocast=autocast_factory(device, config.train.precision))


def run_bench(config: Any, quick: bool, photo_root: Path, log=print) -> dict[str, Any]:
    from condu_bench.perf import ratios
    from condu_bench.training.device import resolve_num_workers

    plan = dict(QUICK if quick else FULL)
    train_arch = plan["train_arch"] or config.model.arch
    eval_arch = plan["eval_arch"] or config.model.arch
    batch = plan["batch_size"] or config.train.batch_size
    eval_batch = plan["eval_batch_size"] or config.eval.batch_size
    config = replace(config, train=replace(config.train, batch_size=batch))
    workers = resolve_num_workers(config.num_workers, synthetic=False)  # the photos are files, as real data
    results = []
    with tempfile.TemporaryDirectory(prefix="condu-bench-decoded-") as scratch:
        decoded = Path(scratch)
        log(f"overhead_ratio: {train_arch}, batch {batch}, {plan['steps']} steps")
        train_ctx = context_for(config, train_arch)
        results.append(ratios.overhead_ratio(train_ctx, plan["steps"], plan["repeats"]))
        photos = ratios.photo_task(photo_root, plan["eval_images"])
        log(f"eval_cache_speedup, feature_cache_speedup: {eval_arch}, {plan['eval_images']} JPEGs of 500x375")
        eval_ctx = context_for(config, eval_arch)
        results.append(ratios.eval_cache_speedup(eval_ctx, photos, decoded, eval_batch, workers, plan["repeats"]))
        results.append(ratios.feature_cache_speedup(eval_ctx, photos, decoded, eval_batch, plan["repeats"]))
        log(f"condu_agnostic_cost: {train_arch}, K = {plan['experts']}")
        tasks = [photos] + [ratios.photo_task(photo_root, plan["expert_images"], name=f"task{i}",
                                              offset=plan["eval_images"] + (i - 1) * plan["expert_images"])
                            for i in range(1, plan["experts"])]
        results.append(ratios.condu_agnostic_cost(train_ctx, tasks, decoded, eval_batch, plan["repeats"]))
        log(f"fixed_items_speedup: {train_arch} input size, batch {batch}")
        results.append(ratios.fixed_items_speedup(train_ctx, batch, plan["repeats"]))
    return {
        **{r.key: round(r.value, 4) for r in results},
        "targets": {r.key: {"target": r.target, "at_most": r.at_most, "met": r.met} for r in results},
        "measurements": [r.to_dict() for r in results],
        "device": str(train_ctx.device),
        "models": {"training_and_condu": train_arch, "evaluation": eval_arch},
        "plan": {**plan, "batch_size": batch, "eval_batch_size": eval_batch, "num_workers": workers},
        "quick": quick,
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import platform

    import torch

    from condu_bench import __version__

    return {"condu_bench": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "cpu_threads": str(torch.get_num_threads())}


def format_results(out: dict[str, Any]) -> str:
    lines = [f"device: {out['device']}, models: {out['models']['training_and_condu']} (training, ConDU), "
             f"{out['models']['evaluation']} (evaluation caches)", "",
             "| ratio | value | target | met | numerator | denominator |", "|:--|--:|:--|:--|:--|:--|"]
    for m in out["measurements"]:
        target = f"{'<=' if m['at_most'] else '>='} {m['target']:g}"
        lines.append(f"| {m['key']} | {m['value']:.3f} | {target} | {'yes' if m['met'] else 'NO'} | "
                     f"{m['candidate']}: {m['numerator_s']:.4f} s | {m['baseline']}: {m['denominator_s']:.4f} s |")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.full_mtil:
        return cmd_full_mtil(args)
    given = [flag for flag, value in (("--scale", args.scale), ("--methods", args.methods), ("--gen-workers", args.gen_workers))
             if value is not None]
    if given:
        raise UserError(f"{', '.join(given)} only apply with --full-mtil")
    from condu_bench.cli import resolve_benchmark
    from condu_bench.config import load_config
    from condu_bench.perf.photos import PHOTO_VERSION
    from condu_bench.synthetic.pretrain import default_cache_dir

    overrides = [] if args.quick else ["model.arch=ViT-B-16"]
    config = replace(load_config(resolve_benchmark(args.config), overrides + list(args.overrides)), progress=False)
    if config.num_threads:
        import torch

        torch.set_num_threads(config.num_threads)
    photo_root = Path(args.photos) if args.photos else default_cache_dir() / f"bench-photos-500x375-v{PHOTO_VERSION}"
    out = run_bench(config, args.quick, photo_root, log=_log)
    print(format_results(out))
    _write_json(args.json, out)
    return 0


def cmd_full_mtil(args: argparse.Namespace) -> int:
    from condu_bench.perf.full_mtil_run import format_full_mtil, run_full_mtil

    given = [flag for flag, value in (("--quick", args.quick), ("--config", args.config), ("--photos", args.photos)) if value]
    if given:
        raise UserError(f"{', '.join(given)} do not apply to --full-mtil (it runs benchmarks/mtil_order1.yaml on its own tree)")
    methods = [m.strip() for m in (args.methods or "finetune").split(",") if m.strip()]
    out = run_full_mtil(1.0 if args.scale is None else args.scale, methods, list(args.overrides), args.gen_workers, log=_log)
    print(format_full_mtil(out))
    _write_json(args.json, out)
    return 0


def _log(message: str) -> None:
    print(f"bench: {message}", flush=True)


def _write_json(path: str | None, out: dict[str, Any]) -> None:
    if path:
        from condu_bench.atomic_io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(out, indent=1) + "\n")
        print(f"wrote {path}")


def add_command(sub) -> None:
    bench = sub.add_parser("bench", help="the harness's speed targets as ratios measured side by side",
                           description="overhead_ratio, eval_cache_speedup, feature_cache_speedup, condu_agnostic_cost and fixed_items_speedup "
                                       "on random weights. --quick: tiny models, minutes on 2 CPU cores; without it, "
                                       "model.arch (default ViT-B-16) at its real input size, for a GPU machine.")
    bench.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. model.arch=ViT-L-14 device=cuda")
    bench.add_argument("--quick", action="store_true", help="tiny open_clip configs (the CPU check)")
    bench.add_argument("--json", metavar="FILE", help="also write the ratios, targets and timings as JSON")
    bench.add_argument("--config", help="benchmark whose settings are used (default synthetic_mtil)")
    bench.add_argument("--photos", help="folder for the generated 500x375 JPEGs (default $CONDU_BENCH_CACHE/bench-photos-500x375-v<version>)")
    bench.add_argument("--full-mtil", action="store_true",
                       help="time whole MTIL order-I runs (random ViT-B-16) on a generated zscl tree of the real test-set "
                            "sizes, cached as $CONDU_BENCH_CACHE/full-mtil-zscl-v*-scale*; KEY=VALUE override the run")
    bench.add_argument("--scale", type=float, help="--full-mtil: test-set sizes times this (default 1.0)")
    bench.add_argument("--methods", help="--full-mtil: comma-separated methods, one run each (default finetune)")
    bench.add_argument("--gen-workers", type=int, help="--full-mtil: processes generating the tree (default: every CPU)")
    bench.set_defaults(func=cmd_bench)

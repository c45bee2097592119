"""``condu-bench`` command line. Heavy libraries are imported inside the commands that need them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from condu_bench import resources
from condu_bench.errors import UserError, did_you_mean

DEFAULT_BENCHMARK = "synthetic_mtil"


def resolve_benchmark(name_or_path: str | None) -> Path:
    """A YAML path, or the name of a file in benchmarks/ (``mtil_order1`` -> benchmarks/mtil_order1.yaml)."""
    if name_or_path is None:
        return resources.benchmarks_dir() / f"{DEFAULT_BENCHMARK}.yaml"
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        return path
    candidate = resources.benchmark_path(name_or_path)
    if candidate is not None:
        return candidate
    from condu_bench.errors import unknown_name_message

    known = [p.stem for p in resources.benchmark_files()]
    raise UserError(unknown_name_message("benchmark", name_or_path, known) + "; or give a path to a YAML file")


def cmd_run(args: argparse.Namespace) -> int:
    from condu_bench.config import load_config
    from condu_bench.plugins import import_plugins

    import_plugins(args.plugin)  # before the config names its methods
    positional = [a for a in args.items if "=" not in a]
    overrides = [a for a in args.items if "=" in a]
    if len(positional) > 1:
        raise UserError(f"expected one config and KEY=VALUE overrides, got {positional}")
    path = resolve_benchmark(positional[0] if positional else None)
    config = load_config(path, overrides)
    if args.no_progress:
        from dataclasses import replace

        config = replace(config, progress=False)
    out = Path(args.out) if args.out else Path("results") / "runs" / config.name
    from condu_bench.experiment import run_experiment
    from condu_bench.reporting.run_report import write_leaderboard

    records = run_experiment(config, out, force=args.force)
    board = write_leaderboard(out, records)
    print(f"\n{config.name}: {len(records)} run(s) under {out}\n")
    print(board)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from condu_bench.registries import DATASETS, METHODS, SCENARIOS

    if args.what == "benchmarks":
        rows = [(p.stem, _yaml_description(p)) for p in resources.benchmark_files()]
    else:
        registry = {"methods": METHODS, "scenarios": SCENARIOS, "datasets": DATASETS}[args.what]
        rows = registry.describe()
    width = max((len(n) for n, _ in rows), default=0)
    for name, description in rows:
        print(f"{name.ljust(width)}  {description}")
    return 0


def _yaml_description(path: Path) -> str:
    """The first comment line of a benchmark file."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def cmd_pretrain(args: argparse.Namespace) -> int:
    from condu_bench.config import ModelConfig, apply_overrides
    from condu_bench.models.loading import synthetic_pretrain_config
    from condu_bench.synthetic.pretrain import cached_tiny_clip
    from condu_bench.synthetic.world_check import pretrained_tag

    recipe = apply_overrides({}, args.options)
    cfg = synthetic_pretrain_config(ModelConfig(pretrained=pretrained_tag(args.seed), pretrain=recipe))
    path = cached_tiny_clip(cfg, cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                            progress=not args.no_progress, rebuild=args.rebuild)
    print(path)
    return 0


WORLD_CHECK_OUT = "results/runs/world_check"


def cmd_world_check(args: argparse.Namespace) -> int:
    from condu_bench.synthetic.world_check import run_world_check

    def seeds(text: str) -> list[int]:
        try:
            return [int(x) for x in text.split(",") if x != ""]
        except ValueError:
            raise UserError(f"seed lists are integers separated by commas, got {text!r}") from None

    overrides = ["progress=false", *args.overrides]
    if args.geometry:
        from condu_bench.synthetic.geometry import run_geometry_check

        if args.ranking:
            raise UserError("--geometry measures the pretrained models without training; it does not combine with --ranking")
        print(run_geometry_check(seeds(args.pretrain_seeds), overrides, b2n=args.b2n))
        return 0
    if args.b2n:
        from condu_bench.synthetic.b2n_check import run_b2n_check

        if args.ranking:
            raise UserError("--ranking ranks MTIL methods; it does not combine with --b2n")
        table, ok = run_b2n_check(seeds(args.pretrain_seeds), seeds(args.seeds or "1,2,3"), overrides,
                                  f"{args.out}_b2n" if args.out == WORLD_CHECK_OUT else args.out)
        print(table)
        print("every base-to-novel property holds" if ok else "A PROPERTY FAILS: see the negative worst margins above")
        return 0 if ok else 1
    table, ok = run_world_check(seeds(args.pretrain_seeds), seeds(args.seeds or "0,1,2"), overrides, args.out,
                                ranking=args.ranking)
    print(table)
    print("every gate holds" if ok else "A GATE FAILS: see the negative worst margins above")
    return 0 if ok else 1


def cmd_table(args: argparse.Namespace) -> int:
    from condu_bench.reporting.tables import build_tables

    published = None if args.no_published else resources.published_dir()
    formats = tuple(f for f in args.formats.split(",") if f)
    root = Path(args.results)
    if not root.is_dir():
        raise UserError(f"results directory {root} does not exist (run `condu-bench run` first)")
    written = build_tables(root, Path(args.out or root / "tables"), formats=formats, published_dir=published)
    for path in written:
        print(path)
    return 0


def cmd_models_check(args: argparse.Namespace) -> int:
    """Check the model of each named config (default: every file in benchmarks/), or one given by flags."""
    from condu_bench.config import ModelConfig, load_config
    from condu_bench.models.check import check_model, format_checks

    if args.arch:
        models = [ModelConfig(arch=args.arch, pretrained=args.pretrained, checkpoint=args.checkpoint, cache_dir=args.cache_dir,
                              trust_torchscript=args.trust_torchscript)]
    else:
        paths = [resolve_benchmark(c) for c in args.configs] or resources.benchmark_files()
        models = list(dict.fromkeys(load_config(p, args.overrides).model for p in paths))  # each model once
    checks = [check_model(m) for m in models]
    print(format_checks(checks))
    return 0 if all(c.ok for c in checks) else 1


def cmd_data_check(args: argparse.Namespace) -> int:
    from condu_bench.datasets.check import check_datasets, format_check

    names = [n for n in args.datasets.split(",") if n] if args.datasets else None
    results = check_datasets(Path(args.root), args.layout, names, decode=args.decode)
    print(format_check(results))
    return 0 if all(r.ok for r in results) else 1


class SuggestingParser(argparse.ArgumentParser):
    """argparse with "did you mean" for a mistyped command or choice (its sub-parsers are of this class too)."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            choices = [str(c) for c in action.choices]
            hint = did_you_mean(str(value), choices)
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}{hint} (choose from {', '.join(choices)})")


def build_parser() -> argparse.ArgumentParser:
    parser = SuggestingParser(prog="condu-bench", description="Continual-learning benchmarks for CLIP-like models.")
    parser.add_argument("--version", action="version", version=f"condu-bench {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a benchmark (default: the embedded synthetic MTIL)",
                         description="Run CONFIG (a YAML path or a name in benchmarks/) with KEY=VALUE overrides, "
                                     "e.g. `condu-bench run methods=zeroshot,finetune train.iterations=50`.")
    run.add_argument("items", nargs="*", metavar="[CONFIG] [KEY=VALUE ...]")
    run.add_argument("--out", help="output directory (default results/runs/<config name>)")
    run.add_argument("--force", action="store_true", help="re-run finished results (the old ones are archived)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE.py",
                     help="import a module or .py file that registers methods (repeatable)")
    run.set_defaults(func=cmd_run)

    ls = sub.add_parser("ls", help="list registered methods, scenarios, datasets or benchmark files")
    ls.add_argument("what", choices=["methods", "scenarios", "datasets", "benchmarks"])
    ls.set_defaults(func=cmd_ls)

    pre = sub.add_parser("pretrain", help="pretrain (or find cached) the tiny CLIP of the synthetic world")
    pre.add_argument("--rebuild", action="store_true", help="pretrain again even if a valid cache exists")
    pre.add_argument("--cache-dir", help="cache directory (default $CONDU_BENCH_CACHE or ~/.cache/condu-bench)")
    pre.add_argument("--no-progress", action="store_true")
    pre.add_argument("--seed", type=int, default=0, help="pretraining seed (model.pretrained=synthetic-seedN uses seed N)")
    pre.add_argument("options", nargs="*", metavar="KEY=VALUE",
                     help="recipe changes, as model.pretrain.KEY=VALUE in a run (e.g. init_logit_scale=100, letters=0.3)")
    pre.set_defaults(func=cmd_pretrain)

    world = sub.add_parser("world-check", help="check the synthetic world's properties over pretrained models and seeds",
                           description="Run zero-shot and Continual-FT of the default benchmark for every pretraining seed "
                                       "and training seed, and print each property with its worst and mean margin and the runs that "
                                       "hold (exit 1 if a gate fails).")
    world.add_argument("--pretrain-seeds", default="0,1,2", help="tiny CLIPs pretrained with these seeds (default 0,1,2)")
    world.add_argument("--seeds", default=None, help="training seeds (default 0,1,2; with --b2n 1,2,3)")
    world.add_argument("--out", default=WORLD_CHECK_OUT,
                       help="run directory (finished runs are reused; --b2n: <default>_b2n)")
    world.add_argument("--ranking", action="store_true",
                       help="also run every MTIL method of the published order-I table and report the leaderboard's "
                            "Kendall tau-b against it per run (a target; about 13 core-minutes per run on 2 CPU cores), "
                            "and what each method learns and keeps (mean diagonal, its gap to Continual-FT's, "
                            "forgetting) next to ZSCL's released matrices")
    world.add_argument("--b2n", action="store_true",
                       help="check issue 8's base-to-novel properties on benchmarks/synthetic_b2n.yaml instead "
                            "(zero-shot, CoOp, KgCoOp, CLIPFit, MergeTune; about 2 core-minutes per run)")
    world.add_argument("--geometry", action="store_true",
                       help="print, per pretrained model and domain, the zero-shot embedding geometry (text-text and "
                            "image-text cosines, top-1 minus top-2 margin, logit gap at the model's temperature) of the "
                            "benchmark's test split and a 16-shot linear probe's accuracy on its frozen image features, "
                            "without training the model (seconds; with --b2n: the base-to-novel benchmark's)")
    world.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the benchmark")
    world.set_defaults(func=cmd_world_check)

    table = sub.add_parser("table", help="build tables (Markdown, CSV, LaTeX) from result files")
    table.add_argument("results", nargs="?", default="results/runs", help="directory searched for metrics.json files")
    table.add_argument("--out", help="where to write the tables (default RESULTS/tables)")
    table.add_argument("--formats", default="md,csv,tex")
    table.add_argument("--no-published", action="store_true", help="leave the published numbers out")
    table.set_defaults(func=cmd_table)

    from condu_bench.reporting.commands import add_commands

    add_commands(sub)  # report, tables

    from condu_bench.perf.command import add_command as add_bench_command

    add_bench_command(sub)

    data = sub.add_parser("data", help="datasets on disk").add_subparsers(dest="data_command", required=True)
    dcheck = data.add_parser("check", help="is each dataset present and well-formed under --root?",
                             description="One line per dataset; exit 0 only when every dataset asked for is usable.")
    dcheck.add_argument("--root", required=True, help="data root holding the dataset folders")
    dcheck.add_argument("--layout", required=True, choices=["zscl", "coop"], help="directory/split convention")
    dcheck.add_argument("--datasets", help="comma-separated names (default: every dataset of the layout)")
    dcheck.add_argument("--decode", action="store_true", help="also decode every image (slow; finds corrupt files)")
    dcheck.set_defaults(func=cmd_data_check)

    from condu_bench.datasets.cache_command import add_command as add_cache_command

    add_cache_command(sub)
    from condu_bench.param_count import add_command as add_params_command

    add_params_command(sub)
    from condu_bench.sweep.command import add_parser as add_sweep_parser

    add_sweep_parser(sub)

    models = sub.add_parser("models", help="model weights").add_subparsers(dest="models_command", required=True)
    mcheck = models.add_parser("check", help="find each model's weights (HF cache or local file) without network access",
                               description="Exit 0 only when every model checked is usable.")
    mcheck.add_argument("configs", nargs="*", help="benchmark names or YAML files (default: all of benchmarks/)")
    mcheck.add_argument("--arch", help="check one open_clip architecture instead of configs")
    mcheck.add_argument("--pretrained", help="pretrained tag with --arch (e.g. openai)")
    mcheck.add_argument("--checkpoint", help="local weight file with --arch")
    mcheck.add_argument("--cache-dir", help="Hugging Face cache directory (default: HF_HUB_CACHE)")
    mcheck.add_argument("--trust-torchscript", action="store_true",
                        help="with --checkpoint: accept a TorchScript archive that is not an OpenAI release (runs its code)")
    mcheck.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override applied to each config (e.g. --set model.cache_dir=/data/hf)")
    mcheck.set_defaults(func=cmd_models_check)
    return parser


def _version() -> str:
    from condu_bench import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # KEY=VALUE overrides may come after options (`run CONFIG --out X a=b`), which plain argparse refuses.
    args, extra = parser.parse_known_args(argv)
    positional_list = {"run": "items", "bench": "overrides", "sweep": "overrides"}.get(args.command)
    unknown = [e for e in extra if positional_list is None or e.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if positional_list:
        getattr(args, positional_list).extend(extra)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"condu-bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("condu-bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

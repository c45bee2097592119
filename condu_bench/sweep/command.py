"""``condu-bench sweep``: the command's arguments and body (the CLI module only registers it)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    sweep = sub.add_parser("sweep", help="run a sweep file (methods x option grids x seeds) on an executor",
                           description="Expand SWEEP (a YAML path or a name in benchmarks/sweeps/) into runs named "
                                       "<method>-seed<seed>-<config hash>, skip finished ones, run the rest, print a "
                                       "summary and the leaderboard. KEY=VALUE overrides apply to every run.")
    sweep.add_argument("sweep", metavar="SWEEP")
    sweep.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    sweep.add_argument("--executor", choices=["local", "ray", "slurm"], default="local")
    sweep.add_argument("--out", help="output directory (default results/sweeps/<sweep name>)")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs and their cost; run nothing")
    sweep.add_argument("--jobs", type=int, default=1,
                       help="local: runs at a time (one GPU each when there are GPUs); slurm: array parallelism")
    sweep.add_argument("--address", help="ray: address of a running cluster (default: start a local instance)")
    sweep.add_argument("--slurm-partition", help="slurm: partition to submit to")
    sweep.add_argument("--slurm-cluster", choices=["slurm", "local"], default="slurm",
                       help="slurm: 'local' runs the jobs through submitit's local executor (testing)")
    sweep.add_argument("--busy-retry-s", type=float, default=10.0,
                       help="how often to look again at runs that another live process is running (seconds)")
    sweep.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from condu_bench.sweep.driver import dry_run_text, run_sweep
    from condu_bench.sweep.executors import make_executor
    from condu_bench.sweep.spec import load_sweep, resolve_sweep

    sweep = load_sweep(resolve_sweep(args.sweep), args.overrides)
    out = Path(args.out) if args.out else Path("results") / "sweeps" / sweep.name
    if args.dry_run:
        print(dry_run_text(sweep, out))
        return 0
    executor = make_executor(args.executor, out, jobs=args.jobs, address=args.address,
                             slurm_cluster=args.slurm_cluster, slurm_partition=args.slurm_partition)
    return run_sweep(sweep, out, executor, busy_retry_s=args.busy_retry_s)

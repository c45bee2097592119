"""The one run function every executor uses: run one sweep run in its own directory, in a fresh Python process.

``launch(directory, threads)`` (or ``start`` for a non-blocking handle) starts
``python -m condu_bench.sweep.worker DIRECTORY`` with its output appended to ``DIRECTORY/run.log``. The worker
reads ``run.json`` (the :class:`~condu_bench.sweep.spec.RunSpec` the sweep wrote), takes the directory's lock,
runs the single (method, seed) through :func:`condu_bench.experiment.run_experiment` (which resumes from the run's
checkpoint) and records ``outcome.json``. Exit status: 0 finished now, ``EXIT_ALREADY_FINISHED`` finished earlier, 1 failed (traceback in the
log), ``EXIT_BUSY`` when another live process holds the run. A fresh process per run isolates runs from each
other and from the executor (a crash, a leak, CUDA state), and on Linux it dies with the process that launched it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from condu_bench.atomic_io import atomic_write_json

SPEC = "run.json"
LOG = "run.log"
OUTCOME = "outcome.json"
EXIT_FAILED = 1
EXIT_ALREADY_FINISHED = 3  # the result was there when the lock was taken (another process finished it)
EXIT_BUSY = 75  # EX_TEMPFAIL: try again later


def read_outcome(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / OUTCOME).read_text())
    except (OSError, ValueError):
        return None


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the launching process dies (Linux), so no orphan holds a lock."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start(directory: Path, threads: int | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the worker for ``directory`` (output appended to its ``run.log``); returns the process."""
    environment = {**os.environ, **(env or {})}
    if threads:
        environment.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), CONDU_BENCH_THREADS=str(threads))
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOG, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "condu_bench.sweep.worker", str(directory)], stdout=log,
                                stderr=subprocess.STDOUT, env=environment, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


def launch(directory: str | os.PathLike, threads: int | None = None) -> int:
    """Run the worker for ``directory`` to its end; its exit status (what Ray tasks and SLURM jobs return)."""
    return start(Path(directory), threads).wait()


def run_in_directory(directory: Path) -> int:
    """The worker's body (in the worker process): lock, run, record the outcome. Returns the exit status."""
    from condu_bench import run_store
    from condu_bench.run_lock import RunBusy, RunLock
    from condu_bench.sweep.spec import RunSpec

    spec = RunSpec.from_json(json.loads((directory / SPEC).read_text()))
    try:
        lock = RunLock(directory).acquire()
    except RunBusy as busy:
        print(f"[busy] {busy}", flush=True)
        return EXIT_BUSY
    started = time.time()
    header = f"{spec.run_id}: pid {os.getpid()} on {socket.gethostname()} at {time.strftime('%Y-%m-%dT%H:%M:%S')}"
    print(f"===== {header}", flush=True)
    outcome: dict[str, Any] = {"run_id": spec.run_id, "host": socket.gethostname(), "pid": os.getpid()}
    try:
        if run_store.finished_metrics(directory) is not None:
            print("[skip] finished result found", flush=True)
            return EXIT_ALREADY_FINISHED
        try:
            _run(spec, directory)
            outcome.update(status="done")
            code = 0
        except Exception as exc:  # any failure of this run: recorded, and the sweep goes on
            traceback.print_exc()
            outcome.update(status="failed", error=f"{type(exc).__name__}: {exc}".strip())
            code = EXIT_FAILED
        outcome["wall_s"] = round(time.time() - started, 2)
        atomic_write_json(directory / OUTCOME, outcome)
        print(f"===== {spec.run_id}: {outcome['status']} after {outcome['wall_s']} s", flush=True)
        return code
    finally:
        lock.release()


def _run(spec: Any, directory: Path) -> None:
    from condu_bench.config import RunConfig, from_dict, validate
    from condu_bench.errors import UserError
    from condu_bench.experiment import run_experiment
    from condu_bench.sweep.spec import run_identity

    config = from_dict(RunConfig, spec.config, f"{directory / SPEC}")
    validate(config, str(directory / SPEC))
    run_id, _ = run_identity(config, spec.method, spec.seed)
    if run_id != spec.run_id:
        raise UserError(f"{directory / SPEC} now resolves to run id {run_id}, not {spec.run_id}: this condu-bench "
                        "resolves the config differently from the one that planned the sweep; plan it again")
    threads = os.environ.get("CONDU_BENCH_THREADS")
    if config.num_threads is None and threads:  # the config's own thread count wins over the executor's share
        import torch

        torch.set_num_threads(int(threads))
    records = run_experiment(config, directory, directory_for=lambda out, _method, _seed: out)
    if not records:
        raise RuntimeError(f"run_experiment returned no record for {directory}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m condu_bench.sweep.worker RUN_DIRECTORY", file=sys.stderr)
        return 2
    return run_in_directory(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())

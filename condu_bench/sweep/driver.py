"""Drive a sweep: skip finished runs, hand the rest to an executor, show progress, summarise, rank.

Layout under the output directory: one directory per run id (``run.json`` the plan, ``run.log`` everything the
worker printed, ``outcome.json``, and the usual result files of a run), ``sweep_summary.json`` and the
leaderboard (``leaderboard.md`` / ``.csv``) over every finished run, methods labelled with their grid values.
A run that another process holds (another sweep into the same directory) is waited for, never run twice.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condu_bench import run_store
from condu_bench.atomic_io import atomic_write_json
from condu_bench.run_lock import live_owner
from condu_bench.sweep import worker
from condu_bench.sweep.spec import RunSpec, Sweep

BUSY_RETRY_S = 10.0


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


@dataclass
class SweepProgress:
    """Counts of runs by state and an ETA from the wall time of runs finished in this sweep; prints on change."""

    total: int
    slots: int
    stream: Any = None
    states: dict[str, str] = field(default_factory=dict)
    walls: list[float] = field(default_factory=list)
    _started: dict[str, float] = field(default_factory=dict)
    _last: str = ""

    def set(self, run_id: str, state: str) -> None:
        if state == "running":
            self._started[run_id] = time.time()
        elif run_id in self._started and state in ("done", "failed"):
            self.walls.append(time.time() - self._started.pop(run_id))
        self.states[run_id] = state
        self.show()

    def count(self, state: str) -> int:
        return sum(1 for s in self.states.values() if s == state)

    def eta_s(self) -> float | None:
        if not self.walls:
            return None
        remaining = self.total - sum(self.count(s) for s in ("done", "skipped", "failed"))
        return math.ceil(remaining / max(1, self.slots)) * (sum(self.walls) / len(self.walls))

    def line(self) -> str:
        finished = sum(self.count(s) for s in ("done", "skipped", "failed"))
        eta = self.eta_s()
        return (f"[sweep] {finished}/{self.total} finished: {self.count('done')} done, {self.count('skipped')} skipped, "
                f"{self.count('failed')} failed | {self.count('running')} running, {self.count('waiting')} waiting"
                + (f" | ETA {format_duration(eta)}" if eta is not None else ""))

    def show(self) -> None:
        text = self.line()
        if text != self._last:
            self._last = text
            print(text, file=self.stream or sys.stdout, flush=True)


def cost_text(spec: RunSpec) -> str:
    if spec.cost_iterations is None:
        return "? (tasks known once the data is read)"
    if spec.tasks and spec.cost_iterations:
        per_task = spec.cost_iterations / spec.tasks
        shown = f"{int(per_task)} x {spec.tasks}" if per_task == int(per_task) else f"{spec.tasks} tasks"
        return f"{spec.cost_iterations} iterations ({shown})"
    return f"{spec.cost_iterations} iterations"


def dry_run_text(sweep: Sweep, out: Path) -> str:
    lines = [f"sweep {sweep.name}: {len(sweep.runs)} run(s) into {out}"]
    width = max((len(s.run_id) for s in sweep.runs), default=0)
    for spec in sweep.runs:
        done = " [finished]" if (out / spec.run_id / run_store.METRICS).is_file() else ""
        res = spec.resources
        lines.append(f"  {spec.run_id.ljust(width)}  {spec.benchmark}  {spec.label}  cost {cost_text(spec)}  "
                     f"needs {res.gpus} GPU, {res.cpus} CPU"
                     + (f", {res.mem_gb:g} GB" if res.mem_gb else "") + (f", {res.time_min} min" if res.time_min else "") + done)
    known = [s.cost_iterations for s in sweep.runs if s.cost_iterations is not None]
    lines.append(f"total: {sum(known)} training iterations over {len(known)} run(s) with a known cost")
    return "\n".join(lines)


def _classify(directory: Path, code: int) -> tuple[str, str | None]:
    """(state, error) of a run after its worker exited with ``code``."""
    if code == worker.EXIT_BUSY:
        return "waiting", None
    if code == worker.EXIT_ALREADY_FINISHED:
        return "skipped", None
    outcome = worker.read_outcome(directory) or {}
    if code == 0:
        return "done", None
    if code < 0:
        return "failed", f"killed by signal {-code}"
    return "failed", outcome.get("error") or f"worker exit status {code}"


def run_sweep(sweep: Sweep, out: Path, executor: Any, busy_retry_s: float = BUSY_RETRY_S) -> int:
    """Run every unfinished run of ``sweep`` under ``out``; print the summary and the leaderboard. Exit status:
    0 when every run has a result, 1 when some failed."""
    out.mkdir(parents=True, exist_ok=True)
    dirs = {spec.run_id: out / spec.run_id for spec in sweep.runs}
    specs = {spec.run_id: spec for spec in sweep.runs}
    progress = SweepProgress(len(sweep.runs), executor.slots)
    errors: dict[str, str] = {}
    pending = []
    for spec in sweep.runs:
        if (dirs[spec.run_id] / run_store.METRICS).is_file():
            progress.states[spec.run_id] = "skipped"
        else:
            dirs[spec.run_id].mkdir(parents=True, exist_ok=True)
            atomic_write_json(dirs[spec.run_id] / worker.SPEC, spec.to_json())
            pending.append(spec.run_id)
            progress.states[spec.run_id] = "waiting"
    progress.show()

    def finished(run_id: str, code: int) -> None:
        state, error = _classify(dirs[run_id], code)
        if error:
            errors[run_id] = error
        progress.set(run_id, state)

    while pending:
        ready = []
        for run_id in pending:
            if (dirs[run_id] / run_store.METRICS).is_file():
                progress.set(run_id, "skipped")  # finished by another process meanwhile
            elif live_owner(dirs[run_id]) is None:
                ready.append(run_id)
        if ready:
            executor.run([(specs[r], dirs[r]) for r in ready], lambda r: progress.set(r, "running"), finished)
        pending = [r for r in pending if progress.states[r] == "waiting"]
        if pending:
            time.sleep(busy_retry_s)  # held by another live process: wait for it to finish or die

    summary = summarise(sweep, out, progress.states, errors)
    print(summary_text(summary))
    print(leaderboard_text(sweep, out))
    return 1 if summary["failed"] else 0


def summarise(sweep: Sweep, out: Path, states: dict[str, str], errors: dict[str, str]) -> dict[str, Any]:
    runs = []
    for spec in sweep.runs:
        directory = out / spec.run_id
        entry = {"run_id": spec.run_id, "label": spec.label, "benchmark": spec.benchmark, "state": states[spec.run_id],
                 "directory": str(directory), "log": str(directory / worker.LOG)}
        if spec.run_id in errors:
            entry["error"] = errors[spec.run_id]
        outcome = worker.read_outcome(directory)
        if outcome and "wall_s" in outcome:
            entry["wall_s"] = outcome["wall_s"]
        runs.append(entry)
    summary = {"sweep": sweep.name, "file": str(sweep.path), "runs": runs,
               **{s: sum(1 for r in runs if r["state"] == s) for s in ("done", "skipped", "failed")}}
    atomic_write_json(out / "sweep_summary.json", summary)
    return summary


def summary_text(summary: dict[str, Any]) -> str:
    lines = [f"\nsweep {summary['sweep']}: {summary['done']} done, {summary['skipped']} skipped "
             f"(finished earlier or elsewhere), {summary['failed']} failed"]
    for run in summary["runs"]:
        if run["state"] == "failed":
            lines.append(f"  FAILED {run['run_id']} ({run['label']}): {run.get('error')}\n         log: {run['log']}")
    return "\n".join(lines)


def leaderboard_text(sweep: Sweep, out: Path) -> str:
    """The leaderboard over every finished run of the sweep (through the reporting code), methods with their grid values."""
    from condu_bench.reporting.run_report import write_leaderboard

    records = []
    for spec in sweep.runs:
        record = run_store.finished_metrics(out / spec.run_id)
        if record is not None:
            records.append({**record, "method": spec.label})
    return write_leaderboard(out, records)


def read_summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "sweep_summary.json").read_text())

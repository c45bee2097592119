"""Where sweep runs execute: local subprocesses, Ray tasks or SLURM array jobs (submitit).

Each executor only decides where and with what resources :func:`condu_bench.sweep.worker.launch` runs for a run
directory, and reports each run's start and exit status to the driver. Ray and submitit are optional extras,
imported only when their executor is chosen.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from condu_bench.errors import UserError
from condu_bench.sweep import worker
from condu_bench.sweep.spec import Resources, RunSpec
from condu_bench.training.device import usable_cores

Item = tuple[RunSpec, Path]
Started = Callable[[str], None]
Finished = Callable[[str, int], None]  # run id, worker exit status
POLL_S = 0.5


def require_extra(module: str, extra: str, executor: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"the {executor} executor needs the {module} package, which is not installed: "
                        f'pip install "condu-bench[{extra}]"') from exc


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


class LocalExecutor:
    """``jobs`` worker processes at a time on this machine. With GPUs each run is pinned to one of them
    (CUDA_VISIBLE_DEVICES; at most one run per GPU); without, the CPU cores are divided between the jobs."""

    name = "local"

    def __init__(self, jobs: int = 1, gpus: list[str] | None = None, cpu_count: int | None = None):
        if jobs < 1:
            raise UserError(f"--jobs must be >= 1, got {jobs}")
        self.gpus = visible_gpus() if gpus is None else gpus
        self.jobs = min(jobs, len(self.gpus)) if self.gpus else jobs
        self.cores = cpu_count or usable_cores()
        self.threads = max(1, self.cores // self.jobs)

    @property
    def slots(self) -> int:
        return self.jobs

    def oversubscription(self, items: list[Item]) -> str | None:
        """A warning when CPU runs whose config fixes ``num_threads`` (it wins over this executor's share of the
        cores) would, ``jobs`` at a time, run more threads than there are cores; None otherwise."""
        if self.gpus or self.jobs == 1:
            return None
        most = max((spec.config.get("num_threads") or 0 for spec, _ in items), default=0)
        if self.jobs * most <= self.cores:
            return None
        return (f"sweep: {self.jobs} runs at a time with num_threads={most} from their config ask for "
                f"{self.jobs * most} threads on {self.cores} cores; oversubscribed PyTorch runs can each be several "
                f"times slower. Use --jobs {max(1, self.cores // most)}, or override num_threads={self.threads} (not "
                "part of a sweep run's identity)")

    def run(self, items: list[Item], started: Started, finished: Finished) -> None:
        warning = self.oversubscription(items)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        queue = list(items)
        free_gpus = list(self.gpus)
        running: dict[str, tuple[Any, str | None]] = {}
        while queue or running:
            while queue and len(running) < self.jobs:
                spec, directory = queue.pop(0)
                gpu = free_gpus.pop(0) if self.gpus else None
                env = {"CUDA_VISIBLE_DEVICES": gpu if gpu is not None else ""}
                running[spec.run_id] = (worker.start(directory, self.threads, env), gpu)
                started(spec.run_id)
            time.sleep(POLL_S)
            for run_id, (process, gpu) in list(running.items()):
                code = process.poll()
                if code is not None:
                    del running[run_id]
                    if gpu is not None:
                        free_gpus.append(gpu)
                    finished(run_id, code)


class RayExecutor:
    """Each run a Ray task asking for its ``gpus`` and ``cpus``; on the cluster at ``address`` or a local instance."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        self.ray = require_extra("ray", "ray", "ray")
        self.address, self.num_cpus = address, num_cpus

    @property
    def slots(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1))) if self.ray.is_initialized() else 1

    def run(self, items: list[Item], started: Started, finished: Finished) -> None:
        ray = self.ray
        ours = not ray.is_initialized()
        if ours:
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            task = ray.remote(worker.launch)
            futures = {}
            for spec, directory in items:
                res = spec.resources
                ref = task.options(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=3,
                                   name=spec.run_id).remote(str(directory), res.cpus)
                futures[ref] = spec.run_id
                started(spec.run_id)  # queued or running: Ray does not say which
            while futures:
                done, _ = ray.wait(list(futures), num_returns=1, timeout=POLL_S)
                for ref in done:
                    run_id = futures.pop(ref)
                    try:
                        code = ray.get(ref)
                    except Exception as exc:  # the task itself failed (node lost after its retries)
                        print(f"[ray] {run_id}: {type(exc).__name__}: {exc}", flush=True)
                        code = worker.EXIT_FAILED
                    finished(run_id, code)
        finally:
            if ours:
                ray.shutdown()


class SlurmExecutor:
    """SLURM array jobs through submitit, one array per distinct resource request. Each job is requeued on
    preemption or timeout (submitit checkpointing) and resumes from the run's own checkpoint."""

    name = "slurm"

    def __init__(self, folder: Path, cluster: str = "slurm", partition: str | None = None,
                 parallelism: int | None = None, extra: dict[str, Any] | None = None):
        self.submitit = require_extra("submitit", "slurm", "slurm")
        self.folder, self.cluster, self.partition = Path(folder), cluster, partition
        self.parallelism, self.extra = parallelism, dict(extra or {})

    @property
    def slots(self) -> int:
        return self.parallelism or 1

    def _executor(self, resources: Resources, name: str) -> Any:
        executor = self.submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
        params: dict[str, Any] = {"name": name, "timeout_min": resources.time_min or 24 * 60,
                                  "gpus_per_node": resources.gpus, "cpus_per_task": resources.cpus,
                                  "tasks_per_node": 1, "nodes": 1}
        if resources.mem_gb is not None:
            params["mem_gb"] = math.ceil(resources.mem_gb)  # SLURM takes whole units (--mem=64GB, not 64.0GB)
        if self.cluster == "slurm":
            params["slurm_signal_delay_s"] = 120  # time for the job to be requeued before it is killed
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.parallelism:
                params["slurm_array_parallelism"] = self.parallelism
        executor.update_parameters(**params, **self.extra)
        return executor

    def run(self, items: list[Item], started: Started, finished: Finished) -> None:
        from condu_bench.sweep.slurm_job import SweepRunJob

        groups: dict[Resources, list[Item]] = {}
        for item in items:
            groups.setdefault(item[0].resources, []).append(item)
        jobs: dict[str, Any] = {}
        for resources, group in groups.items():
            executor = self._executor(resources, f"condu-bench-sweep-{len(jobs)}")
            submitted = executor.map_array(SweepRunJob(), [str(d) for _, d in group], [resources.cpus] * len(group))
            for (spec, _), job in zip(group, submitted):
                jobs[spec.run_id] = job
                started(spec.run_id)
        while jobs:
            time.sleep(POLL_S)
            for run_id, job in list(jobs.items()):
                if not job.done():
                    continue
                del jobs[run_id]
                try:
                    code = job.result()
                except Exception as exc:  # the job died outside the worker (node failure, out of time after requeues)
                    print(f"[slurm] {run_id}: job {job.job_id}: {type(exc).__name__}: {exc}", flush=True)
                    code = worker.EXIT_FAILED
                finished(run_id, code)


def make_executor(name: str, out: Path, jobs: int = 1, address: str | None = None, slurm_cluster: str = "slurm",
                  slurm_partition: str | None = None) -> Any:
    if name == "local":
        return LocalExecutor(jobs)
    if name == "ray":
        return RayExecutor(address)
    if name == "slurm":
        return SlurmExecutor(out / ".submitit", slurm_cluster, slurm_partition, parallelism=jobs if jobs > 1 else None)
    raise UserError(f"unknown executor {name!r} (known: local, ray, slurm)")

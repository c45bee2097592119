"""The callable a SLURM array job runs (imported only by the slurm executor: it needs submitit)."""

from __future__ import annotations

import submitit

from condu_bench.sweep import worker


class SweepRunJob(submitit.helpers.Checkpointable):
    """Runs one sweep run directory. On preemption or timeout submitit calls ``checkpoint``, whose default requeues
    this same call; the requeued job resumes from the run's last checkpoint (written after every task)."""

    def __call__(self, directory: str, threads: int) -> int:
        return worker.launch(directory, threads)

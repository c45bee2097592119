"""The local executor pins each run to one GPU, never two runs on one GPU at once, and divides CPU threads."""

from types import SimpleNamespace

from condu_bench.sweep import executors


class FakeProcess:
    def __init__(self, log, env, polls_left):
        self.env, self.polls_left = env, polls_left
        log.append(("start", env["CUDA_VISIBLE_DEVICES"]))
        self.log = log

    def poll(self):
        self.polls_left -= 1
        if self.polls_left > 0:
            return None
        self.log.append(("end", self.env["CUDA_VISIBLE_DEVICES"]))
        return 0


def run_items(monkeypatch, executor, n):
    log, threads = [], []

    def start(directory, n_threads, env):
        threads.append(n_threads)
        return FakeProcess(log, env, polls_left=1 + len(log) % 3)

    monkeypatch.setattr(executors.worker, "start", start)
    monkeypatch.setattr(executors, "POLL_S", 0)
    items = [(SimpleNamespace(run_id=f"run{i}", config={}), f"/tmp/run{i}") for i in range(n)]
    done = []
    executor.run(items, started=lambda rid: None, finished=lambda rid, code: done.append((rid, code)))
    return log, threads, done


def test_runs_are_pinned_one_per_gpu(monkeypatch):
    executor = executors.LocalExecutor(jobs=3, gpus=["2", "5"], cpu_count=16)
    assert executor.jobs == 2  # no more runs at once than GPUs
    log, threads, done = run_items(monkeypatch, executor, 5)
    assert sorted(rid for rid, _ in done) == [f"run{i}" for i in range(5)] and all(code == 0 for _, code in done)
    busy = set()
    for event, gpu in log:
        assert gpu in {"2", "5"}
        if event == "start":
            assert gpu not in busy, f"two runs on GPU {gpu} at once"
            busy.add(gpu)
        else:
            busy.remove(gpu)
    assert threads == [8] * 5


def test_without_gpus_runs_see_no_gpu_and_share_the_cores(monkeypatch):
    executor = executors.LocalExecutor(jobs=2, gpus=[], cpu_count=2)
    log, threads, done = run_items(monkeypatch, executor, 3)
    assert {gpu for _, gpu in log} == {""} and threads == [1, 1, 1] and len(done) == 3


def test_cores_are_counted_from_the_affinity_mask_not_the_machine(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # a container allowed 4 of the host's 64 cores
    assert executors.LocalExecutor(jobs=2, gpus=[]).threads == 2


def test_runs_that_fix_more_threads_than_their_share_of_the_cores_are_warned_about(monkeypatch, capsys):
    def items(num_threads):
        config = {} if num_threads is None else {"num_threads": num_threads}
        return [(SimpleNamespace(run_id=f"run{i}", config=config), f"/tmp/run{i}") for i in range(3)]

    two_at_once = executors.LocalExecutor(jobs=2, gpus=[], cpu_count=2)
    warning = two_at_once.oversubscription(items(2))  # the synthetic benchmarks' num_threads: 2, two runs on 2 cores
    assert warning is not None and "4 threads on 2 cores" in warning
    assert "--jobs 1" in warning and "num_threads=1" in warning
    assert two_at_once.oversubscription(items(1)) is None  # 2 x 1 threads fit
    assert two_at_once.oversubscription(items(None)) is None  # the executor's share applies: 1 thread each
    assert executors.LocalExecutor(jobs=1, gpus=[], cpu_count=2).oversubscription(items(2)) is None
    assert executors.LocalExecutor(jobs=2, gpus=["0", "1"], cpu_count=2).oversubscription(items(2)) is None
    assert executors.LocalExecutor(jobs=4, gpus=[], cpu_count=16).oversubscription(items(4)) is None
    assert "--jobs 2" in executors.LocalExecutor(jobs=4, gpus=[], cpu_count=16).oversubscription(items(8))

    run_items(monkeypatch, two_at_once, 0)  # nothing to run: no warning, since nothing fixes threads
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(executors.worker, "start", lambda directory, n_threads, env: SimpleNamespace(poll=lambda: 0))
    monkeypatch.setattr(executors, "POLL_S", 0)
    two_at_once.run(items(2), started=lambda rid: None, finished=lambda rid, code: None)
    assert capsys.readouterr().err.strip() == warning

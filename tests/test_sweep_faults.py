"""Faults a sweep survives: SIGKILL in the middle of a task (resume is bit-exact), stale and live locks, two sweeps
into one directory (every run done exactly once), a full disk or a permission error (named, earlier results intact)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sweep import MICRO, write_sweep

from condu_bench import atomic_io, run_lock
from condu_bench.atomic_io import FileWriteError, atomic_write_json, atomic_write_text
from condu_bench.run_lock import RunBusy, RunLock
from condu_bench.sweep import worker
from condu_bench.sweep.spec import load_sweep

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ SIGKILL, then resume

def test_sigkill_in_the_middle_of_a_task_then_resume_is_bit_exact(tmp_path):
    overrides = {"scenario.options.order": ["shapes", "colours", "counts"], "train.iterations": 40}
    sweep = load_sweep(write_sweep(tmp_path, {"finetune": {"overrides": overrides}}))
    (spec,) = sweep.runs
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for directory in (whole, killed):
        directory.mkdir()
        atomic_write_json(directory / worker.SPEC, spec.to_json())
    assert worker.launch(whole, threads=1) == 0

    process = worker.start(killed, threads=1)
    progress = killed / "checkpoint" / "progress.json"
    deadline = time.time() + 300
    while not progress.exists():  # the first task is finished and checkpointed: the second is training now
        assert process.poll() is None and time.time() < deadline, (killed / worker.LOG).read_text()[-3000:]
        time.sleep(0.02)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (killed / "metrics.json").exists()
    assert (killed / run_lock.LOCK_NAME).exists()  # the dead worker's lock is left behind ...
    assert worker.launch(killed, threads=1) == 0  # ... judged stale (its pid is dead), and the run resumes
    log = (killed / worker.LOG).read_text()
    assert log.count("[fresh]") == 1 and log.count("[resume]") == 1

    assert (killed / "accuracy_matrix.csv").read_bytes() == (whole / "accuracy_matrix.csv").read_bytes()
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (whole, killed))
    assert a["final_state_sha256"] == b["final_state_sha256"] is not None  # model + method state, bit for bit
    assert a["per_dataset"] == b["per_dataset"] and a["config_hash"] == b["config_hash"]


# ------------------------------------------------------------------ locks

def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(directory: Path, **owner) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / run_lock.LOCK_NAME
    path.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "started": time.time(), "token": "t",
                                "started_at": "then", **owner}))
    return path


def test_a_live_lock_is_busy_and_names_its_owner(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path, pid=child.pid, started=time.time() + 5)
        with pytest.raises(RunBusy, match=rf"pid {child.pid} on host {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
    finally:
        child.kill()
        child.wait()


def test_stale_locks_are_taken_over(tmp_path, monkeypatch):
    write_lock(tmp_path / "dead", pid=dead_pid())  # this host, pid gone
    with RunLock(tmp_path / "dead") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / "dead" / run_lock.LOCK_NAME).exists()

    remote = write_lock(tmp_path / "remote", host="another-node", pid=os.getpid())
    with pytest.raises(RunBusy, match="another-node"):  # another host with a fresh heartbeat: alive as far as we know
        RunLock(tmp_path / "remote").acquire()
    old = time.time() - run_lock.STALE_AFTER_S - 5
    os.utime(remote, (old, old))  # its heartbeat stopped
    with RunLock(tmp_path / "remote"):
        pass


def test_locks_are_reentrant_in_a_process_and_exclusive_between_processes(tmp_path):
    with RunLock(tmp_path) as outer:
        with RunLock(tmp_path) as inner:
            assert inner is outer
        assert outer.path.exists()  # the inner release keeps the outer hold
        code = f"from condu_bench.run_lock import RunLock; RunLock({str(tmp_path)!r}).acquire()"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert other.returncode != 0 and "RunBusy" in other.stderr and str(os.getpid()) in other.stderr
    assert not outer.path.exists()


def test_two_concurrent_sweeps_into_one_directory_run_every_run_exactly_once(tmp_path):
    path = write_sweep(tmp_path, {"zeroshot": {}}, seeds=(0, 1, 2))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "condu_bench.cli", "sweep", str(path), "--out", str(out), "--jobs", "1",
               "--busy-retry-s", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sweeps = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
              for _ in range(2)]
    outputs = [s.communicate(timeout=600)[0] for s in sweeps]
    assert [s.returncode for s in sweeps] == [0, 0], outputs
    runs = load_sweep(path).runs
    for spec in runs:
        log = (out / spec.run_id / worker.LOG).read_text()
        assert log.count("[fresh]") == 1 and log.count(f"{spec.run_id}: done") == 1, log
        assert (out / spec.run_id / "metrics.json").is_file()
    done = [int(o.split("sweep micro: ")[1].split(" done")[0]) for o in outputs]
    assert sum(done) == len(runs)  # each run counted as done by exactly one sweep, skipped by the other
    assert all("| zeroshot |" in o for o in outputs)  # both print the full leaderboard


# ------------------------------------------------------------------ full disk, no permission

@pytest.mark.parametrize("where, code", [("replace", errno.ENOSPC), ("mkstemp", errno.EACCES)])
def test_a_failed_write_names_the_path_and_keeps_the_old_file(tmp_path, monkeypatch, where, code):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "earlier result")

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    target = atomic_io.os if where == "replace" else atomic_io.tempfile
    monkeypatch.setattr(target, where, fail)
    with pytest.raises(FileWriteError, match=rf"cannot write {path}: {os.strerror(code)}") as caught:
        atomic_write_text(path, "new result")
    assert caught.value.errno == code and caught.value.filename == str(path)
    assert path.read_text() == "earlier result"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def test_a_full_disk_at_the_end_of_a_run_keeps_its_checkpoint_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    from helpers import micro_overrides

    from condu_bench.config import load_config
    from condu_bench.experiment import run_experiment

    config = load_config(None, micro_overrides("finetune") + ["scenario.options.order=shapes,colours"])
    real = atomic_io.os.replace

    def disk_full_for_metrics(src, dst):
        if Path(dst).name == "metrics.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)

    monkeypatch.setattr(atomic_io.os, "replace", disk_full_for_metrics)
    with pytest.raises(FileWriteError, match=r"cannot write .*finetune/seed0/metrics.json: No space left on device"):
        run_experiment(config, tmp_path, log=lambda *_: None)
    monkeypatch.undo()
    assert (tmp_path / "finetune" / "seed0" / "checkpoint" / "progress.json").is_file()  # both tasks are kept
    logs = []
    (record,) = run_experiment(config, tmp_path, log=logs.append)
    assert any(line.startswith("[resume]") for line in logs) and record["method"] == "finetune"
    assert not (tmp_path / "finetune" / "seed0" / run_lock.LOCK_NAME).exists()

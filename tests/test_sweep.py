"""Sweeps: sweep files expand into runs with stable, distinct ids; the local executor runs them, skips finished ones,
and a failing run is reported with its traceback while the others finish."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from condu_bench.errors import UserError
from condu_bench.sweep import worker
from condu_bench.sweep.driver import read_summary, run_sweep
from condu_bench.sweep.executors import LocalExecutor
from condu_bench.sweep.spec import load_sweep, resolve_sweep

ROOT = Path(__file__).resolve().parents[1]
# A run of seconds: an untrained micro CLIP on two small synthetic domains (as helpers.micro_overrides).
MICRO = {
    "model.arch": "condu-micro-vit", "model.pretrained": "none",
    "scenario.options.order": ["shapes", "colours"], "scenario.options.n_train_per_class": 6,
    "scenario.options.n_test_per_class": 4, "train.iterations": 3, "train.batch_size": 8, "train.warmup_steps": 1,
    "num_threads": 1,
}


def write_sweep(directory: Path, methods: dict, seeds=(0,), grid=None, name="micro") -> Path:
    data = {"name": name, "benchmarks": ["synthetic_mtil"], "overrides": MICRO, "methods": methods, "seeds": list(seeds)}
    if grid:
        data["grid"] = grid
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


FOUR_RUNS = {"zeroshot": {}, "finetune": {"grid": {"train.lr": [1.0e-3, 1.0e-4]}}, "wise_ft": {}}


def results_of(out: Path, sweep) -> dict[str, tuple]:
    """run id -> (per-dataset numbers, final state hash) of every finished run."""
    found = {}
    for spec in sweep.runs:
        record = json.loads((out / spec.run_id / "metrics.json").read_text())
        found[spec.run_id] = (record["per_dataset"], record["final_state_sha256"])
    return found


# ------------------------------------------------------------------ expansion and run ids

def test_grid_expands_into_labelled_runs_with_readable_ids(tmp_path):
    methods = {"zeroshot": {}, "wise_ft": {"grid": {"method_options.wise_ft.alpha": [0.5, 0.8]}}}
    sweep = load_sweep(write_sweep(tmp_path, methods, seeds=(0, 1), grid={"train.lr": [1.0e-4, 3.0e-4]}))
    # zeroshot: 2 lrs x 2 seeds; wise_ft: 2 lrs x 2 alphas x 2 seeds
    assert len(sweep.runs) == 4 + 8
    ids = [r.run_id for r in sweep.runs]
    assert len(set(ids)) == len(ids)
    for spec in sweep.runs:
        method, seed, digest = spec.run_id.rsplit("-", 2)
        assert method == spec.method and seed == f"seed{spec.seed}" and len(digest) == 10
        assert spec.config["methods"] == [spec.method] and spec.config["seeds"] == [spec.seed]
    labels = {r.label for r in sweep.runs if r.method == "wise_ft"}
    assert "wise_ft (train.lr=0.0001, alpha=0.5)" in labels and len(labels) == 4
    one = next(r for r in sweep.runs if r.method == "wise_ft" and r.variant["method_options.wise_ft.alpha"] == 0.5)
    assert one.config["method_options"]["wise_ft"]["alpha"] == 0.5 and one.cost_iterations == 3 * 2 and one.tasks == 2


def test_run_ids_are_stable_across_processes_and_machines_and_change_with_the_config(tmp_path):
    path = write_sweep(tmp_path, {"finetune": {"grid": {"train.lr": [1.0e-4, 3.0e-4]}}}, seeds=(0, 1))
    ids = [r.run_id for r in load_sweep(path).runs]
    code = ("import sys; from pathlib import Path; from condu_bench.sweep.spec import load_sweep\n"
            "print(' '.join(r.run_id for r in load_sweep(Path(sys.argv[1])).runs))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env,
                           cwd=tmp_path, check=True).stdout.split()
    assert other == ids
    # where the data and weights are and how many threads run is not part of the identity ...
    assert [r.run_id for r in load_sweep(path, ["data_root=/elsewhere", "num_threads=7"]).runs] == ids
    # ... but anything that changes the result is
    changed = [r.run_id for r in load_sweep(path, ["train.batch_size=4"]).runs]
    assert not set(changed) & set(ids)


def test_run_ids_do_not_collide_over_a_large_grid_and_duplicates_are_one_run(tmp_path):
    lrs = [round(1e-5 * (k + 1), 8) for k in range(100)]
    sweep = load_sweep(write_sweep(tmp_path, {"finetune": {"grid": {"train.lr": lrs}}}, seeds=(0, 1)))
    assert len({r.run_id for r in sweep.runs}) == len(sweep.runs) == 200
    # a grid value equal to what the overrides already set resolves to the same config: one run
    same = load_sweep(write_sweep(tmp_path, {"finetune": {"grid": {"train.iterations": [3, 3]}}}, name="dup"))
    assert len(same.runs) == 1


@pytest.mark.parametrize("change, message", [
    ({"method": ["zeroshot"]}, "unknown key 'method'; did you mean 'methods'"),
    ({"methods": {"fintune": {}}}, "unknown method 'fintune'; did you mean 'finetune'"),
    ({"methods": {"finetune": {"grid": {"train.lr": 0.1}}}}, "a grid entry is a non-empty list"),
    ({"methods": {"finetune": {"gird": {}}}}, "did you mean 'grid'"),
    ({"overrides": {"train.iteratons": 3}}, "did you mean 'iterations'"),
    ({"seeds": []}, "`seeds` is a non-empty list"),
    ({"resources": {"gpu": 1}}, "did you mean 'gpus'"),
    ({"methods": {"finetune": {"benchmarks": ["mtil_order1"]}}}, "not in the sweep's benchmarks"),
])
def test_malformed_sweep_files_are_clear_errors(tmp_path, change, message):
    data = {"name": "bad", "benchmarks": ["synthetic_mtil"], "overrides": MICRO, "methods": {"finetune": {}}, **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_sweep(path)


def test_shipped_sweep_files_expand():
    synthetic = load_sweep(resolve_sweep("synthetic_mtil"))
    assert len(synthetic.runs) == 10 and {r.method for r in synthetic.runs} == {"zeroshot", "finetune", "wise_ft"}
    for order in ("1", "2"):
        board = load_sweep(resolve_sweep(f"mtil_order{order}_leaderboard"), ["data_root=/data"])
        assert {r.method for r in board.runs} == {"zeroshot", "finetune", "lwf", "lwf_vr", "icarl", "wise_ft", "zscl",
                                                  "moe_adapters", "condu", "condu_lora"}
        lora = next(r for r in board.runs if r.method == "condu_lora")
        assert lora.benchmark == f"mtil_order{order}_lora" and lora.cost_iterations == 11 * 1000
        assert {r.benchmark for r in board.runs if r.method != "condu_lora"} == {f"mtil_order{order}"}
        assert all(r.resources.gpus == 1 for r in board.runs)


def test_dry_run_lists_runs_and_costs(tmp_path, capsys):
    from condu_bench.cli import main

    path = write_sweep(tmp_path, FOUR_RUNS)
    assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "4 run(s)" in out and "finetune (train.lr=0.001)" in out and "cost 6 iterations (3 x 2)" in out
    assert "total: 18 training iterations" in out  # zeroshot trains nothing
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ running

@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The 4-run micro sweep, run once by the local executor (two at a time)."""
    base = tmp_path_factory.mktemp("local")
    sweep = load_sweep(write_sweep(base, FOUR_RUNS))
    out = base / "out"
    code = run_sweep(sweep, out, LocalExecutor(jobs=2))
    return sweep, out, code


def test_local_sweep_runs_every_run_into_its_own_directory(local_sweep, capsys):
    sweep, out, code = local_sweep
    assert code == 0
    summary = read_summary(out)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (4, 0, 0)
    results = results_of(out, sweep)
    finetunes = [results[r.run_id] for r in sweep.runs if r.method == "finetune"]
    assert finetunes[0] != finetunes[1]  # two option settings of one method, two results side by side
    assert all(sha and len(sha) == 64 for _, sha in finetunes)
    for spec in sweep.runs:
        log = (out / spec.run_id / worker.LOG).read_text()
        assert log.count("[fresh]") == 1 and f"{spec.run_id}: done" in log
        assert not (out / spec.run_id / ".lock").exists()  # released
    board = (out / "leaderboard.md").read_text()
    assert "finetune (train.lr=0.001)" in board and "finetune (train.lr=0.0001)" in board and "zeroshot" in board


def test_finished_runs_are_skipped(local_sweep, tmp_path, capsys):
    sweep, out, _ = local_sweep
    before = {r.run_id: (out / r.run_id / "metrics.json").read_text() for r in sweep.runs}
    assert run_sweep(sweep, out, LocalExecutor(jobs=2)) == 0
    summary = read_summary(out)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, 4, 0)
    assert {r.run_id: (out / r.run_id / "metrics.json").read_text() for r in sweep.runs} == before
    assert "4 skipped" in capsys.readouterr().out


def test_a_failing_run_is_reported_with_its_traceback_and_the_others_finish(tmp_path, capsys):
    methods = {"zeroshot": {}, "finetune": {"overrides": {"scenario.options.order": ["shapes", "no_such_domain"]}}}
    sweep = load_sweep(write_sweep(tmp_path, methods))
    out = tmp_path / "out"
    assert run_sweep(sweep, out, LocalExecutor(jobs=1)) == 1
    summary = read_summary(out)
    assert (summary["done"], summary["failed"]) == (1, 1)
    failed = next(r for r in summary["runs"] if r["state"] == "failed")
    assert failed["run_id"].startswith("finetune-") and "no_such_domain" in failed["error"]
    log = Path(failed["log"]).read_text()
    assert "Traceback (most recent call last)" in log and "no_such_domain" in log
    printed = capsys.readouterr().out
    assert f"FAILED {failed['run_id']}" in printed and failed["log"] in printed
    assert (out / next(r.run_id for r in sweep.runs if r.method == "zeroshot") / "metrics.json").is_file()


# ------------------------------------------------------------------ Ray and SLURM (submitit) executors

def two_trained_runs(sweep):
    """One fine-tuning run and the WiSE-FT run of the four: what the other executors must reproduce bit for bit
    (two, not four, to keep the suite's time: each run is a process that imports torch and Avalanche)."""
    runs = [r for r in sweep.runs if r.method == "finetune"][:1] + [r for r in sweep.runs if r.method == "wise_ft"]
    assert len(runs) == 2
    return dataclasses.replace(sweep, runs=runs)


def test_ray_executor_matches_local(local_sweep, tmp_path):
    pytest.importorskip("ray", reason='the Ray executor needs Ray: pip install "condu-bench[ray]"')
    from condu_bench.sweep.executors import RayExecutor

    full, local_out, _ = local_sweep
    sweep = two_trained_runs(full)
    out = tmp_path / "ray"
    assert run_sweep(sweep, out, RayExecutor(num_cpus=2)) == 0  # a local Ray instance, two 1-CPU runs at a time
    assert read_summary(out)["done"] == 2
    assert results_of(out, sweep) == results_of(local_out, sweep)


def test_slurm_executor_through_submitit_local_mode_matches_local(local_sweep, tmp_path):
    pytest.importorskip("submitit", reason='the SLURM executor needs submitit: pip install "condu-bench[slurm]"')
    from condu_bench.sweep.executors import SlurmExecutor

    full, local_out, _ = local_sweep
    sweep = two_trained_runs(full)
    out = tmp_path / "slurm"
    assert run_sweep(sweep, out, SlurmExecutor(out / ".submitit", cluster="local")) == 0
    assert read_summary(out)["done"] == 2
    assert results_of(out, sweep) == results_of(local_out, sweep)
    assert list((out / ".submitit").iterdir())  # submitit's job folders: the runs went through it


def test_missing_extras_name_the_pip_extra(monkeypatch):
    from condu_bench.sweep import executors

    for module in ("ray", "submitit"):
        monkeypatch.setitem(sys.modules, module, None)  # `import ray` now raises ImportError
    with pytest.raises(UserError, match=r'pip install "condu-bench\[ray\]"'):
        executors.make_executor("ray", Path("o"))
    with pytest.raises(UserError, match=r'pip install "condu-bench\[slurm\]"'):
        executors.make_executor("slurm", Path("o"))


def test_progress_counts_states_and_estimates_the_eta_from_finished_runs(monkeypatch):
    import io

    from condu_bench.sweep import driver

    clock = [1000.0]
    monkeypatch.setattr(driver.time, "time", lambda: clock[0])
    shown = io.StringIO()
    progress = driver.SweepProgress(total=5, slots=2, stream=shown)
    progress.states.update({r: "waiting" for r in "abcde"})
    progress.set("a", "running")
    progress.set("b", "running")
    assert progress.line().endswith("| 2 running, 3 waiting")  # no ETA before a run finishes
    clock[0] += 60
    progress.set("a", "done")
    clock[0] += 60
    progress.set("b", "failed")
    # runs took 60 s and 120 s; 3 left on 2 slots: two rounds of 90 s
    assert progress.line() == "[sweep] 2/5 finished: 1 done, 0 skipped, 1 failed | 0 running, 3 waiting | ETA 3m00s"
    assert shown.getvalue().count("\n") == 4  # one line per change


def test_slurm_job_script_requests_each_runs_resources(tmp_path, monkeypatch):
    pytest.importorskip("submitit", reason='the SLURM executor needs submitit: pip install "condu-bench[slurm]"')
    from submitit.slurm.slurm import _make_sbatch_string

    from condu_bench.sweep.executors import SlurmExecutor
    from condu_bench.sweep.spec import Resources

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")  # submitit looks for srun
    executor = SlurmExecutor(tmp_path / "jobs", cluster="slurm", partition="gpu", parallelism=4)
    slurm = executor._executor(Resources(gpus=1, cpus=10, mem_gb=64.0, time_min=240), "sweep")._executor
    script = _make_sbatch_string(command="python run", folder=str(tmp_path), **slurm.parameters)
    for line in ("--gpus-per-node=1", "--cpus-per-task=10", "--mem=64GB", "--time=240", "--partition=gpu",
                 "--signal=USR2@120"):  # the signal submitit turns into a requeue before the time limit
        assert f"#SBATCH {line}\n" in script, script
    # on preemption / timeout submitit calls checkpoint(): the same call is requeued, and the worker resumes the run
    from condu_bench.sweep.slurm_job import SweepRunJob

    job = SweepRunJob()
    requeued = job.checkpoint("/shared/out/run", 10)
    assert requeued.function is job and requeued.args == ("/shared/out/run", 10)

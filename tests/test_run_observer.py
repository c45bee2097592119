"""Live logging: TensorBoard gets every step's loss and lr and each accuracy row; W&B (offline) the same; off by default."""

from __future__ import annotations

import json

import pytest
from helpers import micro_overrides

from condu_bench.config import load_config
from condu_bench.errors import UserError
from condu_bench.experiment import run_experiment
from condu_bench.reporting.matrix_io import read_accuracy_matrix

ITERATIONS, TASKS = 3, 2


def run(tmp_path, *logging):
    config = load_config(None, micro_overrides("finetune", iterations=ITERATIONS)
                         + ["scenario.options.order=shapes,colours", *logging])
    (record,) = run_experiment(config, tmp_path, log=lambda *_: None)
    return tmp_path / "finetune" / "seed0", record


def test_tensorboard_and_wandb_offline_log_losses_lr_and_the_growing_matrix(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_SILENT", "true")
    directory, record = run(tmp_path, "logging.tensorboard=true", "logging.wandb.project=condu-test",
                            "logging.wandb.mode=offline")
    matrix, steps, columns = read_accuracy_matrix(directory / "accuracy_matrix.csv")

    events = EventAccumulator(str(directory / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(ITERATIONS * TASKS))  # global step over the tasks
    lrs = [e.value for e in events.Scalars("train/lr")]
    assert lrs[:ITERATIONS] == lrs[ITERATIONS:] and lrs[-1] < lrs[1]  # the cosine decay, restarted per task
    assert lrs[1] == pytest.approx(1e-4)  # train.lr after the one warm-up step
    for j, name in enumerate(columns):
        logged = events.Scalars(f"accuracy/{name}")
        assert [e.step for e in logged] == [ITERATIONS * (k + 1) for k in range(TASKS)]
        assert [e.value for e in logged] == pytest.approx(list(matrix[:, j]), abs=1e-4)

    (run_dir,) = (directory / "wandb").glob("offline-run-*")
    assert run_dir.name.endswith(f"finetune-seed0-{record['config_hash']}")  # stable id: a resumed run continues it
    tables = [json.loads(p.read_text()) for p in (run_dir / "files" / "media" / "table").glob("accuracy_matrix_*.json")]
    tables.sort(key=lambda t: len(t["data"]))
    assert [len(t["data"]) for t in tables] == [1, 2]  # the matrix as it grows, one table per task
    assert tables[-1]["columns"] == ["step", *columns]
    assert [row[0] for row in tables[-1]["data"]] == steps
    assert [v for row in tables[-1]["data"] for v in row[1:]] == pytest.approx(matrix.ravel().tolist(), abs=1e-4)
    assert (run_dir / f"run-finetune-seed0-{record['config_hash']}.wandb").stat().st_size > 0


def test_logging_is_off_by_default_and_not_part_of_the_config_hash(tmp_path):
    directory, record = run(tmp_path / "plain")
    assert not (directory / "tensorboard").exists() and not (directory / "wandb").exists()
    _, logged = run(tmp_path / "logged", "logging.tensorboard=true")
    assert logged["config_hash"] == record["config_hash"] and logged["per_dataset"] == record["per_dataset"]


def test_wandb_needs_a_project():
    with pytest.raises(UserError, match="logging.wandb.project=NAME"):
        load_config(None, ["logging.wandb.mode=offline"])

"""The shared loop on an untrained micro CLIP: matrices, trainable sets, NaN guard, skip / force / resume."""

import json

import pytest
import torch
from helpers import micro_overrides

from condu_bench.config import load_config
from condu_bench.errors import TrainingDiverged, UserError
from condu_bench.experiment import run_experiment
from condu_bench.method import BaseMethod
from condu_bench.registries import METHODS
from condu_bench.reporting.matrix_io import read_accuracy_matrix


def run(tmp_path, *extra, methods="zeroshot,finetune", force=False, out=None):
    config = load_config(None, micro_overrides(methods) + list(extra))
    return run_experiment(config, out or tmp_path / "out", force=force, log=lambda *_: None)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    records = run(out, out=out)
    return out, {r["method"]: r for r in records}


def test_outputs_and_matrix_shapes(first_run):
    out, records = first_run
    for method in ("zeroshot", "finetune"):
        directory = out / method / "seed0"
        for name in ("config.yaml", "accuracy_matrix.csv", "metrics.json", "report.md", "accuracy_matrix.png"):
            assert (directory / name).is_file(), name
        matrix, steps, columns = read_accuracy_matrix(directory / "accuracy_matrix.csv")
        assert steps == columns == ["shapes", "colours", "counts"]
        assert matrix.shape == (3, 3)
        saved = json.loads((directory / "metrics.json").read_text())
        assert saved["method"] == method and saved["seed"] == 0 and saved["split_convention"] == "synthetic"
        assert set(saved["per_dataset"]) == {"shapes", "colours", "counts"}
        assert saved["per_dataset"]["shapes"]["transfer"] is None
        assert not (directory / "checkpoint").exists()  # cleared once finished


def test_zeroshot_rows_are_equal_and_finetune_changes_them(first_run):
    out, records = first_run
    zs, _, _ = read_accuracy_matrix(out / "zeroshot" / "seed0" / "accuracy_matrix.csv")
    ft, _, _ = read_accuracy_matrix(out / "finetune" / "seed0" / "accuracy_matrix.csv")
    assert (zs == zs[0]).all()
    assert not (ft == zs).all()
    assert records["zeroshot"]["last"] == pytest.approx(zs[0].mean())


def test_same_seed_gives_identical_results(first_run, tmp_path):
    out, records = first_run
    again = {r["method"]: r for r in run(tmp_path, methods="finetune")}
    assert again["finetune"]["per_dataset"] == records["finetune"]["per_dataset"]


def test_runs_record_where_their_time_went(first_run):
    _, records = first_run
    seconds = records["finetune"]["method_report"]["seconds"]
    assert seconds["tasks"] == 3  # shapes, colours, counts
    assert seconds["train_seconds"] > seconds["data_wait_seconds"] > 0 and seconds["eval_seconds"] > 0
    assert records["zeroshot"]["method_report"]["seconds"]["tasks"] == 0  # evaluated once, never trained


def test_finished_runs_are_skipped_and_never_overwritten(first_run, tmp_path):
    out, _ = first_run
    metrics = out / "finetune" / "seed0" / "metrics.json"
    before = metrics.read_text()
    logs = []
    config = load_config(None, micro_overrides("finetune"))
    run_experiment(config, out, log=logs.append)
    assert metrics.read_text() == before
    assert any("[skip] finetune" in line for line in logs)
    with pytest.raises(UserError, match="different configuration"):
        run(tmp_path, "train.iterations=4", methods="finetune", out=out)
    assert metrics.read_text() == before


def test_force_archives_the_old_result(tmp_path):
    out = tmp_path / "o"
    run(tmp_path, methods="zeroshot", out=out)
    run(tmp_path, "scenario.options.n_test_per_class=3", methods="zeroshot", out=out, force=True)
    archived = list((out / "zeroshot").glob("seed0.replaced-*"))
    assert len(archived) == 1 and (archived[0] / "metrics.json").is_file()


class OnlyLayerNorms(BaseMethod):
    """Trains LayerNorm parameters only."""

    name = "test_only_ln"

    def trainable_parameters(self, model):
        return [(n, p) for n, p in model.named_parameters() if ".ln_" in n or n.startswith("ln_")]


def test_only_the_methods_parameters_change(tmp_path, monkeypatch):
    captured = {}

    class Probe(OnlyLayerNorms):
        def after_task(self, task, ctx):
            captured.setdefault("before", ctx.pretrained_state)
            captured["after"] = {k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()}

    METHODS.register("test_only_ln")(Probe)
    try:
        run(tmp_path, methods="test_only_ln")
    finally:
        METHODS._entries.pop("test_only_ln")
    before, after = captured["before"], captured["after"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    assert all(".ln_" in k or k.startswith("ln_") for k in changed), changed


class ExplodingLoss(BaseMethod):
    name = "test_nan"

    def training_loss(self, batch, task, ctx):
        loss = super().training_loss(batch, task, ctx)
        return loss * float("nan") if task.index == 1 else loss


def test_nan_loss_names_method_task_and_step(tmp_path):
    METHODS.register("test_nan")(ExplodingLoss)
    try:
        with pytest.raises(TrainingDiverged, match=r"method 'test_nan'.*task 'colours' \(task 2\) at step 1/3"):
            run(tmp_path, methods="test_nan")
    finally:
        METHODS._entries.pop("test_nan")


class Interrupted(BaseMethod):
    """Stops (like Ctrl-C) once, as the third task starts; records the tasks it finished training."""

    name = "test_interrupt"
    armed = True
    trained: list = []

    def before_task(self, task, ctx):
        if task.index == 2 and Interrupted.armed:
            Interrupted.armed = False
            raise KeyboardInterrupt

    def after_task(self, task, ctx):
        Interrupted.trained.append(task.name)


def test_interrupted_run_resumes_with_identical_results(tmp_path):
    METHODS.register("test_interrupt")(Interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path, methods="test_interrupt")
        directory = tmp_path / "out" / "test_interrupt" / "seed0"
        assert (directory / "checkpoint" / "progress.json").is_file()
        assert not (directory / "metrics.json").exists()
        Interrupted.trained.clear()
        resumed = run(tmp_path, methods="test_interrupt")[0]
        # The resumed run trains only the third task ...
        assert Interrupted.trained == ["counts"]
        # ... and ends where an uninterrupted run ends.
        Interrupted.trained.clear()
        fresh = run(tmp_path, methods="test_interrupt", out=tmp_path / "fresh")[0]
        assert resumed["per_dataset"] == fresh["per_dataset"]
    finally:
        METHODS._entries.pop("test_interrupt")


def test_crash_between_checkpoint_writes_resumes_from_the_last_consistent_pair(first_run, tmp_path, monkeypatch):
    from condu_bench import run_store
    from condu_bench.training import runner

    class Crash(Exception):
        pass

    writes = []
    real_write = run_store.atomic_write_json

    def crash_on_second_progress(path, *args, **kwargs):
        writes.append(path)
        if len(writes) == 2:  # the checkpoint after task 2: its tensors are already on disk
            raise Crash
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(run_store, "atomic_write_json", crash_on_second_progress)
    with pytest.raises(Crash):
        run(tmp_path, methods="finetune")
    monkeypatch.setattr(run_store, "atomic_write_json", real_write)
    ckpt = tmp_path / "out" / "finetune" / "seed0" / "checkpoint"
    assert len(list(ckpt.glob("state-*.safetensors"))) == 2
    trained = []
    real_train = runner.train_task
    def recording_train(method, info, *args, **kwargs):
        trained.append(info.data.name)
        return real_train(method, info, *args, **kwargs)

    monkeypatch.setattr(runner, "train_task", recording_train)
    resumed = run(tmp_path, methods="finetune")[0]
    assert trained == ["colours", "counts"]  # from the pair saved after task 1, not the orphan tensors of task 2
    assert resumed["per_dataset"] == first_run[1]["finetune"]["per_dataset"]  # ends where an uninterrupted run ends
    assert not ckpt.exists()


def test_inference_cost_is_the_first_row_without_decoding(tmp_path, monkeypatch):
    """The reports' inference cost: the first evaluation row's seconds per image, decoding excluded (later rows of
    frozen-image-tower methods reuse cached features and would look cheaper)."""
    import time

    from condu_bench.training.evaluate import Evaluator

    real_accuracy, real_eval_set = Evaluator.accuracy, Evaluator.eval_set
    rows = {"calls": 0}

    def slow_first_row(self, method, task, *args, **kwargs):
        rows["calls"] += 1
        if rows["calls"] <= 3:  # the first row evaluates the three datasets
            time.sleep(0.1)
        return real_accuracy(self, method, task, *args, **kwargs)

    def slow_decoding(self, task):
        if id(task) not in self._sets:
            time.sleep(0.5)
        return real_eval_set(self, task)

    monkeypatch.setattr(Evaluator, "accuracy", slow_first_row)
    monkeypatch.setattr(Evaluator, "eval_set", slow_decoding)
    record = run(tmp_path, methods="finetune")[0]
    per_image = record["method_report"]["eval_seconds_per_image"]
    from condu_bench.synthetic.domains import domain_classnames

    images = sum(4 * len(domain_classnames(d)) for d in ("shapes", "colours", "counts"))  # 4 test images per class
    assert 0.3 / images <= per_image < (0.3 + 1.0) / images  # the slow first row, without the 1.5 s of "decoding"

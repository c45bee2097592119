"""Options of the shared loop that change what trains or what is measured, each checked by its effect."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import micro_overrides, run_probed

from condu_bench.config import load_config
from condu_bench.errors import UserError
from condu_bench.experiment import run_experiment
from condu_bench.registries import METHODS

ONE_TASK = ["scenario.options.order=shapes"]


def final_weights(tmp_path, *extra, method="finetune"):
    out = {}

    def keep(_, task, ctx):
        out["state"] = {k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()}

    run_probed(tmp_path, method, micro_overrides(method, iterations=2) + ONE_TASK + list(extra), after_task=keep)
    return out["state"]


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path):
    a = final_weights(tmp_path / "a")
    b = final_weights(tmp_path / "b")
    c = final_weights(tmp_path / "c", "seeds=[1]")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


class StepRecorder:
    """A finetune subclass that records, per step, the lr in use, the weights before and after, and the gradients."""

    def __init__(self):
        self.steps = []
        recorder = self

        class Recording(METHODS.get("finetune")):
            def training_loss(self, batch, task, ctx):
                recorder.steps.append({"before": {n: p.detach().clone() for n, p in ctx.model.named_parameters()
                                                  if p.requires_grad}})
                return super().training_loss(batch, task, ctx)

            def after_iteration(self, step, task, ctx):
                record = recorder.steps[-1]
                params = {n: p for n, p in ctx.model.named_parameters() if p.requires_grad}
                record["after"] = {n: p.detach().clone() for n, p in params.items()}
                record["grad"] = {n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None}

        self.cls = Recording


def record_steps(tmp_path, monkeypatch, *extra, iterations=2):
    import condu_bench.training.loop as loop

    lrs = []
    original = loop.build_optimizer

    def spy(params, cfg, lr):
        optimizer = original(params, cfg, lr)
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
        return optimizer

    monkeypatch.setattr(loop, "build_optimizer", spy)
    recorder = StepRecorder()
    run_probed(tmp_path, "finetune", micro_overrides("finetune", iterations=iterations) + ONE_TASK + list(extra),
               base=recorder.cls)
    return recorder.steps, lrs


def test_sgd_with_momentum_constant_schedule_and_clipped_gradients(tmp_path, monkeypatch):
    lr, clip = 0.05, 1e-3
    steps, lrs = record_steps(tmp_path, monkeypatch, "train.optimizer=sgd", "train.momentum=0.9", "train.weight_decay=0",
                              "train.schedule=constant", "train.warmup_steps=0", f"train.lr={lr}",
                              f"train.grad_clip_norm={clip}", iterations=3)
    assert lrs == [lr, lr, lr]  # constant: no warm-up, no decay
    buffer = {}
    for record in steps:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in record["grad"].values()]))
        assert norm.item() == pytest.approx(clip, rel=1e-4)  # clipped to the norm asked for (the raw one is far larger)
        for name, grad in record["grad"].items():
            buffer[name] = grad if name not in buffer else 0.9 * buffer[name] + grad  # SGD momentum, no dampening
            expected = record["before"][name] - lr * buffer[name]
            assert torch.allclose(record["after"][name], expected, atol=1e-7, rtol=0), name


def test_warmup_cosine_schedule_by_hand(tmp_path, monkeypatch):
    lr = 1e-3
    _, lrs = record_steps(tmp_path, monkeypatch, "train.warmup_steps=2", f"train.lr={lr}", iterations=5)
    # warm-up (step+1)/2 for steps 0, 1; then cosine over the remaining 3 steps
    expected = [lr / 2, lr] + [lr * 0.5 * (1 + math.cos(math.pi * k / 3)) for k in range(3)]
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_adamw_is_the_default_and_sgd_is_sgd():
    from condu_bench.config import TrainConfig
    from condu_bench.training.loop import build_optimizer

    params = [torch.nn.Parameter(torch.zeros(3))]
    assert isinstance(build_optimizer(params, TrainConfig(), 0.1), torch.optim.AdamW)
    sgd = build_optimizer(params, TrainConfig(optimizer="sgd", momentum=0.5, weight_decay=0.01), 0.1)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.5 and sgd.defaults["weight_decay"] == 0.01


@pytest.mark.parametrize("which", ["first", "all"])
def test_train_templates_choose_the_classifier_of_the_loss(tmp_path, which):
    from condu_bench.models.classifier import cosine_logits, image_features, logit_scale, text_classifier

    seen = []

    class Check(METHODS.get("finetune")):
        def training_loss(self, batch, task, ctx):
            loss = super().training_loss(batch, task, ctx)
            with torch.no_grad():
                for templates in (task.data.templates[:1], task.data.templates):
                    classifier = text_classifier(ctx.model, ctx.tokenizer, task.data.classnames, templates)
                    logits = cosine_logits(image_features(ctx.model, batch.images), classifier, logit_scale(ctx.model))
                    expected = F.cross_entropy(logits, batch.labels, label_smoothing=ctx.train_config.label_smoothing)
                    seen.append(math.isclose(loss.item(), expected.item(), rel_tol=1e-5))
            return loss

    run_probed(tmp_path, "finetune", micro_overrides("finetune", iterations=1) + ONE_TASK + [f"train.train_templates={which}"],
               base=Check)
    assert seen == ([True, False] if which == "first" else [False, True])


@pytest.mark.parametrize("augment", ["none", "model"])
def test_augment_none_trains_on_the_eval_transform(tmp_path, augment):
    seen = []

    class Check(METHODS.get("finetune")):
        def training_loss(self, batch, task, ctx):
            plain = torch.stack([ctx.eval_transform(task.data.train[i][0]) for i in range(len(task.data.train))])
            seen.extend(any(torch.equal(row, p) for p in plain) for row in batch.images.cpu())
            return super().training_loss(batch, task, ctx)

    run_probed(tmp_path, "finetune", micro_overrides("finetune", iterations=2) + ONE_TASK + [f"train.augment={augment}"],
               base=Check)
    assert len(seen) == 16
    if augment == "none":
        assert all(seen)  # every training image is exactly an eval-transformed one
    else:
        assert not all(seen)  # random resized crops


class CountedItems(torch.utils.data.Dataset):
    """Deterministic ``(image, label, task label)`` items, as Avalanche's datasets return them (or ``(image,
    caption)`` pairs, as a reference set does); counts reads."""

    def __init__(self, n, captions=False):
        self.images = torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(n))
        self.captions, self.reads = captions, 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.reads += 1
        if self.captions:
            return self.images[i] * 2 - 1, f"caption {i}"
        return self.images[i] * 2 - 1, i % 3, 0


@pytest.mark.parametrize("n,captions", [(10, False), (13, False), (5, False), (13, True)])  # whole batches, a dropped
# remainder, fewer items than a batch; captions as targets
def test_fixed_items_are_read_once_and_give_the_loaders_batches_and_random_draws(n, captions):
    from condu_bench.training.batches import endless_batches

    runs = {}
    for fixed in (False, True):
        data = CountedItems(n, captions)
        torch.manual_seed(3)
        batches = endless_batches(data, 4, seed=7, num_workers=0, pin=False, fixed_items=fixed)
        taken = [next(batches)[:2] for _ in range(11)]  # several epochs
        runs[fixed] = taken, torch.rand(3), data.reads  # the global generator after them: the same draws were made
    (plain, after_plain, reads_plain), (fixed, after_fixed, reads_fixed) = runs[False], runs[True]
    for (a_images, a_labels), (b_images, b_labels) in zip(plain, fixed):
        assert torch.equal(a_images, b_images)
        if captions:
            assert a_labels == b_labels and isinstance(b_labels, tuple)  # as the default collate batches strings
        else:
            assert torch.equal(a_labels, b_labels) and b_labels.dtype == torch.int64
    assert torch.equal(after_plain, after_fixed)
    assert reads_fixed == n and reads_plain == sum(len(labels) for _, labels in plain)  # each item read once


def test_fixed_items_too_large_for_memory_are_read_per_batch(monkeypatch):
    from condu_bench.training import batches

    monkeypatch.setattr(batches, "KEPT_BYTES_LIMIT", 100)  # under 10 items of 48 floats
    data = CountedItems(10)
    stream = batches.endless_batches(data, 4, seed=7, num_workers=0, pin=False, fixed_items=True)
    for _ in range(5):
        images, _ = next(stream)[:2]
    assert data.reads == 1 + 5 * 4 and len(images) == 4  # the size probe, then every item of every batch


def test_eval_max_per_dataset_scores_only_the_first_images(tmp_path):
    from condu_bench.models.classifier import cosine_logits, image_features, text_classifier
    from condu_bench.models.loading import load_model
    from condu_bench.scenarios.synthetic import build_synthetic_mtil

    config = load_config(None, micro_overrides("zeroshot") + ["eval.max_per_dataset=3"])
    record = run_experiment(config, tmp_path, log=lambda *_: None)[0]
    loaded = load_model(config.model)
    scenario = build_synthetic_mtil(dict(config.scenario.options), seed=0)
    for task in scenario.streams[0].train:
        images = torch.stack([loaded.eval_transform(task.test[i][0]) for i in range(3)])
        labels = torch.tensor([task.test[i][1] for i in range(3)])
        with torch.no_grad():
            logits = cosine_logits(image_features(loaded.model, images),
                                   text_classifier(loaded.model, loaded.tokenizer, task.classnames, task.templates))
        expected = 100.0 * (logits.argmax(1) == labels).float().mean().item()
        assert record["per_dataset"][task.name]["last"] == pytest.approx(expected), task.name


def test_cuda_without_cuda_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="device=cuda was asked for but CUDA is not available"):
        run_experiment(load_config(None, micro_overrides("zeroshot") + ["device=cuda"]), tmp_path, log=lambda *_: None)
    assert not (tmp_path / "zeroshot").exists()


def test_cli_version_and_run_force(tmp_path, capsys):
    from condu_bench import __version__, cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"condu-bench {__version__}"

    out = tmp_path / "out"
    args = ["run", "--out", str(out), *micro_overrides("zeroshot")]
    assert cli.main(args) == 0
    first = json.loads((out / "zeroshot" / "seed0" / "metrics.json").read_text())
    assert cli.main(args) == 0 and "[skip] zeroshot seed 0" in capsys.readouterr().out  # finished: not re-run
    assert cli.main([*args, "scenario.options.n_test_per_class=2"]) == 2  # another config over a finished run
    assert "--force" in capsys.readouterr().err
    assert cli.main([*args, "--force", "scenario.options.n_test_per_class=2"]) == 0
    (archived,) = (out / "zeroshot").glob("seed0.replaced-*")
    assert json.loads((archived / "metrics.json").read_text()) == first  # the old result is kept, not overwritten
    assert json.loads((out / "zeroshot" / "seed0" / "metrics.json").read_text())["config_hash"] != first["config_hash"]


def test_corrupt_metrics_json_is_a_clear_error_and_nothing_is_lost(tmp_path, capsys):
    from condu_bench import cli

    out = tmp_path / "out"
    args = ["run", "--out", str(out), *micro_overrides("zeroshot")]
    assert cli.main(args) == 0
    metrics = out / "zeroshot" / "seed0" / "metrics.json"
    metrics.write_text('{"method": "zeroshot", "la')
    before = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert str(metrics) in err and "not valid JSON" in err and "move it away" in err
    assert sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file()) == before


def test_num_workers_auto_is_sized_from_the_machine(monkeypatch):
    import os

    from condu_bench.config import load_config
    from condu_bench.training.device import resolve_num_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert resolve_num_workers("auto", synthetic=False) == 8  # at most 8
    assert resolve_num_workers("auto", synthetic=True) == 0  # arrays in memory: workers only add start-up cost
    assert resolve_num_workers(3, synthetic=True) == 3  # an explicit count is kept
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert resolve_num_workers("auto", synthetic=False) == 0  # two cores stay with the main process
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert resolve_num_workers("auto", synthetic=False) == 4
    assert load_config(None, []).num_workers == "auto"
    with pytest.raises(UserError, match="num_workers must be auto or a count"):
        load_config(None, ["num_workers=many"])

"""Per-method recipes: precedence, budgets in epochs, Dassl's per-epoch schedule, and what a run records."""

import math

import pytest
import torch
import yaml
from helpers import micro_overrides

from condu_bench.config import TrainConfig, load_config
from condu_bench.errors import UserError
from condu_bench.method import BaseMethod
from condu_bench.recipes import Recipe, resolve_train, steps_per_epoch, task_iterations, warmup_steps
from condu_bench.registries import METHODS
from condu_bench.training.schedule import dassl_epoch_lr, lr_schedule

RECIPE = Recipe("test", {"optimizer": "sgd", "lr": 0.002, "batch_size": 4, "epochs": 3, "epochs_per_task": {"colours": 2},
                         "weight_decay": 5e-4, "schedule": "epoch_cosine", "warmup_epochs": 1, "warmup_lr": 1e-5,
                         "label_smoothing": 0.0})


def test_recipe_overrides_the_train_section_and_recipes_override_the_recipe():
    base = TrainConfig(iterations=200, lr=1e-5, warmup_steps=20, grad_clip_norm=1.0)
    train = resolve_train(base, RECIPE, None, "m")
    assert (train.optimizer, train.lr, train.epochs, train.weight_decay) == ("sgd", 0.002, 3, 5e-4)
    assert train.iterations is None and train.warmup_steps is None  # the recipe's budget and warm-up replace the section's
    assert train.grad_clip_norm == 1.0  # a key the recipe leaves alone keeps the section's value
    mine = resolve_train(base, RECIPE, {"lr": 0.01, "iterations": 7}, "m")
    assert (mine.lr, mine.iterations, mine.epochs, mine.epochs_per_task) == (0.01, 7, None, {})
    assert mine.warmup_epochs == 1  # only the budget group was replaced
    plain = resolve_train(TrainConfig(), None, None, "finetune")
    assert (plain.iterations, plain.warmup_steps, plain.epochs) == (100, 10, None)  # neither given: the defaults


@pytest.mark.parametrize("layer, message", [
    ({"iterations": 5, "epochs": 2}, r"recipes\.m: give iterations or epochs, not both"),
    ({"warmup_steps": 5, "warmup_epochs": 1}, r"give warmup_steps or warmup_epochs, not both"),
    ({"iterations_per_task": {"a": 1}, "epochs_per_task": {"a": 1}}, r"not both \(both name 'a'\)"),
    ({"epoch": 2}, r"recipes\.m: unknown key 'epoch'; did you mean 'epochs'\?"),
    ({"epochs": -1}, r"epochs must be >= 0"),
    ({"schedule": "epoch_cosine", "warmup_steps": 3}, r"give warmup_epochs, not warmup_steps"),
])
def test_bad_recipe_layers_are_errors(layer, message):
    with pytest.raises(UserError, match=message):
        resolve_train(TrainConfig(), None, layer, "m")


def test_config_file_checks_recipes_and_budgets():
    with pytest.raises(UserError, match=r"train: give iterations or epochs, not both"):
        load_config(None, ["train.iterations=5", "train.epochs=2"])
    assert load_config(None, ["train.epochs=2"]).train.epochs == 2
    with pytest.raises(UserError, match=r"recipes\.finetune: unknown key 'lrr'; did you mean 'lr'"):
        load_config(None, ["recipes.finetune.lrr=0.1"])
    with pytest.raises(UserError, match=r"unknown method 'cop'"):
        load_config(None, ["recipes.cop.lr=0.1"])


def test_epochs_become_iterations_over_the_training_set():
    train = resolve_train(TrainConfig(), RECIPE, None, "m")
    assert steps_per_epoch(10, 4) == 2 and steps_per_epoch(3, 4) == 1  # the partial batch is dropped once a full one exists
    assert task_iterations(train, "shapes", 10) == 3 * 2
    assert task_iterations(train, "colours", 10) == 2 * 2  # per-task epochs
    assert task_iterations(train, "colours/base", 10, dataset="colours") == 2 * 2  # a base half uses its dataset's entry
    assert warmup_steps(train, 10) == 2
    assert task_iterations(resolve_train(TrainConfig(), RECIPE, {"iterations_per_task": {"shapes": 5}, "epochs": 1}, "m"),
                           "shapes", 10) == 5


def dassl_reference_lrs(lr, epochs, warmup_epochs, warmup_lr):
    """Dassl's ConstantWarmupScheduler around torch's CosineAnnealingLR(T_max=epochs), stepped once per epoch."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(epochs))
    lrs = []
    for epoch in range(epochs):
        if epoch < warmup_epochs:
            lrs.append(warmup_lr)
        else:
            lrs.append(optimizer.param_groups[0]["lr"] if epoch > warmup_epochs else lr)
            optimizer.step()
            cosine.step()
    return lrs


def test_epoch_cosine_is_dassl_s_schedule():
    ours = [dassl_epoch_lr(e, 0.002, 10, 1, 1e-5) for e in range(10)]
    assert ours == pytest.approx(dassl_reference_lrs(0.002, 10, 1, 1e-5), rel=1e-9)
    assert ours[0] == 1e-5 and ours[1] == 0.002 and ours[-1] == pytest.approx(0.002 * 0.5 * (1 + math.cos(math.pi * 8 / 10)))
    # In the loop: the lr is held for a whole epoch (here 3 steps) and set once per epoch.
    train = resolve_train(TrainConfig(), RECIPE, None, "m")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.002)
    scheduler = lr_schedule(optimizer, train, 0.002, 9, 12)
    seen = []
    for _ in range(9):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [dassl_epoch_lr(e, 0.002, 3, 1, 1e-5) for e in range(3)]
    assert seen == pytest.approx([lr for lr in expected for _ in range(3)], rel=1e-9)


class WithRecipe(BaseMethod):
    name = "test_recipe"
    recipe = Recipe("test", {"epochs": 2, "batch_size": 4, "optimizer": "sgd", "lr": 0.01, "label_smoothing": 0.0})
    seen: dict = {}

    def after_task(self, task, ctx):
        WithRecipe.seen[task.name] = (task.iterations, task.lr, len(task.data.train), ctx.train_config)


def test_a_run_trains_and_records_the_resolved_recipe(tmp_path):
    from condu_bench.experiment import run_experiment

    METHODS.register("test_recipe")(WithRecipe)
    try:
        config = load_config(None, micro_overrides("test_recipe") + ["scenario.options.order=shapes,colours",
                                                                      "recipes.test_recipe.lr=0.02"])
        run_experiment(config, tmp_path, log=lambda *_: None)
    finally:
        METHODS._entries.pop("test_recipe")
    assert set(WithRecipe.seen) == {"shapes", "colours"}
    for name, (iterations, lr, n_train, train) in WithRecipe.seen.items():
        assert iterations == 2 * (n_train // 4) and lr == 0.02, name
        assert train.label_smoothing == 0.0 and train.optimizer == "sgd"
    recorded = yaml.safe_load((tmp_path / "test_recipe" / "seed0" / "config.yaml").read_text())
    assert recorded["train"]["epochs"] == 2 and recorded["train"]["iterations"] is None
    assert recorded["train"]["lr"] == 0.02 and recorded["train"]["batch_size"] == 4
    assert "recipes" not in recorded

"""train.select=best_val: the epoch with the best val accuracy (first on ties) is the one kept; a val split is required."""

import fake_trees as ft
import pytest
import torch
from helpers import micro_overrides

from condu_bench.config import load_config
from condu_bench.errors import UserError
from condu_bench.experiment import run_experiment
from condu_bench.training import selection as selection_module

QUICK = ["model.arch=condu-micro-vit", "model.pretrained=none", "num_workers=0", "progress=false", "seeds=1",
         "methods=coop", "recipes.coop.epochs=3", "recipes.coop.batch_size=4", "recipes.coop.lr=5", "recipes.coop.select=best_val"]


@pytest.fixture(scope="module")
def eurosat_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coop-val")
    ft.build(root, "EuroSAT", "coop")
    return root


def run_b2n(root, out, scripted=None, monkeypatch=None):
    seen = {"ctx": [], "history": [], "n_val": []}
    real = selection_module.BestOnValidation.end_of_epoch

    def end_of_epoch(self, epoch):
        seen["n_val"].append(len(self.val_task.test))
        if scripted is None:
            real(self, epoch)
        else:  # a scripted val accuracy, the rest of the bookkeeping as it is
            accuracy = scripted[epoch]
            self.history.append(accuracy)
            if self.best_accuracy is None or accuracy > self.best_accuracy:
                self.best_accuracy, self.best_epoch, self.best = accuracy, epoch, [p.detach().clone() for p in self.params]
        seen["ctx"].append(self.params[0].detach().clone())
        seen["history"] = list(self.history)

    monkeypatch.setattr(selection_module.BestOnValidation, "end_of_epoch", end_of_epoch)
    config = load_config(None, ["scenario.name=base_to_novel", f"data_root={root}", "scenario.options.datasets=EuroSAT",
                                "scenario.options.shots=4", f"scenario.options.fewshot_cache={out / 'shots'}", *QUICK])
    from condu_bench.prompt_method import PromptLearning

    kept = {}
    real_after = PromptLearning.after_task
    monkeypatch.setattr(PromptLearning, "after_task",
                        lambda self, task, ctx: (kept.setdefault("ctx", self.prompt.ctx.detach().clone()), real_after(self, task, ctx)))
    records = run_experiment(config, out, log=lambda *_: None)
    seen["record"] = records[0]
    return seen, kept["ctx"]


def test_the_best_epoch_is_restored_first_on_ties(eurosat_root, tmp_path, monkeypatch):
    seen, final = run_b2n(eurosat_root, tmp_path, scripted=[10.0, 30.0, 30.0], monkeypatch=monkeypatch)
    assert len(seen["ctx"]) == 3 and seen["n_val"] == [5] * 3  # the base half's val images (5 classes, 1 each here)
    assert torch.equal(final, seen["ctx"][1])  # epoch 1, not the tied epoch 2
    assert not torch.equal(final, seen["ctx"][2])
    # the run says which epoch its model is (counted from 1, as Dassl's model.pth.tar-N), with the val curve
    chosen = seen["record"]["method_report"]["model_selection"]
    assert chosen == {"EuroSAT/base": {"selected_epoch": 2, "epochs": 3, "best_val_accuracy": 30.0,
                                       "val_accuracy": [10.0, 30.0, 30.0]}}


def test_val_accuracy_is_measured_on_the_val_split(eurosat_root, tmp_path, monkeypatch):
    seen, final = run_b2n(eurosat_root, tmp_path, monkeypatch=monkeypatch)
    history = seen["history"]
    assert len(history) == 3 and all(0.0 <= a <= 100.0 for a in history)
    best = max(range(3), key=lambda e: (history[e], -e))
    assert torch.equal(final, seen["ctx"][best])


def test_best_val_without_a_val_split_is_an_error(tmp_path):
    config = load_config(None, micro_overrides("coop", 2) + ["recipes.coop.iterations=2", "recipes.coop.select=best_val"])
    with pytest.raises(UserError, match=r"train.select=best_val needs a validation split, and 'shapes' has none"):
        run_experiment(config, tmp_path, log=lambda *_: None)

"""MergeTune on the micro CLIP: continuing a finished CoOp run from its kept task states, training the base in the
same run, best-val selection, and clear errors for a missing or incompatible base run."""

import json

import pytest
import torch
from helpers import fake_base_to_novel_argv, run_probed, two_task_overrides

from condu_bench import run_store, task_states
from condu_bench.errors import UserError



def fast(method, iterations=3, *extra):
    return two_task_overrides(method, iterations, *extra)


def probed(tmp_path, method, overrides, **kw):
    seen = {}

    def keep(m, task, ctx):
        snap = {}
        if hasattr(m, "finetuned"):  # mergetune: its fine-tuned and zero-shot contexts during this task
            snap = {"finetuned": m.finetuned.ctx.detach().cpu().clone(), "zeroshot": m.zeroshot_ctx.detach().cpu().clone()}
        seen[task.name] = {"method": {k: v.clone() for k, v in m.state_dict().items()}, **snap,
                           "model": {k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()},
                           "pretrained": ctx.pretrained_state}

    record = run_probed(tmp_path, method, overrides, after_task=keep, **kw)
    return seen, record


@pytest.fixture(scope="module")
def coop_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("coop")
    seen, record = probed(out, "coop", fast("coop", 4, "recipes.coop.lr=0.5"))
    return out, seen, record


def test_a_finished_coop_run_keeps_its_prompt_after_every_task(coop_run):
    out, seen, record = coop_run
    run_dir = run_store.run_dir(out, "coop", record["seed"])
    manifest = json.loads((run_dir / "task_states" / "manifest.json").read_text())
    assert set(manifest) == {"shapes", "colours"}
    assert not (run_dir / "checkpoint").exists()  # the resumable checkpoint is gone, the task states stay
    for task in ("shapes", "colours"):
        tensors, _ = task_states.load_task_state(run_dir, task)
        assert set(tensors) == {"method/prompt/ctx"}
        assert torch.equal(tensors["method/prompt/ctx"], seen[task]["method"]["prompt/ctx"])
    assert not torch.equal(*(task_states.load_task_state(run_dir, t)[0]["method/prompt/ctx"] for t in ("shapes", "colours")))


@pytest.mark.parametrize("variant", ["released", "paper"])
def test_mergetune_continues_the_kept_coop_prompt(tmp_path, coop_run, variant):
    out, coop_seen, _ = coop_run
    seen, record = probed(tmp_path, "mergetune", fast("mergetune", 3, f"method_options.mergetune.from_run={out}",
                                                      "recipes.mergetune.select=last",
                                                      f"method_options.mergetune.variant={variant}",
                                                      "recipes.mergetune.lr=0.5"))
    for task in ("shapes", "colours"):
        coop_ctx = coop_seen[task]["method"]["prompt/ctx"]
        assert torch.equal(seen[task]["finetuned"], coop_ctx)  # the fine-tuned solution is the base's prompt of this task
        learned = seen[task]["method"]["prompt/ctx"]
        assert not torch.equal(learned, coop_ctx)  # and the continued prompt moved away from it
        for key, value in seen[task]["model"].items():
            assert torch.equal(value, seen[task]["pretrained"][key]), f"mergetune changed {key}"
    report = record["method_report"]
    assert report["variant"] == variant and report["base"] == "coop"
    assert all("from" in s for s in report["base_source"].values())
    assert record["per_dataset"]["shapes"]["avg"] is not None


def test_paper_variant_starts_between_zero_shot_and_fine_tuned(tmp_path, coop_run):
    out, coop_seen, _ = coop_run
    starts = {}
    from condu_bench.baselines.mergetune import MergeTune

    class Capture(MergeTune):
        def before_task(self, task, ctx):
            super().before_task(task, ctx)
            starts[task.name] = (self.prompt.ctx.detach().cpu().clone(), self.zeroshot_ctx.cpu().clone())

    run_probed(tmp_path, "mergetune", fast("mergetune", 1, f"method_options.mergetune.from_run={out}",
                                           "recipes.mergetune.select=last",
                                           "method_options.mergetune.variant=paper", "method_options.mergetune.tau=0.25"),
               base=Capture)
    start, zeroshot = starts["colours"]
    torch.testing.assert_close(start, 0.75 * zeroshot + 0.25 * coop_seen["colours"]["method"]["prompt/ctx"])


def test_without_from_run_the_base_is_trained_first(tmp_path):
    seen, record = probed(tmp_path, "mergetune", fast("mergetune", 2, "recipes.mergetune.select=last",
                                                      "method_options.mergetune.base=kgcoop",
                                                      "method_options.mergetune.base_recipe.iterations=3",
                                                      "method_options.mergetune.base_recipe.lr=0.5"))
    assert not torch.equal(seen["shapes"]["finetuned"], seen["shapes"]["zeroshot"])  # kgcoop trained its prompt away from "a photo of a"
    assert all(s == "kgcoop trained in this run" for s in record["method_report"]["base_source"].values())


def test_best_val_is_the_recipe_and_restores_an_epoch_s_prompt(tmp_path, coop_run):
    import yaml

    from condu_bench.baselines.mergetune import MergeTune

    out, _, _ = coop_run
    epochs = []

    class WithVal(MergeTune):
        def before_task(self, task, ctx):
            task.data.val = task.data.test  # the synthetic world has no val split
            epochs.clear()
            super().before_task(task, ctx)

        def after_iteration(self, step, task, ctx):
            super().after_iteration(step, task, ctx)
            epochs.append(self.prompt.ctx.detach().cpu().clone())

    seen, record = probed(tmp_path, "mergetune", fast("mergetune", 4, f"method_options.mergetune.from_run={out}",
                                                      "recipes.mergetune.iterations=null", "recipes.mergetune.epochs=4",
                                                      "recipes.mergetune.batch_size=100", "recipes.mergetune.lr=0.5"),
                          base=WithVal)
    run_dir = run_store.run_dir(tmp_path, "mergetune", record["seed"])
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["select"] == "best_val"
    assert len(epochs) == 4  # one batch per epoch (batch 100 > the training set)
    final = seen["colours"]["method"]["prompt/ctx"]
    assert any(torch.equal(final, e) for e in epochs)


def test_best_val_without_a_val_split_is_an_error(tmp_path, coop_run):
    out, _, _ = coop_run
    with pytest.raises(UserError, match="select=last"):
        run_probed(tmp_path, "mergetune", fast("mergetune", 1, f"method_options.mergetune.from_run={out}"))


def test_missing_or_incompatible_base_runs_are_clear_errors(tmp_path, coop_run):
    out, _, record = coop_run
    last = "recipes.mergetune.select=last"
    with pytest.raises(UserError, match="no finished run"):
        run_probed(tmp_path / "a", "mergetune", fast("mergetune", 1, f"method_options.mergetune.from_run={tmp_path}/nope", last))
    coop_dir = run_store.run_dir(out, "coop", record["seed"])
    with pytest.raises(UserError, match="no finished run.*kgcoop/seed"):  # the output directory holds no kgcoop run
        run_probed(tmp_path / "b", "mergetune", fast("mergetune", 1, f"method_options.mergetune.from_run={out}",
                                                     "method_options.mergetune.base=kgcoop", last))
    with pytest.raises(UserError, match="method 'coop'.*needs method 'kgcoop'"):  # the run directory is coop's
        run_probed(tmp_path / "b2", "mergetune", fast("mergetune", 1, f"method_options.mergetune.from_run={coop_dir}",
                                                     "method_options.mergetune.base=kgcoop", last))
    with pytest.raises(UserError, match="shape"):
        run_probed(tmp_path / "c", "mergetune", fast("mergetune", 1, f"method_options.mergetune.from_run={out}",
                                                     "method_options.mergetune.n_ctx=2",
                                                     "method_options.mergetune.ctx_init=", last))
    with pytest.raises(UserError, match="mergetune_clipfit"):
        run_probed(tmp_path / "d", "mergetune", fast("mergetune", 1, "method_options.mergetune.base=clipfit", last))


def test_a_changed_task_state_is_refused(tmp_path, coop_run):
    import shutil

    out, _, record = coop_run
    copy = tmp_path / "copy"
    shutil.copytree(run_store.run_dir(out, "coop", record["seed"]), copy)
    manifest = json.loads((copy / "task_states" / "manifest.json").read_text())
    state = copy / "task_states" / manifest["shapes"]["file"]
    state.write_bytes(state.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(UserError, match="SHA-256"):
        task_states.load_task_state(copy, "shapes")
    with pytest.raises(UserError, match="no learned state for task 'nope'"):
        task_states.load_task_state(copy, "nope")


def test_the_plugin_s_released_loss_on_the_prompt_is_the_hand_computation():
    """At the start (learned = fine-tuned), every path point is the fine-tuned prompt: loss = 2 CE + W * anchor, with
    the class features of encode_text("a photo of a <class>.") -- what CoOp's untrained prompt gives."""
    from types import SimpleNamespace

    import torch.nn.functional as F

    from condu_bench.baselines.mergetune import MergeTune, raw_class_features
    from condu_bench.config import ModelConfig
    from condu_bench.method import Batch
    from condu_bench.models.loading import load_model
    from condu_bench.prompting import PromptContext

    loaded = load_model(ModelConfig(arch="condu-micro-vit", pretrained=None))
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    classes = ["circle", "square", "star"]
    torch.manual_seed(0)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 2, 1, 2])
    m = MergeTune(MergeTune.Config(anchor_weight=10.0))
    m.prompt, m.finetuned = PromptContext(model, tokenizer), PromptContext(model, tokenizer)
    with torch.no_grad():
        encoded = model.encode_text(tokenizer([f"a photo of a {c}." for c in classes]))
        torch.testing.assert_close(raw_class_features(m.prompt, classes), encoded, atol=1e-5, rtol=1e-5)
        zeroshot = F.normalize(model.encode_text(tokenizer([f"a drawing of a {c}." for c in classes])), dim=-1)
        m.zeroshot_feats, m.finetuned_raw = zeroshot, raw_class_features(m.finetuned, classes)
        ctx = SimpleNamespace(model=model, train_config=SimpleNamespace(label_smoothing=0.0))
        task = SimpleNamespace(data=SimpleNamespace(classnames=classes))
        loss = m.training_loss(Batch(images, labels), task, ctx)
        image_feats = F.normalize(model.encode_image(images), dim=-1)
        text = F.normalize(encoded, dim=-1)
        ce = F.cross_entropy(model.logit_scale.exp() * image_feats @ text.t(), labels)
        anchor = 1 - sum(float(text[i] @ zeroshot[i]) for i in range(3)) / 3
        assert anchor > 1e-3
        assert float(loss) == pytest.approx(2 * float(ce) + 10.0 * anchor, rel=1e-5)
        # a context given explicitly is used in place of the prompt's own
        other = m.prompt.ctx + 0.1 * torch.randn_like(m.prompt.ctx)
        with_other = raw_class_features(m.prompt, classes, other)
        m.prompt.ctx.copy_(other)
        torch.testing.assert_close(with_other, raw_class_features(m.prompt, classes))


def test_the_base_trains_with_mergetune_s_reference_budget_and_keeps_its_last_epoch():
    from condu_bench.baselines.mergetune import MergeTune
    from condu_bench.config import TrainConfig
    from condu_bench.recipes import resolve_train

    own = resolve_train(TrainConfig(), MergeTune.recipe, None, "mergetune")
    assert own.select == "best_val" and own.batch_size == 128 and own.epochs == 100
    coop = MergeTune(MergeTune.Config(base="coop")).base_train_config(own)
    assert (coop.batch_size, coop.epochs, coop.epochs_per_task, coop.select) == (32, 100, {}, "last")
    kg = MergeTune(MergeTune.Config(base="kgcoop", base_recipe={"iterations": 7, "lr": 0.01})).base_train_config(own)
    assert (kg.batch_size, kg.iterations, kg.epochs, kg.lr, kg.select) == (128, 7, None, 0.01, "last")


def test_mergetune_runs_base_to_novel_end_to_end_on_a_fake_coop_tree(tmp_path):
    """The benchmark file with its default best-val selection, on the CoOp layout's val split; coop trained first."""
    import yaml

    from condu_bench.cli import main

    argv = fake_base_to_novel_argv(tmp_path, "mergetune", "recipes.mergetune.epochs=1", "recipes.mergetune.batch_size=8",
                                   "method_options.mergetune.base_recipe.iterations=1",
                                   "method_options.mergetune.base_recipe.batch_size=4")
    assert main(argv) == 0
    out = tmp_path / "out"
    directory = out / "mergetune" / "seed1"
    metrics = json.loads((directory / "metrics.json").read_text())
    assert set(metrics["per_dataset"]) == {"EuroSAT", "DTD"}
    assert list(metrics["method_report"]["base_source"].values()) == ["coop trained in this run"]  # the last stream's
    assert {s: list(r["base_source"]) for s, r in metrics["method_report"]["streams"].items()} == {
        "EuroSAT": ["EuroSAT/base"], "DTD": ["DTD/base"]}
    train = yaml.safe_load((directory / "config.yaml").read_text())["train"]
    assert (train["select"], train["epochs"], train["lr"]) == ("best_val", 1, 0.002)

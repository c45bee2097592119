"""MergeTune on CLIPFit (``mergetune_clipfit``): the released path objective by hand, the start from a finished CLIPFit
run's kept weights (or one trained first), only CLIPFit's weights moving, the paper variant's loss through
``functional_call`` against weights loaded by hand, and clear errors."""

import pytest
import torch
import torch.nn.functional as F
from helpers import fake_base_to_novel_argv, run_probed, two_task_overrides

from condu_bench import mergetune as mt
from condu_bench import run_store, task_states
from condu_bench.errors import UserError

NAME = "mergetune_clipfit"


def fast(method, iterations=3, *extra):
    return two_task_overrides(method, iterations, *extra)


def probed(tmp_path, method, overrides, **kw):
    seen = {}

    def keep(m, task, ctx):
        seen[task.name] = {"model": {k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()},
                           "pretrained": ctx.pretrained_state}

    record = run_probed(tmp_path, method, overrides, after_task=keep, **kw)
    return seen, record


@pytest.fixture(scope="module")
def clipfit_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clipfit")
    seen, record = probed(out, "clipfit", fast("clipfit", 3, "recipes.clipfit.lr=0.5"))
    return out, seen, record


def clipfit_names(state):
    from condu_bench.baselines.clipfit import IMAGE_LAYERNORMS

    return {n for n in state if (not n.startswith("visual.") and n.endswith("mlp.c_proj.bias"))
            or (n.startswith("visual.") and any(p in n for p in IMAGE_LAYERNORMS))}


def test_the_released_path_runs_from_the_raw_learned_features_to_the_zero_shot_ones():
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(6, 5, generator=g), dim=-1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    learned = 3.0 * torch.randn(3, 5, generator=g)  # raw: not unit norm, as the reference's
    zeroshot = F.normalize(torch.randn(3, 5, generator=g), dim=-1)
    by_hand = []
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        mid = learned + t * (zeroshot - learned)
        logits = 20.0 * image @ (mid / mid.norm(dim=-1, keepdim=True)).t()
        by_hand.append(-logits.log_softmax(-1)[torch.arange(6), labels].mean())
    value = mt.zeroshot_path_loss(image, labels, learned, zeroshot, 20.0)
    torch.testing.assert_close(value, torch.stack(by_hand).mean())
    # at t -> 1 the path ends at zero-shot CLIP: one point at t = 1 is the zero-shot classifier's CE
    end = mt.zeroshot_path_loss(image, labels, learned, zeroshot, 20.0, path_points=[1.0])
    torch.testing.assert_close(end, F.cross_entropy(20.0 * image @ zeroshot.t(), labels))


@pytest.mark.parametrize("variant,tau", [("released", None), ("paper", 0.25)])
def test_it_starts_from_the_clipfit_run_s_kept_weights(tmp_path, clipfit_run, variant, tau):
    out, clipfit_seen, record = clipfit_run
    extra = [f"method_options.{NAME}.variant={variant}"] + ([f"method_options.{NAME}.tau={tau}"] if tau else [])
    seen, _ = probed(tmp_path, NAME, fast(NAME, 0, f"method_options.{NAME}.from_run={out}",
                                          f"recipes.{NAME}.select=last", *extra))
    run_dir = run_store.run_dir(out, "clipfit", record["seed"])
    for task in ("shapes", "colours"):
        kept, _ = task_states.load_task_state(run_dir, task)
        model, theta0 = seen[task]["model"], seen[task]["pretrained"]
        names = clipfit_names(model)
        assert {k[len("model/"):] for k in kept} == names
        for name in names:
            ft = kept[f"model/{name}"]
            want = ft if variant == "released" else (1 - tau) * theta0[name] + tau * ft
            torch.testing.assert_close(model[name], want, rtol=0, atol=1e-6)
        moved = [n for n in names if not torch.equal(kept[f"model/{n}"], theta0[n])]
        assert moved  # the base really trained: starting from it is not starting from theta_0


@pytest.mark.parametrize("variant", ["released", "paper"])
def test_only_clipfit_s_weights_train_and_every_other_weight_stays_theta_0(tmp_path, clipfit_run, variant):
    out, clipfit_seen, _ = clipfit_run
    seen, record = probed(tmp_path, NAME, fast(NAME, 3, f"method_options.{NAME}.from_run={out}",
                                               f"recipes.{NAME}.select=last", f"recipes.{NAME}.lr=0.5",
                                               f"method_options.{NAME}.variant={variant}"))
    for task in ("shapes", "colours"):
        model, theta0 = seen[task]["model"], seen[task]["pretrained"]
        names = clipfit_names(model)
        for key, value in model.items():
            if key not in names:
                assert torch.equal(value, theta0[key]), f"{NAME} changed {key}"
        assert any(not torch.equal(model[n], clipfit_seen[task]["model"][n]) for n in names)  # it trained on
    assert record["method_report"]["variant"] == variant
    assert all(s.startswith("clipfit from ") for s in record["method_report"]["base_source"].values())


def test_without_a_finished_run_clipfit_trains_first_in_the_run(tmp_path):
    seen, record = probed(tmp_path, NAME, fast(NAME, 0, f"recipes.{NAME}.select=last",
                                               f"method_options.{NAME}.base_recipe.iterations=3",
                                               f"method_options.{NAME}.base_recipe.batch_size=8",
                                               f"method_options.{NAME}.base_recipe.lr=0.5"))
    model, theta0 = seen["colours"]["model"], seen["colours"]["pretrained"]
    names = clipfit_names(model)
    assert any(not torch.equal(model[n], theta0[n]) for n in names)  # zero own steps: what moved is the base's training
    assert all(torch.equal(model[k], theta0[k]) for k in model if k not in names)
    assert all(s == "clipfit trained in this run" for s in record["method_report"]["base_source"].values())


def test_the_paper_loss_evaluates_each_path_point_with_its_own_weights():
    """The loss through functional_call equals one computed by loading each point's weights into the model."""
    from condu_bench.baselines.mergetune_clipfit import MergeTuneCLIPFit
    from condu_bench.config import ModelConfig, TrainConfig
    from condu_bench.data.task import TaskData
    from condu_bench.method import Batch, RunContext, TaskInfo
    from condu_bench.models.loading import load_model
    from condu_bench.synthetic.domains import domain_classnames, domain_templates

    torch.manual_seed(0)
    loaded = load_model(ModelConfig(arch="condu-micro-vit", pretrained=None), progress=False)
    model, tokenizer = loaded.model, loaded.tokenizer
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = RunContext(model=model, tokenizer=tokenizer, device=torch.device("cpu"), pretrained_state=theta0,
                     train_config=TrainConfig(label_smoothing=0.2), seed=0)
    method = MergeTuneCLIPFit(MergeTuneCLIPFit.Config(variant="paper", lam=3.0, beta=0.5, n_alpha=3))
    method.setup(ctx)
    names = method.names
    g = torch.Generator().manual_seed(1)
    finetuned = {n: theta0[n] + 0.3 * torch.randn(theta0[n].shape, generator=g) for n in names}
    current = {n: theta0[n] + 0.2 * torch.randn(theta0[n].shape, generator=g) for n in names}
    method.finetuned = finetuned
    with torch.no_grad():
        for n, p in method.live_weights(ctx).items():
            p.copy_(current[n])
    data = TaskData(name="shapes", classnames=domain_classnames("shapes")[:3], templates=domain_templates("shapes")[:2],
                    test=None)
    task = TaskInfo(index=0, data=data, iterations=1, lr=0.1)
    size = model.visual.image_size if isinstance(model.visual.image_size, int) else model.visual.image_size[0]
    batch = Batch(torch.randn(4, 3, size, size, generator=g), torch.tensor([0, 1, 2, 1]))
    value = method.training_loss(batch, task, ctx)

    def ce_with(weights):
        from condu_bench.models.classifier import cosine_logits, image_features, logit_scale, text_classifier

        probe = ctx.frozen_copy({**theta0, **weights})
        with torch.no_grad():
            feats = image_features(probe, batch.images)
            classes = text_classifier(probe, tokenizer, data.classnames, data.templates)
            return F.cross_entropy(cosine_logits(feats, classes, logit_scale(probe)), batch.labels, label_smoothing=0.2)

    distance = sum(((current[n] - theta0[n]) ** 2).sum() for n in names)
    path = torch.stack([ce_with({n: finetuned[n] + a * (current[n] - finetuned[n]) for n in names})
                        for a in (0.0, 1 / 3, 2 / 3)]).mean()
    by_hand = ce_with(current) + 3.0 * distance + 0.5 * path
    torch.testing.assert_close(value.detach(), by_hand, rtol=1e-5, atol=1e-5)
    value.backward()
    assert all(p.grad is not None for p in method.live_weights(ctx).values())


def test_errors_name_what_is_expected(tmp_path, clipfit_run):
    out, _, _ = clipfit_run
    last = f"recipes.{NAME}.select=last"
    with pytest.raises(UserError, match="no finished run"):
        run_probed(tmp_path / "a", NAME, fast(NAME, 1, f"method_options.{NAME}.from_run={tmp_path}/nope", last))
    coop_out = tmp_path / "coop"
    run_probed(coop_out, "coop", fast("coop", 1))
    with pytest.raises(UserError, match="method 'coop'"):
        run_probed(tmp_path / "b", NAME, fast(NAME, 1, f"method_options.{NAME}.from_run={run_store.run_dir(coop_out, 'coop', 0)}",
                                              last))
    with pytest.raises(UserError, match="variant"):
        run_probed(tmp_path / "c", NAME, fast(NAME, 1, f"method_options.{NAME}.variant=both", last))
    with pytest.raises(UserError, match="mergetune_clipfit"):
        run_probed(tmp_path / "d", "mergetune", fast("mergetune", 1, "method_options.mergetune.base=clipfit",
                                                     "recipes.mergetune.select=last"))


def test_mergetune_clipfit_runs_base_to_novel_end_to_end_on_a_fake_coop_tree(tmp_path):
    """The benchmark file with its default best-val selection on the CoOp layout's val split; clipfit trained first."""
    import json

    import yaml

    from condu_bench.cli import main

    argv = fake_base_to_novel_argv(tmp_path, NAME, f"recipes.{NAME}.epochs=2", f"recipes.{NAME}.batch_size=8",
                                   f"method_options.{NAME}.base_recipe.iterations=1",
                                   f"method_options.{NAME}.base_recipe.batch_size=4")
    assert main(argv) == 0
    out = tmp_path / "out"
    directory = out / NAME / "seed1"
    metrics = json.loads((directory / "metrics.json").read_text())
    assert set(metrics["per_dataset"]) == {"EuroSAT", "DTD"}
    assert metrics["method_report"]["base"] == "clipfit"
    assert list(metrics["method_report"]["base_source"].values()) == ["clipfit trained in this run"]  # the last stream's
    streams = metrics["method_report"]["streams"]  # every stream's own report
    assert {s: r["base_source"] for s, r in streams.items()} == {
        "EuroSAT": {"EuroSAT/base": "clipfit trained in this run"}, "DTD": {"DTD/base": "clipfit trained in this run"}}
    train = yaml.safe_load((directory / "config.yaml").read_text())["train"]
    assert (train["select"], train["epochs"], train["lr"], train["augment"]) == ("best_val", 2, 0.002, "coop")


def test_a_run_resumed_in_a_later_stream_keeps_the_earlier_streams_reports(tmp_path):
    """Base-to-novel sets the method up again per dataset: the record keeps each stream's report, across a resume."""
    from condu_bench.baselines.mergetune_clipfit import MergeTuneCLIPFit
    from condu_bench.cli import resolve_benchmark
    from condu_bench.config import load_config
    from condu_bench.experiment import run_experiment
    from condu_bench.registries import METHODS

    class Stop(Exception):
        pass

    armed = [True]

    class StopAtColours(MergeTuneCLIPFit):
        def before_task(self, task, ctx):
            if armed[0] and task.name == "colours/base":
                armed[0] = False
                raise Stop
            super().before_task(task, ctx)

    overrides = ["model.arch=condu-micro-vit", "model.pretrained=none", "scenario.options.domains=[shapes,colours]",
                 "scenario.options.shots=2", "scenario.options.n_pool_per_class=8", "scenario.options.n_test_per_class=4",
                 f"methods={NAME}", "seeds=1", "progress=false", f"recipes.{NAME}.iterations=1",
                 f"recipes.{NAME}.batch_size=4", f"method_options.{NAME}.base_recipe.iterations=1",
                 f"method_options.{NAME}.base_recipe.batch_size=4"]
    config = load_config(resolve_benchmark("synthetic_b2n"), overrides)
    original = METHODS._entries[NAME].target
    METHODS._entries[NAME].target = StopAtColours
    try:
        with pytest.raises(Stop):
            run_experiment(config, tmp_path, log=lambda *_: None)
        record = run_experiment(config, tmp_path, log=lambda *_: None)[0]
    finally:
        METHODS._entries[NAME].target = original
    streams = record["method_report"]["streams"]
    assert list(streams) == ["shapes", "colours"]
    assert streams["shapes"]["base_source"] == {"shapes/base": "clipfit trained in this run"}  # from the checkpoint
    assert record["method_report"]["base_source"] == {"colours/base": "clipfit trained in this run"}

"""CoOp, CoCoOp and KgCoOp on the micro CLIP: only the prompt trains, KgCoOp at lambda 0 is CoOp, evaluation encodes
each dataset's prompts once."""

import pytest
import torch
import torch.nn.functional as F
from helpers import micro_overrides, run_probed

from condu_bench.registries import METHODS

FAST = ["scenario.options.order=shapes,colours"]


def fast(method, iterations=3, batch_size=8, *extra):
    return (micro_overrides(method, iterations) + FAST +
            [f"recipes.{method}.iterations={iterations}", f"recipes.{method}.batch_size={batch_size}", *extra])


def trained(tmp_path, method, overrides):
    seen = {}

    def keep(m, task, ctx):
        seen[task.name] = {"model": {k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()},
                           "method": {k: v.clone() for k, v in m.state_dict().items()},
                           "pretrained": ctx.pretrained_state, "train": ctx.train_config}

    record = run_probed(tmp_path, method, overrides, after_task=keep)
    return seen, record


@pytest.mark.parametrize("method, learned", [("coop", {"prompt/ctx"}),
                                             ("kgcoop", {"prompt/ctx"}),
                                             ("cocoop", {"prompt/ctx", "meta_net/linear1.weight", "meta_net/linear1.bias",
                                                         "meta_net/linear2.weight", "meta_net/linear2.bias"})])
def test_only_the_prompt_trains_and_every_clip_weight_is_bit_identical(tmp_path, method, learned):
    seen, record = trained(tmp_path, method, fast(method, batch_size=1 if method == "cocoop" else 8))
    first, last = seen["shapes"], seen["colours"]
    for key, value in last["model"].items():
        assert torch.equal(value, last["pretrained"][key]), f"{method} changed {key}"
    assert set(last["method"]) == learned
    for key in learned:
        assert not torch.equal(first["method"][key], last["method"][key]), f"{key} did not train on the second task"
    assert last["train"].optimizer == "sgd" and last["train"].schedule == "epoch_cosine"  # the reference recipe
    assert record["per_dataset"]["shapes"]["avg"] is not None


def test_kgcoop_with_lambda_zero_is_coop(tmp_path):
    shared = ["recipes.{m}.lr=0.5"]
    coop, coop_record = trained(tmp_path / "coop", "coop", fast("coop", 3, 8, *[s.format(m="coop") for s in shared]))
    kg0, kg0_record = trained(tmp_path / "kg0", "kgcoop", fast("kgcoop", 3, 8, *[s.format(m="kgcoop") for s in shared],
                                                               "method_options.kgcoop.weight=0"))
    kg8, _ = trained(tmp_path / "kg8", "kgcoop", fast("kgcoop", 3, 8, *[s.format(m="kgcoop") for s in shared]))
    for task in ("shapes", "colours"):
        assert torch.equal(coop[task]["method"]["prompt/ctx"], kg0[task]["method"]["prompt/ctx"])
        assert not torch.equal(coop[task]["method"]["prompt/ctx"], kg8[task]["method"]["prompt/ctx"])
    assert coop_record["per_dataset"] == kg0_record["per_dataset"]


def test_kgcoop_knowledge_term_by_hand():
    from condu_bench.baselines.kgcoop import KgCoOp
    from condu_bench.config import ModelConfig
    from condu_bench.models.loading import load_model
    from condu_bench.prompting import PromptContext

    loaded = load_model(ModelConfig(arch="condu-micro-vit", pretrained=None))
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    classes, template = ["circle", "square", "star"], "a drawing of a {}, a shape."
    method = KgCoOp(KgCoOp.Config())
    with torch.no_grad():
        method.handcrafted = model.encode_text(tokenizer([template.format(c) for c in classes]), normalize=True)
        prompt = PromptContext(model, tokenizer)
        prompt.ctx.add_(0.05 * torch.randn_like(prompt.ctx))
        learned = prompt.text_features(classes)
        by_hand = 1 - sum(float(learned[i] @ method.handcrafted[i]) for i in range(3)) / 3
        assert float(method.knowledge_loss(learned)) == pytest.approx(by_hand, abs=1e-6)
        assert by_hand > 1e-4


def test_evaluation_encodes_each_dataset_s_prompts_once(tmp_path, monkeypatch):
    from condu_bench.prompting import PromptContext

    calls = []
    real = PromptContext.text_features

    def counted(self, classnames, shift=None):
        if not torch.is_grad_enabled():
            calls.append(tuple(classnames))
        return real(self, classnames, shift)

    monkeypatch.setattr(PromptContext, "text_features", counted)
    overrides = fast("coop", 2, 8) + ["eval.batch_size=4"]  # several evaluation batches per dataset
    run_probed(tmp_path, "coop", overrides)
    # Two evaluations (after each task) of two datasets: four encodings, however many batches.
    assert len(calls) == 4 and len(set(calls)) == 2


def test_cocoop_gives_each_image_its_own_class_features():
    from condu_bench.baselines.cocoop import CoCoOp
    from condu_bench.config import ModelConfig, TrainConfig
    from condu_bench.method import RunContext
    from condu_bench.models.loading import load_model

    loaded = load_model(ModelConfig(arch="condu-micro-vit", pretrained=None))
    ctx = RunContext(model=loaded.model.eval(), tokenizer=loaded.tokenizer, device=torch.device("cpu"),
                     pretrained_state={}, train_config=TrainConfig(), seed=0)
    torch.manual_seed(0)
    method = CoCoOp(CoCoOp.Config())
    method.setup(ctx)
    assert [m.out_features for m in method.meta_net if isinstance(m, torch.nn.Linear)] == [32 // 16, 64]
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        feats = F.normalize(ctx.model.encode_image(images), dim=-1)
        per_image = method.class_features(["a", "b"], images, feats)
        assert per_image.shape == (3, 2, 32) and (per_image[0] - per_image[1]).abs().max() > 0
        # Evaluation in chunks of one image gives the same logits as one image at a time by hand.
        import condu_bench.baselines.cocoop as cocoop

        old, cocoop.PROMPTS_PER_CHUNK = cocoop.PROMPTS_PER_CHUNK, 2
        from condu_bench.data.task import TaskData

        task = TaskData(name="t", classnames=["a", "b"], templates=["{}"], test=None)
        chunked = method.logits(images, task, ctx)
        cocoop.PROMPTS_PER_CHUNK = old
        scale = ctx.model.logit_scale.exp().clamp(max=100)
        by_hand = torch.stack([scale * per_image[i] @ feats[i] for i in range(3)])
        torch.testing.assert_close(chunked, by_hand)


def test_prompt_methods_are_registered_with_recipes():
    from condu_bench.recipes import Recipe

    for name, batch, epochs in (("coop", 32, 200), ("cocoop", 1, 10), ("kgcoop", 128, 100)):
        recipe = METHODS.get(name).recipe
        assert isinstance(recipe, Recipe)
        assert (recipe.train["batch_size"], recipe.train["epochs"], recipe.train["lr"]) == (batch, epochs, 0.002)
        assert recipe.train["warmup_epochs"] == 1 and recipe.train["warmup_lr"] == 1e-5
        assert recipe.train["weight_decay"] == 5e-4 and recipe.train["optimizer"] == "sgd"
    assert METHODS.get("coop").recipe.train["epochs_per_task"] == {"ImageNet": 50}

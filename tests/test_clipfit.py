"""CLIPFit: exactly the text MLP output biases and the image LayerNorms train, with its text-feature term."""

import pytest
import torch
import torch.nn.functional as F
from helpers import micro_overrides, run_probed

from condu_bench.baselines.clipfit import CLIPFit, clipfit_parameter_names


def test_clipfit_trains_46080_parameters_on_vit_b_16():
    open_clip = pytest.importorskip("open_clip")
    model = open_clip.create_model("ViT-B-16", pretrained=None, device="meta")  # shapes only, no weights
    chosen = dict(CLIPFit().trainable_parameters(model))
    assert sum(p.numel() for p in chosen.values()) == 46_080
    text = [n for n in chosen if not n.startswith("visual.")]
    assert len(text) == 12 and all(n.endswith("mlp.c_proj.bias") for n in text)  # 12 x 512
    image = sorted(n for n in chosen if n.startswith("visual."))
    assert len(image) == 2 * (2 + 2 * 12)  # ln_pre, ln_post, ln_1 and ln_2 of 12 blocks; weight and bias each
    assert "visual.ln_pre.weight" in image and "visual.transformer.resblocks.11.ln_2.bias" in image
    assert "ln_final.weight" not in chosen and "transformer.resblocks.0.ln_1.weight" not in chosen  # text LNs stay


def test_only_clipfit_weights_change_and_the_rest_is_bit_identical(tmp_path):
    seen = {}

    def keep(method, task, ctx):
        seen[task.name] = ({k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()},
                           ctx.pretrained_state, set(clipfit_parameter_names(ctx.model)), ctx.train_config)

    overrides = (micro_overrides("clipfit", 3) + ["scenario.options.order=shapes", "recipes.clipfit.iterations=3",
                                                 "recipes.clipfit.batch_size=8", "recipes.clipfit.lr=0.05"])
    run_probed(tmp_path, "clipfit", overrides, after_task=keep)
    state, pretrained, names, train = seen["shapes"]
    assert names and train.optimizer == "sgd" and train.schedule == "epoch_cosine"  # the reference recipe
    changed = {k for k in state if not torch.equal(state[k], pretrained[k])}
    assert changed <= names
    assert any(".ln_" in k or "ln_pre" in k or "ln_post" in k for k in changed)
    assert any(k.endswith("mlp.c_proj.bias") and not k.startswith("visual.") for k in changed)


def test_text_feature_term_by_hand():
    frozen = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    learned = F.normalize(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), dim=-1)
    # cos = [1/sqrt(2), 1] -> 1 - mean = 1 - (0.70711 + 1) / 2
    method = CLIPFit()
    method.frozen_text = frozen
    pull = method.text_feature_pull(learned)
    assert float(pull) == pytest.approx(1 - (2 ** -0.5 + 1) / 2, abs=1e-6)


def test_per_task_weight():
    from types import SimpleNamespace

    method = CLIPFit(CLIPFit.Config(weight=2.0, weight_per_task={"DTD": 8.0}))
    task = lambda name: SimpleNamespace(data=SimpleNamespace(name=name))  # noqa: E731
    assert method.task_weight(task("DTD")) == 8.0
    assert method.task_weight(task("DTD/base")) == 8.0
    assert method.task_weight(task("MNIST")) == 2.0

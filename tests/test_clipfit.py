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


def test_trainable_set_is_the_release_rule_on_vit_b_16():
    """minglllli/CLIPFit trainers/ClipFit.py unfreezes text-encoder names containing "c_proj.bias" and image-encoder
    names containing "ln"; the plugin's explicit list must be exactly that set."""
    open_clip = pytest.importorskip("open_clip")
    model = open_clip.create_model("ViT-B-16", pretrained=None, device="meta")
    release = {n for n, _ in model.named_parameters()
               if (n.startswith("visual.") and "ln" in n[len("visual."):])
               or (not n.startswith("visual.") and "c_proj.bias" in n)}
    assert set(clipfit_parameter_names(model)) == release


def test_recipe_is_the_release_config():
    """configs/trainers/ClipFit/vit_b16_ep100_ctxv1.yaml (ep10 for Food101, ImageNet) over Dassl's defaults."""
    from condu_bench.config import TrainConfig
    from condu_bench.recipes import resolve_train, task_iterations

    train = resolve_train(TrainConfig(), CLIPFit.recipe, None, "clipfit")
    assert (train.optimizer, train.lr, train.momentum, train.weight_decay) == ("sgd", 0.002, 0.9, 5e-4)
    assert (train.batch_size, train.epochs, train.schedule) == (32, 100, "epoch_cosine")
    assert (train.warmup_epochs, train.warmup_lr) == (1, 1e-5)
    assert train.label_smoothing == 0.0 and train.grad_clip_norm is None and train.precision == "fp32"
    assert task_iterations(train, "Food101/base", 800, "Food101") == 10 * (800 // 32)
    assert task_iterations(train, "ImageNet/base", 800, "ImageNet") == 10 * (800 // 32)
    assert task_iterations(train, "DTD/base", 800, "DTD") == 100 * (800 // 32)


class _TinyCLIP(torch.nn.Module):
    """encode_text: summed token embeddings plus a bias (the trainable part); encode_image: a linear map."""

    def __init__(self, text_bias: torch.Tensor):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Parameter(torch.randn(64, 4, generator=gen), requires_grad=False)
        self.image = torch.nn.Parameter(torch.randn(4, 6, generator=gen), requires_grad=False)
        self.text_bias = torch.nn.Parameter(text_bias.clone())
        self.logit_scale = torch.nn.Parameter(torch.tensor(100.0).log(), requires_grad=False)

    def encode_text(self, tokens):
        return self.embed[tokens].sum(dim=1) + self.text_bias

    def encode_image(self, images):
        return images @ self.image.t()


def _tiny_tokenizer(prompts):
    rows = [[ord(c) % 64 for c in p] for p in prompts]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])


def test_training_loss_is_ce_at_scale_100_plus_8_times_the_cosine_pull():
    """The release's loss: CE(exp(logit_scale) * cos(image, class)) + 8 * (1 - mean_c cos(t_c, t_c^CLIP)), one
    prompt per class, no label smoothing (the recipe's), teacher = the pretrained text features."""
    from types import SimpleNamespace

    from condu_bench.config import TrainConfig
    from condu_bench.method import Batch
    from condu_bench.recipes import resolve_train

    classnames, template = ["cat", "dog", "cow"], "a photo of a {}."
    student = _TinyCLIP(torch.tensor([0.5, -1.0, 0.25, 2.0]))
    teacher = _TinyCLIP(torch.zeros(4))  # theta_0: the bias before training
    train = resolve_train(TrainConfig(), CLIPFit.recipe, None, "clipfit")
    ctx = SimpleNamespace(model=student, tokenizer=_tiny_tokenizer, device="cpu", train_config=train,
                          frozen_copy=lambda: teacher)
    task = SimpleNamespace(data=SimpleNamespace(name="DTD/base", classnames=classnames, templates=[template]))
    images = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2, 1, 1, 0])

    method = CLIPFit()
    method.before_task(task, ctx)
    loss = method.training_loss(Batch(images, labels), task, ctx)

    tokens = _tiny_tokenizer([template.format(c) for c in classnames])
    t_student = F.normalize(student.encode_text(tokens), dim=-1)
    t_clip = F.normalize(teacher.encode_text(tokens), dim=-1)
    img = F.normalize(student.encode_image(images), dim=-1)
    ce = F.cross_entropy(100.0 * img @ t_student.t(), labels)
    pull = 1.0 - (t_student * t_clip).sum(dim=-1).mean()
    assert float(pull.detach()) > 0.01  # the term is really exercised
    assert float(loss.detach()) == pytest.approx(float((ce + 8.0 * pull).detach()), rel=1e-5)
    (grad,) = torch.autograd.grad(loss, student.text_bias)  # both terms reach the trained bias
    (hand_grad,) = torch.autograd.grad(ce + 8.0 * pull, student.text_bias)
    assert torch.allclose(grad, hand_grad, rtol=1e-4, atol=1e-7)

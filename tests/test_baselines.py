"""Per-method behaviour on the micro CLIP: the defining computation of each plugin, pinned on small cases."""

import pytest
import torch
import torch.nn.functional as F
from helpers import micro_overrides

from condu_bench.config import load_config
from condu_bench.errors import UserError
from condu_bench.experiment import run_experiment
from condu_bench.registries import METHODS

KEY = "visual.conv1.weight"


def run_with_probe(tmp_path, method, base, *extra):
    """Run ``base`` registered as ``method`` on the micro scenario; the model's weights after every task."""
    captured = []

    class Probe(base):
        def after_task(self, task, ctx):
            super().after_task(task, ctx)
            captured.append({k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()})

    original = METHODS._entries[method].target
    METHODS._entries[method].target = Probe
    try:
        config = load_config(None, micro_overrides(method) + list(extra))
        record = run_experiment(config, tmp_path / method, log=lambda *_: None)[0]
    finally:
        METHODS._entries[method].target = original
    return captured, record


def states_after_each_task(tmp_path, method, *extra):
    return run_with_probe(tmp_path, method, METHODS.get(method), *extra)[0]


def theta0():
    from condu_bench.models.loading import load_model

    return load_model(load_config(None, micro_overrides()).model).model.state_dict()


def floats(state):
    return {k: v for k, v in state.items() if v.is_floating_point()}


# ------------------------------------------------------------------ WiSE-FT


@pytest.fixture(scope="module")
def finetune_two_tasks(tmp_path_factory):
    return states_after_each_task(tmp_path_factory.mktemp("ft"), "finetune", "scenario.options.order=shapes,colours")


def test_wise_ft_endpoints_and_reference_interpolation(tmp_path, finetune_two_tasks):
    """alpha = 1 is Continual-FT; the default alpha = 0.8 anchors to the task start, task after task."""
    ft = finetune_two_tasks
    one = states_after_each_task(tmp_path / "one", "wise_ft", "scenario.options.order=shapes,colours",
                                 "method_options.wise_ft.alpha=1.0")
    for k in floats(ft[1]):
        assert torch.equal(one[1][k], ft[1][k]), k
    wise = states_after_each_task(tmp_path / "ref", "wise_ft", "scenario.options.order=shapes,colours")
    start = theta0()
    for k in floats(start):  # task 1 fine-tunes from theta_0 exactly as Continual-FT does
        assert torch.allclose(wise[0][k], 0.8 * ft[0][k] + 0.2 * start[k], atol=1e-6), k
    assert not torch.allclose(wise[1][KEY], 0.8 * ft[1][KEY] + 0.2 * start[KEY], atol=1e-6)  # task 2 starts elsewhere


def test_wise_ft_merges_every_weight_of_every_task(tmp_path):
    """Over three tasks: each task starts where the previous merge ended, and after it every floating weight is
    0.8 * (its fine-tuned value) + 0.2 * (its value at the task start); integer buffers are left alone."""
    snaps = []

    class Probe(METHODS.get("wise_ft")):
        def before_task(self, task, ctx):
            snaps.append({"start": {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}})
            super().before_task(task, ctx)

        def after_task(self, task, ctx):
            snaps[-1]["tuned"] = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
            super().after_task(task, ctx)
            snaps[-1]["merged"] = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}

    run_with_probe(tmp_path, "wise_ft", Probe)
    assert len(snaps) == 3
    for index, snap in enumerate(snaps):
        if index:
            assert all(torch.equal(snap["start"][k], snaps[index - 1]["merged"][k]) for k in snap["start"])
        moved = 0
        for k, start in snap["start"].items():
            tuned, merged = snap["tuned"][k], snap["merged"][k]
            if not start.is_floating_point():
                assert torch.equal(merged, tuned), k
                continue
            assert torch.allclose(merged, 0.8 * tuned + 0.2 * start, atol=1e-6, rtol=1e-5), (index, k)
            moved += not torch.equal(tuned, start)
        assert moved > 10  # the task trained most tensors, so the check is not vacuous


def test_wise_ft_alpha_zero_keeps_each_task_start(tmp_path):
    zero = states_after_each_task(tmp_path, "wise_ft", "scenario.options.order=shapes,colours",
                                  "method_options.wise_ft.alpha=0.0")
    start = theta0()
    for state in zero:
        for k in floats(start):
            assert torch.equal(state[k], start[k]), k


def test_wise_ft_pretrained_anchor(tmp_path, finetune_two_tasks):
    wise = states_after_each_task(tmp_path, "wise_ft", "scenario.options.order=shapes,colours",
                                  "method_options.wise_ft.alpha=0.25", "method_options.wise_ft.anchor=pretrained")
    start = theta0()
    assert torch.allclose(wise[0][KEY], start[KEY] + 0.25 * (finetune_two_tasks[0][KEY] - start[KEY]), atol=1e-6)


@pytest.mark.parametrize("option", ["alpha=1.5", "anchor=theta0"])
def test_wise_ft_options_are_checked_before_training(tmp_path, option):
    with pytest.raises(UserError, match="method_options.wise_ft"):
        states_after_each_task(tmp_path, "wise_ft", f"method_options.wise_ft.{option}")
    assert not (tmp_path / "wise_ft").exists()


# ------------------------------------------------------------------ the shared reference distillation


class TinyTowers(torch.nn.Module):
    """A two-tower model small enough to check gradients and logits by hand."""

    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.img = torch.nn.Parameter(torch.randn(6, 4, generator=g))
        self.txt = torch.nn.Parameter(torch.randn(5, 4, generator=g))

    def encode_image(self, x):
        return x @ self.img

    def encode_text(self, tokens):
        return self.txt[tokens]


class FixedImages:
    def __init__(self, images):
        self.images = images

    def next(self, device):
        return self.images


def test_distillation_uses_teacher_text_features_and_both_directions():
    from condu_bench.distillation import ReferenceDistillation, encode_texts

    teacher, student = TinyTowers(0), TinyTowers(1)
    images = torch.randn(3, 6, generator=torch.Generator().manual_seed(2))
    texts = encode_texts(teacher, torch.arange(5))
    loss = ReferenceDistillation(teacher, texts, FixedImages(images), temperature=2.0).loss(student, 10.0, "cpu")
    loss.backward()
    assert student.txt.grad is None  # the student's text tower takes no part
    assert student.img.grad is not None and student.img.grad.abs().sum() > 0

    # by hand: logits of both models against the teacher's normalised text features, scale 10, T = 2
    t_feats = F.normalize(teacher.txt.detach(), dim=-1)
    s = 10 * F.normalize(images @ student.img.detach(), dim=-1) @ t_feats.t()
    t = 10 * F.normalize(images @ teacher.img.detach(), dim=-1) @ t_feats.t()

    def soft_ce(a, b):  # rows of b give the targets
        return -(F.softmax(b / 2, dim=1) * F.log_softmax(a / 2, dim=1)).sum(1).mean() * 4

    assert loss.item() == pytest.approx((soft_ce(s, t) + soft_ce(s.t(), t.t())).item(), rel=1e-5)


def test_random_token_sequences_are_framed_and_seeded():
    import open_clip

    from condu_bench.distillation import random_token_sequences

    tok = open_clip.get_tokenizer("ViT-B-16")
    a = random_token_sequences(tok, 1000, 10, torch.Generator().manual_seed(0))
    b = random_token_sequences(tok, 1000, 10, torch.Generator().manual_seed(0))
    c = random_token_sequences(tok, 1000, 10, torch.Generator().manual_seed(1))
    assert a.shape == (1000, 77) and torch.equal(a, b) and not torch.equal(a, c)
    assert (a[:, 0] == tok.sot_token_id).all() and (a[:, 11] == tok.eot_token_id).all() and (a[:, 12:] == 0).all()
    middle = a[:, 1:11]
    assert middle.min() >= 0 and middle.max() < 49408 and len(middle.unique()) > 5000  # uniform over the vocabulary


# ------------------------------------------------------------------ LwF and LwF-VR


def test_lwf_with_zero_weights_is_finetune(tmp_path, finetune_two_tasks):
    lwf = states_after_each_task(tmp_path, "lwf", "scenario.options.order=shapes,colours",
                                 "method_options.lwf.image_weight=0", "method_options.lwf.text_weight=0")
    for task in (0, 1):
        for k in floats(finetune_two_tasks[task]):
            assert torch.equal(lwf[task][k], finetune_two_tasks[task][k]), (task, k)


def test_lwf_vr_with_zero_weights_is_finetune(tmp_path, finetune_two_tasks):
    lwf_vr = states_after_each_task(tmp_path, "lwf_vr", "scenario.options.order=shapes,colours",
                                    "method_options.lwf_vr.sequences=16", "method_options.lwf_vr.image_weight=0",
                                    "method_options.lwf_vr.text_weight=0")
    for task in (0, 1):
        for k in floats(finetune_two_tasks[task]):
            assert torch.equal(lwf_vr[task][k], finetune_two_tasks[task][k]), (task, k)


def test_lwf_distils_from_the_task_start_on_the_task_s_classes(tmp_path, finetune_two_tasks):
    """The teacher of each task is the model it started from, the texts its classes in the first template."""
    from condu_bench.baselines.lwf import LwF

    seen = []

    class Spy(LwF):
        def before_task(self, task, ctx):
            start = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
            super().before_task(task, ctx)
            teacher = self.distiller.teacher.state_dict()
            tokens = ctx.tokenizer([task.data.templates[0].format(c) for c in task.data.classnames]).to(ctx.device)
            with torch.no_grad():
                expected = F.normalize(self.distiller.teacher.encode_text(tokens).float(), dim=-1)
            seen.append((all(torch.equal(teacher[k], start[k]) for k in start),
                         torch.allclose(self.distiller.text_features, expected, atol=1e-6),
                         not any(p.requires_grad for p in self.distiller.teacher.parameters())))

    states, _ = run_with_probe(tmp_path, "lwf", Spy, "scenario.options.order=shapes,colours")
    assert seen == [(True, True, True), (True, True, True)]
    assert not torch.equal(states[0][KEY], finetune_two_tasks[0][KEY])  # distillation acts from the first task on


def test_lwf_vr_distils_over_random_sequences(tmp_path, finetune_two_tasks):
    from condu_bench.baselines.lwf_vr import LwFVR

    texts = []

    class Spy(LwFVR):
        def distillation_texts(self, task, ctx):
            tokens = super().distillation_texts(task, ctx)
            texts.append(tokens)
            return tokens

    states, _ = run_with_probe(tmp_path, "lwf_vr", Spy, "scenario.options.order=shapes,colours",
                               "method_options.lwf_vr.sequences=64")
    assert [t.shape[0] for t in texts] == [64, 64] and not torch.equal(texts[0], texts[1])
    assert not torch.equal(states[0][KEY], finetune_two_tasks[0][KEY])


# ------------------------------------------------------------------ ZSCL


def zscl_options(*extra):
    return ["scenario.options.order=shapes", "method_options.zscl.reference_pairs=16", "method_options.zscl.ref_batch_size=4", *extra]


@pytest.mark.parametrize(("iterations", "every", "snapshots"), [
    (3, 1, [0, 1, 2]),  # every step, the last one included once
    (4, 2, [0, 2, 3]),  # as the reference: steps 0, 2 and the final (lr 0) step 4
    (5, 100, [0, 4]),  # fewer steps than the period: the final weights are still folded in
])
def test_zscl_weight_ensemble(tmp_path, iterations, every, snapshots):
    base = METHODS.get("zscl")
    after_steps = []

    class Probe(base):
        def after_iteration(self, step, task, ctx):
            after_steps.append(ctx.model.state_dict()[KEY].detach().clone())
            super().after_iteration(step, task, ctx)

    kept, _ = run_with_probe(tmp_path, "zscl", Probe, *zscl_options(f"train.iterations={iterations}",
                                                                      f"method_options.zscl.ensemble_every={every}"))
    start = theta0()[KEY]
    expected = (start + sum(after_steps[i] for i in snapshots)) / (1 + len(snapshots))
    assert len(after_steps) == iterations
    assert torch.allclose(kept[0][KEY], expected, atol=1e-6)


def test_zscl_l2_term_holds_weights_near_the_task_start(tmp_path):
    common = zscl_options("train.lr=1e-2", "method_options.zscl.ensemble_every=0", "method_options.zscl.image_weight=0",
                          "method_options.zscl.text_weight=0")
    free = states_after_each_task(tmp_path / "free", "zscl", *common, "method_options.zscl.l2_weight=0")
    held = states_after_each_task(tmp_path / "held", "zscl", *common, "method_options.zscl.l2_weight=1000")
    start = theta0()
    drift = lambda state: sum((state[k] - start[k]).norm() ** 2 for k in start if k != "logit_scale")
    assert drift(held[0]) < 0.5 * drift(free[0])


def test_zscl_distils_on_teacher_text_of_every_reference_sentence(tmp_path):
    from condu_bench.baselines.zscl import ZSCL
    from condu_bench.synthetic.domains import make_caption_dataset

    seen = {}

    class Spy(ZSCL):
        def setup(self, ctx):
            super().setup(ctx)
            sentences = list(dict.fromkeys(make_caption_dataset(16, seed=1).captions))
            tokens = ctx.tokenizer(sentences).to(ctx.device)
            with torch.no_grad():
                expected = F.normalize(self.teacher.encode_text(tokens).float(), dim=-1)
            seen["bank"] = torch.allclose(self.text_features, expected, atol=1e-6)
            seen["teacher_is_theta0"] = all(torch.equal(v, ctx.pretrained_state[k]) for k, v in self.teacher.state_dict().items())

    run_with_probe(tmp_path, "zscl", Spy, *zscl_options())
    assert seen == {"bank": True, "teacher_is_theta0": True}


def test_zscl_on_real_data_needs_its_reference_inputs(tmp_path, zscl_tree):
    root, _ = zscl_tree
    overrides = ["methods=zscl", "model.arch=condu-micro-vit", "model.pretrained=none", "scenario.name=mtil",
                 "scenario.options.order=MNIST", "train.iterations=1", "train.lr_per_task={}", f"data_root={root}", "progress=false"]
    with pytest.raises(UserError, match="ref_images_dir.*ref_sentences_file"):
        run_experiment(load_config(None, overrides), tmp_path / "real", log=lambda *_: None)


def test_zscl_reference_files_are_checked(tmp_path):
    with pytest.raises(UserError, match="ref_images_dir and ref_sentences_file"):
        states_after_each_task(tmp_path, "zscl", "method_options.zscl.reference=files")
    with pytest.raises(UserError, match="does not exist"):
        states_after_each_task(tmp_path, "zscl", "method_options.zscl.reference=files",
                               f"method_options.zscl.ref_images_dir={tmp_path / 'none'}",
                               f"method_options.zscl.ref_sentences_file={tmp_path / 'none.txt'}")


def test_zscl_reads_a_reference_folder_and_sentence_file(tmp_path):
    import numpy as np
    from PIL import Image

    from condu_bench.baselines.zscl import ImageFiles, read_sentences

    folder = tmp_path / "ref" / "n0001"
    folder.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "cc.tsv").write_text("a dog on grass\thttp://x/1\n\nred car\thttp://x/2\n")
    assert read_sentences(tmp_path / "cc.tsv") == ["a dog on grass", "red car"]
    states = states_after_each_task(tmp_path, "zscl", "scenario.options.order=shapes", "method_options.zscl.reference=files",
                                    f"data_root={tmp_path}", "method_options.zscl.ref_images_dir=ref",
                                    "method_options.zscl.ref_sentences_file=cc.tsv", "method_options.zscl.ref_batch_size=2")
    assert len(states) == 1
    (folder / "bad.jpg").write_bytes(b"not an image")
    files = ImageFiles(sorted(p for p in (tmp_path / "ref").rglob("*.*")))
    with pytest.raises(UserError, match="bad.jpg"):
        [files[i] for i in range(len(files))]


def test_soft_cross_entropy_and_kl_on_a_case_worked_by_hand():
    from condu_bench.losses import distillation_kl, soft_cross_entropy

    # student softmax [1/3, 2/3], teacher [1/2, 1/2]; at T = 2 the logits are doubled so the softened
    # distributions are the same, and the T^2 factor multiplies the loss by 4
    for t, scale in ((1.0, 1.0), (2.0, 4.0)):
        student = torch.tensor([[0.0, t * torch.log(torch.tensor(2.0)).item()]])
        teacher = torch.zeros(1, 2)
        ce = -(0.5 * torch.log(torch.tensor(1 / 3)) + 0.5 * torch.log(torch.tensor(2 / 3))).item()
        kl = ce - torch.log(torch.tensor(2.0)).item()  # KL = CE - H(teacher), H = ln 2
        assert soft_cross_entropy(student, teacher, t).item() == pytest.approx(scale * ce, rel=1e-6)
        assert distillation_kl(student, teacher, t).item() == pytest.approx(scale * kl, rel=1e-5)

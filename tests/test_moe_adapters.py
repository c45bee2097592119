"""MoE-Adapters: top-k gating, adapted blocks, expert freezing, the DDAS task selector, resume state, a short run."""

import copy

import pytest
import torch
from helpers import micro_overrides

from condu_bench.config import ModelConfig, load_config
from condu_bench.experiment import run_experiment
from condu_bench.models.classifier import image_features
from condu_bench.models.loading import load_model
from condu_bench.models.moe_adapters import add_moe_adapters, mixtures, noisy_top_k_gating, route
from condu_bench.registries import METHODS
from condu_bench.task_selection import (ZERO_SHOT, FeatureAutoencoder, reconstruction_errors, select_tasks,
                                        train_autoencoder)


@pytest.fixture(scope="module")
def micro():
    return load_model(ModelConfig(arch="condu-micro-vit", pretrained=None), progress=False)


@pytest.mark.parametrize("noisy", [False, True])
def test_gating_picks_exactly_top_k_experts_with_gates_summing_to_one(noisy):
    g = torch.Generator().manual_seed(0)
    x, w, w_noise = torch.randn(16, 8, generator=g), torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    torch.manual_seed(1)
    gates, load = noisy_top_k_gating(x, w, w_noise, top_k=2, noisy=noisy)
    assert ((gates > 0).sum(1) == 2).all()
    torch.testing.assert_close(gates.sum(1), torch.ones(16))
    assert load.shape == (6,)
    if not noisy:  # the chosen experts are the two largest clean logits, weighted by their softmax
        logits = x @ w
        top = logits.topk(2, dim=1)
        assert torch.equal((gates > 0), torch.zeros_like(gates, dtype=torch.bool).scatter(1, top.indices, True))
        torch.testing.assert_close(gates.gather(1, top.indices), torch.softmax(top.values, dim=1))
        torch.testing.assert_close(load, (gates > 0).sum(0).float())
    else:  # the load is a differentiable probability of being in the top k: k per sample in expectation, roughly
        assert 0 < float(load.sum()) <= 16 * 6


def test_adapted_model_is_clip_until_experts_learn(micro):
    model = copy.deepcopy(micro.model)
    pretrained_keys = set(model.state_dict())
    blocks = add_moe_adapters(model, "both", num_experts=4, num_routers=3, top_k=2, bottleneck=8, scale=0.1, dropout=0.0)
    assert blocks == ["visual.transformer.resblocks.0", "transformer.resblocks.0"]
    assert pretrained_keys <= set(model.state_dict())  # pretrained keys unchanged
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = image_features(micro.model, images)
        route(model, None)
        torch.testing.assert_close(image_features(model, images), want, rtol=0, atol=0)
        route(model, 1)  # zero up-projections: the experts add nothing yet
        torch.testing.assert_close(image_features(model, images), want)
        for _, moe in mixtures(model):
            for expert in moe.experts:
                expert.up.weight.normal_()
        assert not torch.allclose(image_features(model, images), want, atol=1e-3)
        route(model, None)
        torch.testing.assert_close(image_features(model, images), want, rtol=0, atol=0)


def test_only_routed_experts_contribute(micro):
    model = copy.deepcopy(micro.model)
    add_moe_adapters(model, "image", num_experts=3, num_routers=1, top_k=1, bottleneck=4, scale=1.0, dropout=0.0)
    (_, moe), = mixtures(model)
    with torch.no_grad():
        moe.routers[0].zero_()
        moe.routers[0][:, 2] = 1.0  # expert 2's logit: the first token's sum; expert 1's: minus it; expert 0's: 0
        moe.routers[0][:, 1] = -1.0
        for e, expert in enumerate(moe.experts):
            expert.up.bias.fill_(float(e + 1))
    moe.active = 0
    x = torch.ones(2, 5, 64)  # first token sums to +64: expert 2 wins (top-1, gate 1)
    torch.testing.assert_close(moe(x, batch_first=True), torch.full_like(x, 3.0))
    torch.testing.assert_close(moe(-x, batch_first=True), torch.full_like(x, 2.0))
    torch.testing.assert_close(moe(x.transpose(0, 1), batch_first=False), torch.full_like(x, 3.0).transpose(0, 1))


def micro_method(micro, **options):
    from condu_bench.config import TrainConfig
    from condu_bench.method import RunContext

    method = METHODS.get("moe_adapters")(METHODS.get("moe_adapters").Config(**options))
    ctx = RunContext(model=copy.deepcopy(micro.model), tokenizer=micro.tokenizer, device=torch.device("cpu"),
                     pretrained_state={}, train_config=TrainConfig(), seed=0, eval_transform=micro.eval_transform)
    method.setup(ctx)
    return method, ctx


def test_trainable_parameters_match_the_hand_count(micro):
    from condu_bench.method import TaskInfo

    method, ctx = micro_method(micro)  # 22 experts, bottleneck 64, width 64, one block per tower
    method.before_task(TaskInfo(0, None, 1, 1e-3), ctx)
    expert = 64 * 64 + 64 + 64 * 64 + 64
    per_block = 22 * expert + 2 * 64 * 22  # experts + this task's gate and noise weights
    assert sum(p.numel() for _, p in method.trainable_parameters(ctx.model)) == 2 * per_block
    method.frozen = {"visual.transformer.resblocks.0.moe.experts.3", "transformer.resblocks.0.moe.experts.5"}
    names = [n for n, _ in method.trainable_parameters(ctx.model)]
    assert sum(p.numel() for _, p in method.trainable_parameters(ctx.model)) == 2 * per_block - 2 * expert
    assert "visual.transformer.resblocks.0.moe.routers.0" in names and "transformer.resblocks.0.moe.noise.0" in names
    assert not any(".routers.1" in n or ".experts.3." in n and n.startswith("visual") for n in names)
    assert all(n in dict(ctx.model.named_parameters()) for n in names)


def two_clusters(n=256, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.sigmoid(torch.cat([torch.full((n, dim // 2), 3.0), torch.full((n, dim // 2), -3.0)], 1)
                      + 0.1 * torch.randn(n, dim, generator=g))
    b = torch.sigmoid(torch.cat([torch.full((n, dim // 2), -3.0), torch.full((n, dim // 2), 3.0)], 1)
                      + 0.1 * torch.randn(n, dim, generator=g))
    return a, b


def test_selector_picks_the_best_reconstructing_task_and_falls_back_above_the_threshold():
    a, b = two_clusters()
    torch.manual_seed(0)
    autoencoders = []
    for data in (a, b):
        ae = FeatureAutoencoder(16, code_dim=4)
        batches = ((data[(i * 32) % 256:(i * 32) % 256 + 32], i * 32 // 256) for i in range(10**6))
        train_autoencoder(ae, batches, steps=200, lr=0.01, weight_decay=1e-4, decay_epochs=10)
        autoencoders.append(ae.eval())
    with torch.no_grad():
        err_a, err_b = reconstruction_errors(autoencoders, a), reconstruction_errors(autoencoders, b)
        unseen = torch.full((8, 16), 0.5)  # a distribution neither autoencoder saw
        err_u = reconstruction_errors(autoencoders, unseen)
    assert (err_a[:, 0] < err_a[:, 1]).all() and (err_b[:, 1] < err_b[:, 0]).all()
    threshold = 0.5 * float(err_u.min())
    assert float(torch.cat([err_a[:, 0], err_b[:, 1]]).max()) < threshold
    assert select_tasks(err_a, threshold).tolist() == [0] * 256
    assert select_tasks(err_b, threshold, "image").tolist() == [1] * 256
    assert select_tasks(err_u, threshold).tolist() == [ZERO_SHOT] * 8
    mixed = torch.cat([err_a[:4], err_u[:4]])  # per image: its own choice; per batch: one choice from the mean
    assert select_tasks(mixed, threshold, "image").tolist() == [0] * 4 + [ZERO_SHOT] * 4
    assert len(set(select_tasks(mixed, threshold, "batch").tolist())) == 1


def test_selector_hand_made_errors():
    errors = torch.tensor([[0.3, 0.1, 0.2], [0.05, 0.2, 0.3], [0.5, 0.6, 0.7]])
    assert select_tasks(errors, 0.4, "image").tolist() == [1, 0, ZERO_SHOT]
    assert select_tasks(errors, 0.4, "batch").tolist() == [0, 0, 0]  # column means 0.283, 0.3, 0.4
    assert select_tasks(errors, 0.25, "batch").tolist() == [ZERO_SHOT] * 3


def run_spy(tmp_path, spy, *extra):
    original = METHODS._entries["moe_adapters"].target
    METHODS._entries["moe_adapters"].target = spy
    try:
        overrides = micro_overrides("moe_adapters", iterations=6) + ["scenario.options.order=shapes,colours",
                                                                    "train.lr=1e-2", *extra]
        return run_experiment(load_config(None, overrides), tmp_path, log=lambda *_: None)[0]
    finally:
        METHODS._entries["moe_adapters"].target = original


def test_frozen_experts_stay_bit_identical_and_the_selector_routes(tmp_path):
    from condu_bench.baselines.moe_adapters import MoEAdapters

    states, frozen, checks = [], [], {}

    class Spy(MoEAdapters):
        def after_task(self, task, ctx):
            usage = {b: moe.usage.clone() for b, moe in mixtures(ctx.model)}
            super().after_task(task, ctx)
            states.append({k: v.detach().clone() for k, v in ctx.model.state_dict().items()})
            frozen.append(set(self.frozen))
            checks.setdefault("usage", []).append(usage)
            images = torch.stack([ctx.eval_transform(task.data.test[i][0]) for i in range(8)])
            with torch.no_grad():
                checks.setdefault("own", []).append(self.choose_routers(images, task.data, ctx).tolist())
                if task.index == 1:  # a union label space: the logits cover both domains' classes
                    ctx.label_space = [*ctx.tasks_seen, task.data]
                    checks["agnostic_width"] = (self.logits(images, None, ctx).shape[1],
                                                sum(t.num_classes for t in ctx.label_space))

    record = run_spy(tmp_path, Spy, "method_options.moe_adapters.selector_iterations=25",
                     "method_options.moe_adapters.selector_batch_size=16",
                     "method_options.moe_adapters.num_experts=6", "method_options.moe_adapters.bottleneck=8",
                     "method_options.moe_adapters.adapter_dropout=0.0", "method_options.moe_adapters.threshold=1.0")
    first, second = states
    # after task 0, in each block, the two experts task 0 used most are frozen
    for block, usage in checks["usage"][0].items():
        top = sorted(range(6), key=lambda e: (-int(usage[e]), e))[:2]
        assert {f"{block}.moe.experts.{e}" for e in top} <= frozen[0]
    assert len(frozen[0]) == 4 and frozen[0] <= frozen[1]
    for name in frozen[0]:
        keys = [k for k in first if k.startswith(name + ".")]
        assert keys and all(torch.equal(first[k], second[k]) for k in keys), name
    changed = [k for k in first if ".experts." in k and not any(k.startswith(f + ".") for f in frozen[0])
               and not torch.equal(first[k], second[k])]
    assert changed  # the unfrozen experts task 1 routed to did learn
    assert all(torch.equal(first[k], second[k]) for k in first if ".routers.0" in k or ".noise.0" in k)
    assert any(not torch.equal(first[k], second[k]) for k in first if ".routers.1" in k)
    assert all(torch.equal(first[k], second[k]) for k in first if ".moe." not in k)  # CLIP itself frozen
    # each task's own test batch goes to its own router
    assert checks["own"] == [[0] * 8, [1] * 8]
    width, classes = checks["agnostic_width"]
    assert width == classes > 8  # task-agnostic over a union: every listed domain's classes
    assert record["method_report"]["frozen_experts"] == len(frozen[1])


def test_threshold_zero_sends_everything_to_zero_shot_clip(tmp_path):
    from condu_bench.baselines.moe_adapters import MoEAdapters
    from condu_bench.models.classifier import cosine_logits, text_classifier

    seen = []

    class Spy(MoEAdapters):
        def after_task(self, task, ctx):
            super().after_task(task, ctx)
            images = torch.stack([ctx.eval_transform(task.data.test[i][0]) for i in range(6)])
            with torch.no_grad():
                got = self.logits(images, task.data, ctx)
                plain = copy.deepcopy(ctx.model)
                route(plain, None)
                want = cosine_logits(image_features(plain, images),
                                     text_classifier(plain, ctx.tokenizer, task.data.classnames, task.data.templates))
                route(plain, task.index)
                trained = cosine_logits(image_features(plain, images),
                                        text_classifier(plain, ctx.tokenizer, task.data.classnames, task.data.templates))
            seen.append((self.choose_routers(images, task.data, ctx).tolist(), torch.equal(got, want),
                         torch.allclose(trained, want, atol=1e-3)))

    run_spy(tmp_path, Spy, "method_options.moe_adapters.selector_iterations=5", "method_options.moe_adapters.threshold=0",
            "method_options.moe_adapters.num_experts=4", "method_options.moe_adapters.bottleneck=8")
    assert seen == [([ZERO_SHOT] * 6, True, False), ([ZERO_SHOT] * 6, True, False)]


def test_state_dict_round_trip(micro):
    from condu_bench.baselines.moe_adapters import MoEAdapters

    method, ctx = micro_method(micro, selector_code_dim=5)
    torch.manual_seed(0)
    method.autoencoders = [FeatureAutoencoder(32, 5).eval(), FeatureAutoencoder(32, 5).eval()]
    method.task_names = ["shapes", "colours"]
    method.frozen = {"transformer.resblocks.0.moe.experts.1"}
    state = method.state_dict()
    again, _ = micro_method(micro, selector_code_dim=5)
    again.load_state_dict(copy.deepcopy(state))
    assert again.task_names == method.task_names and again.frozen == method.frozen
    x = torch.rand(4, 32)
    torch.testing.assert_close(reconstruction_errors(again.autoencoders, x), reconstruction_errors(method.autoencoders, x),
                               rtol=0, atol=0)
    assert isinstance(again, MoEAdapters) and again.state_dict().keys() == state.keys()


def test_config_rejects_bad_options():
    config = METHODS.get("moe_adapters").Config
    with pytest.raises(ValueError, match="top_k"):
        config(num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="encoders"):
        config(encoders="text")
    with pytest.raises(ValueError, match="selector_granularity"):
        config(selector_granularity="pixel")


def test_balance_term_is_kept_only_when_asked_and_reaches_the_router(micro):
    from condu_bench.models.moe_adapters import balance_loss, cv_squared

    assert float(cv_squared(torch.tensor([2.0, 2.0, 2.0]))) == 0.0
    torch.testing.assert_close(cv_squared(torch.tensor([0.0, 4.0])), torch.tensor(8.0 / 4.0))  # var 8 (unbiased) / 2^2
    model = copy.deepcopy(micro.model)
    add_moe_adapters(model, "image", num_experts=4, num_routers=1, top_k=2, bottleneck=8, scale=0.1, dropout=0.0)
    (_, moe), = mixtures(model)
    with torch.no_grad():
        moe.routers[0].normal_()
    route(model, 0)
    model.train()
    torch.manual_seed(0)
    model.encode_image(torch.randn(8, 3, 32, 32))
    assert moe.balance_loss is None and float(balance_loss(model)) == 0.0
    moe.track_balance = True
    model.encode_image(torch.randn(8, 3, 32, 32))
    term = balance_loss(model)
    assert float(term.detach()) > 0
    term.backward()
    assert moe.routers[0].grad is not None and moe.noise[0].grad is not None and moe.noise[0].grad.abs().sum() > 0
    route(model, None)  # drops the graph: the model can be copied again
    copy.deepcopy(model)


@pytest.fixture(scope="module")
def alexnet_features_file(tmp_path_factory):
    """torchvision's AlexNet layout with random weights; only ``features.*`` (what the selector reads, 10 MB)."""
    from torchvision.models import alexnet

    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in alexnet(weights=None).features.state_dict().items()}
    path = tmp_path_factory.mktemp("alexnet") / "alexnet-features.pth"
    torch.save(state, path)
    return path, state


def test_alexnet_selector_features_are_the_releases_conv5_map(alexnet_features_file):
    from torchvision.models import alexnet

    from condu_bench.models.alexnet import load_alexnet_conv5

    path, state = alexnet_features_file
    reference = alexnet(weights=None)
    reference.features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
    extractor_of_release = torch.nn.Sequential(*list(reference.children())[0][:-2]).eval()  # the release's Alexnet_FE
    images = torch.randn(2, 3, 224, 224)
    features = load_alexnet_conv5(path)(images)
    assert features.shape == (2, 256 * 13 * 13)  # the release's autoencoder input size
    assert torch.equal(features, extractor_of_release(images).flatten(1))
    assert (features < 0).any()  # before conv5's ReLU: the sigmoid sees negative values too


def test_alexnet_weights_missing_or_unsafe_are_clear_errors(tmp_path):
    import os

    from condu_bench.errors import UserError
    from condu_bench.models.alexnet import TORCHVISION_FILE, load_alexnet_conv5

    with pytest.raises(UserError, match=f"{TORCHVISION_FILE}.*selector_weights"):
        load_alexnet_conv5(tmp_path / "absent.pth")

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    torch.save({"features.0.weight": Exploit()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="without pickle code"):
        load_alexnet_conv5(tmp_path / "evil.pth")
    assert not (tmp_path / "ran").exists()
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, tmp_path / "partial.pth")
    with pytest.raises(UserError, match="lacks features.0.bias"):
        load_alexnet_conv5(tmp_path / "partial.pth")


@pytest.mark.parametrize("bench", ["mtil_order1", "mtil_fewshot"])
def test_moe_benchmark_files_run_on_a_fake_zscl_tree(tmp_path, bench, alexnet_features_file):
    import json

    import fake_trees as ft

    from condu_bench.cli import main
    from condu_bench.config import load_config
    from condu_bench.cli import resolve_benchmark

    # the real files run the release's selector: AlexNet's conv5 map at the release's threshold
    options = load_config(resolve_benchmark(bench), []).method_options["moe_adapters"]
    assert options["selector_features"] == "alexnet"
    assert options["threshold"] == (0.0585 if bench == "mtil_fewshot" else 0.0655)
    root = tmp_path / "data"
    for build in (ft.zscl_mnist, ft.zscl_eurosat):
        build(root)
    out = tmp_path / "out"
    argv = ["run", bench, "methods=[moe_adapters]", f"data_root={root}", "scenario.options.order=MNIST,EuroSAT", "--out", str(out), "--no-progress",
            "model.arch=condu-micro-vit", "model.pretrained=none", "train.iterations=2", "train.batch_size=4",
            "train.warmup_steps=1", "num_workers=0", "eval.batch_size=16", "method_options.moe_adapters.num_experts=4",
            "method_options.moe_adapters.selector_iterations=2", "method_options.moe_adapters.selector_batch_size=4"]
    if bench == "mtil_fewshot":
        argv.append("scenario.options.shots=2")
    absent = tmp_path / "no-alexnet.pth"
    assert main([*argv, f"method_options.moe_adapters.selector_weights={absent}"]) == 2  # a clear error, no run
    assert not (out / "moe_adapters" / "seed0" / "metrics.json").exists()
    assert main([*argv, f"method_options.moe_adapters.selector_weights={alexnet_features_file[0]}"]) == 0
    metrics = json.loads((out / "moe_adapters" / "seed0" / "metrics.json").read_text())
    assert metrics["datasets"] == ["MNIST", "EuroSAT"]
    assert metrics["method_report"]["tasks"] == ["MNIST", "EuroSAT"]
    assert metrics["method_report"]["selector_input_dim"] == 256  # conv5 of AlexNet at the micro model's 32 px


def test_alexnet_selector_features_stay_fp32_under_autocast(alexnet_features_file):
    from condu_bench.models.alexnet import load_alexnet_conv5

    extractor = load_alexnet_conv5(alexnet_features_file[0])
    images = torch.randn(1, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = extractor(images)
    assert inside.dtype == torch.float32 and torch.equal(inside, extractor(images))

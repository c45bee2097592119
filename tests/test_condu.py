"""ConDU on the micro CLIP: experts from theta_0, the first expert at step 1, prototypes from the shots, routing."""

import pytest
import torch
import torch.nn.functional as F
from helpers import micro_overrides

from condu_bench.config import load_config
from condu_bench.experiment import run_experiment
from condu_bench.registries import METHODS


def run_spy(tmp_path, method, spy, *extra):
    original = METHODS._entries[method].target
    METHODS._entries[method].target = spy
    try:
        config = load_config(None, micro_overrides(method, iterations=4) + list(extra))
        return run_experiment(config, tmp_path / method, log=lambda *_: None)[0]
    finally:
        METHODS._entries[method].target = original


def test_experts_start_from_theta0_and_the_first_is_used_at_step_one(tmp_path):
    from condu_bench.baselines.condu import ConDU
    from condu_bench.models.classifier import cosine_logits, image_features, text_classifier

    seen = []

    class Spy(ConDU):
        def before_task(self, task, ctx):
            super().before_task(task, ctx)
            seen.append(("start", all(torch.equal(v, ctx.pretrained_state[k].to(v.device)) for k, v in ctx.model.state_dict().items())))

        def after_task(self, task, ctx):
            trained = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
            super().after_task(task, ctx)
            if task.index == 0:  # one task: its decoupled expert is the trained model itself
                images = torch.stack([ctx.eval_transform(task.data.test[i][0]) for i in range(4)])
                with torch.no_grad():
                    got = self.logits(images, task.data, ctx)
                    reference = ctx.frozen_copy(trained)
                    want = cosine_logits(image_features(reference, images),
                                         text_classifier(reference, ctx.tokenizer, task.data.classnames, task.data.templates))
                    zero_shot = cosine_logits(image_features(self.base, images),
                                              text_classifier(self.base, ctx.tokenizer, task.data.classnames, task.data.templates))
                seen.append(("expert", torch.allclose(got, want, atol=1e-4), not torch.allclose(got, zero_shot, atol=1e-3)))

    record = run_spy(tmp_path, "condu", Spy, "scenario.options.order=shapes,colours", "train.lr=1e-3")
    assert seen == [("start", True), ("expert", True, True), ("start", True)]
    storage = record["method_report"]["storage_bytes"]
    assert len(storage["masks_per_task"]) == 2 and storage["unified"] > 8 * max(storage["masks_per_task"])
    report = record["method_report"]
    assert report["per_task_storage_mib"] == round((sum(storage["masks_per_task"]) / 2 + 4) / 2**20, 3)
    # every weight but logit_scale trains in each expert: the count the cost block shows
    from condu_bench.models.loading import new_open_clip

    micro = new_open_clip("condu-micro-vit")
    assert report["trainable_parameters"] == sum(p.numel() for n, p in micro.named_parameters() if n != "logit_scale")
    assert "peak_gpu_memory_mib" not in report  # CPU run: nothing to measure
    assert report["eval_seconds_per_image"] > 0  # the reports divide it by zero-shot's


def test_prototypes_come_from_the_shots_actually_trained_on(tmp_path):
    from condu_bench.baselines.condu import ConDU
    from condu_bench.models.classifier import image_features

    checks = []

    class Spy(ConDU):
        def after_task(self, task, ctx):
            super().after_task(task, ctx)
            train = task.data.train
            assert len(train) == 2 * task.data.num_classes  # the shots
            feats = image_features(self.base, torch.stack([ctx.eval_transform(train[i][0]) for i in range(len(train))]).to(ctx.device))
            labels = torch.tensor([train[i][1] for i in range(len(train))])
            tokens = ctx.tokenizer([t.format(c) for c in task.data.classnames for t in task.data.templates])
            with torch.no_grad():
                text = F.normalize(self.base.encode_text(tokens).float(), dim=-1).view(task.data.num_classes, len(task.data.templates), -1).mean(1)
            image = torch.stack([feats[labels == c].mean(0) for c in range(task.data.num_classes)])
            checks.append(torch.allclose(self.prototypes[-1], F.normalize((image + text) / 2, dim=-1), atol=1e-5))

    run_spy(tmp_path, "condu", Spy, "scenario.options.order=shapes,colours", "scenario.options.shots=2")
    assert checks == [True, True]


def test_routing_averages_theta0_and_the_top_k_experts(tmp_path):
    from condu_bench.baselines.condu import ConDU
    from condu_bench.models.classifier import cosine_logits, image_features, text_classifier

    checks = []

    class Spy(ConDU):
        evaluated = {}

        def logits(self, images, task, ctx):
            self.evaluated.setdefault(task.name, task)  # task-known: every evaluated dataset comes by
            return super().logits(images, task, ctx)

        def after_task(self, task, ctx):
            super().after_task(task, ctx)
            if task.index != 1:
                return
            unseen = self.evaluated["counts"]  # not learned yet
            images = torch.stack([ctx.eval_transform(unseen.test[i][0]) for i in range(6)])
            with torch.no_grad():
                got = self.logits(images, unseen, ctx)
                _, top = self.routing(image_features(self.base, images))
                def logits_of(model):
                    return cosine_logits(image_features(model, images), text_classifier(model, ctx.tokenizer, unseen.classnames, unseen.templates))
                base = logits_of(self.base)
                experts = [logits_of(ctx.frozen_copy(self.load_expert(i, ctx).state_dict())) for i in range(2)]
                want = torch.stack([(base[n] + experts[top[n, 0]][n]) / 2 for n in range(6)])
            checks.append((top.shape, torch.allclose(got, want, atol=1e-4)))

    run_spy(tmp_path, "condu", Spy, "method_options.condu.top_k=1", "train.lr=1e-3")
    assert checks == [(torch.Size([6, 1]), True)]


def test_zero_initialised_lora_leaves_the_model_unchanged():
    import copy

    from condu_bench.models.loading import load_model
    from condu_bench.models.lora import add_lora, lora_parameters

    loaded = load_model(load_config(None, micro_overrides()).model)
    model = loaded.model.eval()
    adapted = copy.deepcopy(model)
    names = add_lora(adapted, ("mlp.c_fc", "mlp.c_proj"), rank=8, scale=1 / 8 ** 0.5, init="zero_b", seed=0)
    blocks = len(model.visual.transformer.resblocks) + len(model.transformer.resblocks)
    assert len(names) == 2 * blocks and len(lora_parameters(adapted)) == 4 * blocks
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = loaded.tokenizer(["a red circle.", "two squares."])
    with torch.no_grad():
        assert torch.equal(adapted.encode_image(images), model.encode_image(images))
        assert torch.equal(adapted.encode_text(tokens), model.encode_text(tokens))
    adapted.load_state_dict(model.state_dict(), strict=False)  # theta_0 keys are unchanged
    reference = copy.deepcopy(model)
    add_lora(reference, ("mlp.c_fc", "mlp.c_proj"), rank=8, scale=1 / 8 ** 0.5, init="reference", seed=0)
    with torch.no_grad():
        assert not torch.equal(reference.encode_image(images), model.encode_image(images))


def test_condu_lora_trains_only_the_adapters(tmp_path):
    from condu_bench.baselines.condu_lora import ConDULoRA

    changed = []

    class Spy(ConDULoRA):
        def after_task(self, task, ctx):
            state = ctx.model.state_dict()
            changed.append(sorted({k.rsplit(".", 1)[-1] for k in state if not torch.equal(state[k], self.theta0[k])}))
            super().after_task(task, ctx)

    record = run_spy(tmp_path, "condu_lora", Spy, "scenario.options.order=shapes,colours",
                     "method_options.condu_lora.rank=4", "train.lr=1e-2")
    assert changed == [["lora_A", "lora_B"], ["lora_A", "lora_B"]]
    assert record["method_report"]["tasks"] == ["shapes", "colours"]


@pytest.mark.parametrize("label_space", ["dataset", "union"])
def test_task_agnostic_withholds_the_task_and_scores_the_label_space(tmp_path, label_space):
    """ConDU's released agnostic evaluation: no task given (it routes), each image scored over its own dataset's classes;
    ``label_space=union`` over every evaluated dataset's."""
    from condu_bench.baselines.condu import ConDU

    calls = set()

    class Spy(ConDU):
        def logits(self, images, task, ctx):
            out = super().logits(images, task, ctx)
            calls.add((task, tuple(t.name for t in ctx.label_space), out.shape[1]))
            return out

    run_spy(tmp_path, "condu", Spy, "scenario.options.task_agnostic=true", f"scenario.options.label_space={label_space}")
    domains = ("shapes", "colours", "counts")
    assert {task for task, _, _ in calls} == {None}
    spaces = {space for _, space, _ in calls}
    assert spaces == ({(d,) for d in domains} if label_space == "dataset" else {domains})
    widths = {space: width for _, space, width in calls}
    sizes = {"shapes": 6, "colours": 8, "counts": 5}
    assert all(width == sum(sizes[d] for d in space) for space, width in widths.items())


@pytest.mark.parametrize("method", ["condu", "condu_lora"])
def test_condu_task_agnostic_and_few_shot_runs(tmp_path, method):
    extra = [f"method_options.{method}.rank=4"] if method == "condu_lora" else []
    agnostic = run_spy(tmp_path / "agnostic", method, METHODS.get(method), "scenario.options.task_agnostic=true", *extra)
    assert agnostic["task_agnostic"] and len(agnostic["per_dataset"]) == 3
    fewshot = run_spy(tmp_path / "fewshot", method, METHODS.get(method), "scenario.options.shots=2", *extra)
    assert fewshot["scenario"].endswith("fewshot")

"""`condu-bench bench`: what each ratio compares is the same work, and the command writes the five ratios."""

from __future__ import annotations

import json

import pytest
import torch

from condu_bench.config import TrainConfig
from condu_bench.perf import ratios


@pytest.fixture(scope="module")
def micro_ctx():
    from condu_bench.config import load_config
    from condu_bench.perf.command import context_for

    config = load_config(None, ["train.batch_size=4", "train.warmup_steps=1"])
    return context_for(config, "condu-micro-vit")


def test_the_plain_loop_does_exactly_the_harness_work(micro_ctx):
    from condu_bench.baselines.finetune import ContinualFinetune
    from condu_bench.data.task import TaskData
    from condu_bench.method import TaskInfo
    from condu_bench.training.loop import train_task

    ctx, steps = micro_ctx, 3
    generator = torch.Generator().manual_seed(1)
    data = ratios.TensorPairs(torch.randn(12, 3, 32, 32, generator=generator), torch.arange(12) % 3)
    task = TaskData("t", ["a", "b", "c"], ["a photo of a {}."], test=data, train=data)
    ctx.model.load_state_dict(ctx.pretrained_state)
    train_task(ContinualFinetune(), TaskInfo(0, task, steps, 1e-3), data, ctx, stream_index=0, progress=False)
    harness = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    ctx.model.load_state_dict(ctx.pretrained_state)
    ratios.plain_finetune_loop(ctx, data, task, steps, 1e-3, seed=ratios.harness_data_seed(ctx))
    plain = ctx.model.state_dict()
    moved = [k for k in harness if not torch.equal(harness[k], ctx.pretrained_state[k])]
    assert len(moved) > 10  # the step trained both towers
    for key in harness:
        torch.testing.assert_close(plain[key], harness[key], rtol=1e-4, atol=1e-6)
    ctx.model.load_state_dict(ctx.pretrained_state)


def test_condu_task_agnostic_inference_passes_each_image_through_k_plus_one_models(micro_ctx, tmp_path):
    from condu_bench.training.evaluate import Evaluator

    ctx = micro_ctx
    tasks = [ratios.photo_task(tmp_path, 6, name=f"task{i}", offset=6 * i) for i in range(3)]
    condu = ratios.condu_with_experts(ctx, tasks)
    assert len(condu.packed) == 3 and condu.config.top_k == 3
    seen = []
    hook = torch.nn.Module.register_forward_pre_hook
    models = [condu.base] + [condu.load_expert(i, ctx) for i in range(3)]
    handles = [hook(m.visual, lambda module, args: seen.append(len(args[0]))) for m in models]
    try:
        ctx.label_space = tasks
        Evaluator(ctx, 4, progress=False).accuracy(condu, tasks[0], task_known=False, label_space=tasks)
    finally:
        for handle in handles:
            handle.remove()
    assert sum(seen) == 4 * 6  # theta_0 once (classifies and routes) + 3 experts, 6 images each


def test_bench_quick_writes_the_five_ratios_with_their_timings(tmp_path, monkeypatch, capsys):
    from condu_bench.cli import main
    from condu_bench.perf import command

    monkeypatch.setitem(command.QUICK, "train_arch", "condu-micro-vit")
    for key, value in {"batch_size": 4, "steps": 2, "eval_images": 8, "eval_batch_size": 4, "repeats": 1,
                       "experts": 2, "expert_images": 4}.items():
        monkeypatch.setitem(command.QUICK, key, value)
    out_file = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(out_file), "--photos", str(tmp_path / "photos")]) == 0
    out = json.loads(out_file.read_text())
    keys = ["overhead_ratio", "eval_cache_speedup", "feature_cache_speedup", "condu_agnostic_cost", "fixed_items_speedup"]
    assert [m["key"] for m in out["measurements"]] == keys
    targets = {"overhead_ratio": (1.05, True), "eval_cache_speedup": (3.0, False), "feature_cache_speedup": (5.0, False),
               "condu_agnostic_cost": (3.0, True), "fixed_items_speedup": (2.0, False)}  # K + 1 with K = 2
    for m in out["measurements"]:
        assert out[m["key"]] == pytest.approx(m["numerator_s"] / m["denominator_s"], rel=1e-3)
        assert (m["target"], m["at_most"]) == targets[m["key"]]
        assert m["met"] == (m["value"] <= m["target"] if m["at_most"] else m["value"] >= m["target"])
        assert out["targets"][m["key"]]["met"] == m["met"]
    assert out["models"] == {"training_and_condu": "condu-micro-vit", "evaluation": "condu-micro-vit-224"}
    assert len(list((tmp_path / "photos").rglob("*.jpg"))) == 8 + 4  # the eval set and one more expert's task
    printed = capsys.readouterr().out
    assert all(f"| {key} |" in printed for key in keys)


def test_photos_are_the_same_whichever_files_exist(tmp_path):
    from condu_bench.perf.photos import write_photos

    write_photos(tmp_path / "a", 3)
    write_photos(tmp_path / "b", 1)
    write_photos(tmp_path / "b", 3)
    for rel, _ in write_photos(tmp_path / "a", 3):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_condu_reuses_theta0_features_of_a_batch_it_has_evaluated(micro_ctx, tmp_path):
    from condu_bench.training.evaluate import Evaluator

    ctx = micro_ctx
    tasks = [ratios.photo_task(tmp_path, 6, name=f"task{i}", offset=6 * i) for i in range(3)]
    condu = ratios.condu_with_experts(ctx, tasks)
    passes = {"theta0": 0, "experts": 0}
    hook = torch.nn.Module.register_forward_pre_hook
    handles = [hook(condu.base.visual, lambda module, args: passes.__setitem__("theta0", passes["theta0"] + len(args[0])))]
    handles += [hook(condu.load_expert(i, ctx).visual,
                     lambda module, args: passes.__setitem__("experts", passes["experts"] + len(args[0]))) for i in range(3)]
    ctx.label_space = tasks
    evaluator = Evaluator(ctx, 4, progress=False)
    try:
        first = evaluator.accuracy(condu, tasks[0], task_known=False, label_space=tasks)
        after_first = dict(passes)
        second = evaluator.accuracy(condu, tasks[0], task_known=False, label_space=tasks)
    finally:
        for handle in handles:
            handle.remove()
    assert after_first == {"theta0": 6, "experts": 3 * 6}
    assert passes == {"theta0": 6, "experts": 2 * 3 * 6}  # the second evaluation runs the experts only
    assert second == first
    assert ctx.eval_batch is None  # set only while the evaluator calls the method

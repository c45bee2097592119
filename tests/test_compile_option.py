"""train.compile: the towers run compiled during a task's steps only, and train to the same weights."""

from __future__ import annotations

import torch

from helpers import micro_overrides


def train_weights(monkeypatch, compile_: bool, seen: list) -> dict:
    from condu_bench.baselines.finetune import ContinualFinetune
    from condu_bench.config import load_config
    from condu_bench.perf.command import context_for
    from condu_bench.perf.ratios import TensorPairs
    from condu_bench.data.task import TaskData
    from condu_bench.method import TaskInfo
    from condu_bench.training.loop import train_task

    config = load_config(None, micro_overrides() + [f"train.compile={str(compile_).lower()}"])
    ctx = context_for(config, "condu-micro-vit")

    class Spy(ContinualFinetune):
        def training_loss(self, batch, task, ctx):
            seen.append(ctx.model.visual._compiled_call_impl is not None and ctx.model.transformer._compiled_call_impl is not None)
            return super().training_loss(batch, task, ctx)

    data = TensorPairs(torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 2)
    task = TaskData("t", ["a", "b"], ["a photo of a {}."], test=data, train=data)
    train_task(Spy(), TaskInfo(0, task, 2, 1e-3), data, ctx, stream_index=0, progress=False)
    assert ctx.model.visual._compiled_call_impl is None and ctx.model.transformer._compiled_call_impl is None
    return ctx.model.state_dict()


def test_compiled_towers_during_steps_only_and_same_training(monkeypatch):
    real_compile = torch.compile
    compiled = []

    def eager_compile(fn, *args, **kwargs):  # the wiring is under test, not inductor (minutes on a CPU)
        compiled.append(fn)
        return real_compile(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    seen_plain, seen_compiled = [], []
    plain = train_weights(monkeypatch, False, seen_plain)
    assert compiled == [] and seen_plain == [False, False]
    with_compile = train_weights(monkeypatch, True, seen_compiled)
    assert len(compiled) == 2 and seen_compiled == [True, True]
    for key, value in plain.items():
        torch.testing.assert_close(with_compile[key], value)

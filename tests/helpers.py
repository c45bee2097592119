"""Helpers shared by tests (imported as a plain module: tests/ is on sys.path under pytest)."""

from __future__ import annotations


def micro_overrides(out_methods: str = "zeroshot,finetune", iterations: int = 3) -> list[str]:
    """A run of seconds: an untrained micro CLIP on three small synthetic domains."""
    return [
        f"methods={out_methods}",
        "model.arch=condu-micro-vit",
        "model.pretrained=none",
        "scenario.options.order=shapes,colours,counts",
        "scenario.options.n_train_per_class=6",
        "scenario.options.n_test_per_class=4",
        f"train.iterations={iterations}",
        "train.batch_size=8",
        "train.warmup_steps=1",
        "progress=false",
    ]


class Interrupt(Exception):
    """Stops a run of :func:`run_probed` as a task starts."""


def run_probed(tmp_path, method: str, overrides: list[str], base: type | None = None, interrupt_before: int | None = None,
               after_task=None) -> dict:
    """Run ``base`` (default: the registered class) registered as ``method`` with config ``overrides``; the run's record.

    ``after_task(method, task, ctx)`` is called after each task's own ``after_task``. With ``interrupt_before`` the
    run stops as that task starts and is then resumed in the same directory.
    """
    import pytest

    from condu_bench.config import load_config
    from condu_bench.experiment import run_experiment
    from condu_bench.registries import METHODS

    base = base or METHODS.get(method)
    armed = [interrupt_before is not None]

    class Probe(base):
        def before_task(self, task, ctx):
            if armed[0] and task.index == interrupt_before:
                armed[0] = False
                raise Interrupt
            super().before_task(task, ctx)

        def after_task(self, task, ctx):
            super().after_task(task, ctx)
            if after_task is not None:
                after_task(self, task, ctx)

    original = METHODS._entries[method].target
    METHODS._entries[method].target = Probe
    try:
        config = load_config(None, overrides)
        if interrupt_before is not None:
            with pytest.raises(Interrupt):
                run_experiment(config, tmp_path, log=lambda *_: None)
        return run_experiment(config, tmp_path, log=lambda *_: None)[0]
    finally:
        METHODS._entries[method].target = original


def two_task_overrides(method: str, iterations: int = 3, *extra: str) -> list[str]:
    """:func:`micro_overrides` over two domains, with ``method``'s own recipe at ``iterations`` steps of batch 8."""
    return (micro_overrides(method, iterations) + ["scenario.options.order=shapes,colours"] +
            [f"recipes.{method}.iterations={iterations}", f"recipes.{method}.batch_size=8", *extra])


def fake_base_to_novel_argv(tmp_path, method: str, *extra: str) -> list[str]:
    """``condu-bench run base_to_novel`` argv over a fake CoOp-layout tree (EuroSAT, DTD; 2 shots) with the micro CLIP."""
    import fake_trees as ft

    root = tmp_path / "data"
    for name in ("EuroSAT", "DTD"):
        ft.build(root, name, "coop")
    return ["run", "base_to_novel", f"data_root={root}", f"scenario.options.fewshot_cache={tmp_path / 'shots'}",
            "--out", str(tmp_path / "out"), "scenario.options.datasets=EuroSAT,DTD", "scenario.options.shots=2",
            "model.arch=condu-micro-vit", "model.pretrained=none", "num_workers=0", "eval.batch_size=16",
            "eval.max_per_dataset=6", "seeds=1", "--no-progress", f"methods={method}", *extra]

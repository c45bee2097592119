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

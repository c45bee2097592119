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

"""``condu-bench params``: each method's trainable parameters on an open_clip architecture, without weights.

The model is built with random weights (no download) and each method is set up on it as a run would set it up
(adapters, prompts, LoRA); the count is what its ``trainable_parameters`` hands the optimizer before the first task.
A method whose trainable set only exists inside a task (e.g. MoE-Adapters' current router) is shown as such, with
the reason, never as a guessed number.
"""

from __future__ import annotations

import argparse
from typing import Any


def count_trainable(arch: str, method_name: str) -> int:
    """Trainable parameters of ``method_name`` (default options) on a randomly initialised ``arch``."""
    import torch

    from condu_bench.config import TrainConfig
    from condu_bench.method import RunContext
    from condu_bench.models.loading import new_open_clip
    from condu_bench.registries import METHODS

    cls = METHODS.get(method_name)
    model = new_open_clip(arch)
    import open_clip

    ctx = RunContext(model=model, tokenizer=open_clip.get_tokenizer(arch), device=torch.device("cpu"),
                     pretrained_state={k: v.detach().clone() for k, v in model.state_dict().items()},
                     train_config=TrainConfig(), seed=0, scenario_name="synthetic_params")
    method = cls()
    method.setup(ctx)
    if not cls.trains:
        return 0
    return sum(p.numel() for _, p in method.trainable_parameters(ctx.model))


def parameter_table(arch: str, methods: list[str]) -> list[tuple[str, Any]]:
    from condu_bench.registries import METHODS

    for name in methods:
        METHODS.get(name)  # unknown names fail first, with "did you mean"
    rows = []
    for name in methods:
        try:
            rows.append((name, count_trainable(arch, name)))
        except RuntimeError as exc:  # a trainable set that exists only inside a task
            rows.append((name, f"depends on the task ({exc})"))
    return rows


def cmd_params(args: argparse.Namespace) -> int:
    from condu_bench.registries import METHODS

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else METHODS.names()
    rows = parameter_table(args.model, methods)
    width = max(len(n) for n, _ in rows)
    print(f"trainable parameters on {args.model} (random weights, default options)")
    for name, count in rows:
        print(f"  {name:<{width}}  {count:>13,}" if isinstance(count, int) else f"  {name:<{width}}  {count}")
    return 0


def add_command(sub) -> None:
    params = sub.add_parser("params", help="each method's trainable parameters on an open_clip architecture (no weights)")
    params.add_argument("--model", default="ViT-B-16", help="open_clip architecture (default ViT-B-16)")
    params.add_argument("--methods", help="comma-separated method names (default: every registered method)")
    params.set_defaults(func=cmd_params)

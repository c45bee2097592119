"""Train one task: exactly the method's trainable parameters, warm-up + cosine, NaN guard, progress bar."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import torch

from condu_bench.config import TrainConfig
from condu_bench.errors import TrainingDiverged, UserError
from condu_bench.method import Batch, RunContext, TaskInfo
from condu_bench.training.batches import endless_batches
from condu_bench.training.device import derived_seed
from condu_bench.training.feature_cache import check_frozen_image_tower
from condu_bench.recipes import steps_per_epoch
from condu_bench.training.schedule import lr_schedule
from condu_bench.training.selection import BestOnValidation


def select_trainable(model: torch.nn.Module, method: Any) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze what the method names. The optimizer is built from this list only
    (Avalanche's make_optimizer would silently add every parameter of the model)."""
    chosen = list(method.trainable_parameters(model))
    model.requires_grad_(False)
    params = []
    for name, param in chosen:
        param.requires_grad_(True)
        params.append(param)
    if method.trains and not params:
        raise UserError(f"method {method.name!r} trains but returned no trainable parameters")
    check_frozen_image_tower(method, model, params)
    return params


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        # The fused kernel (CPU and CUDA) makes the update ~6x cheaper than the per-tensor loop on CPU, where the
        # 49k-row token embedding of CLIP's text tower otherwise dominates a small model's step.
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@contextlib.contextmanager
def compiled_towers(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """``train.compile``: the image and text towers run compiled during a task's steps only. Afterwards they are
    restored, because a compiled module that is deep-copied later (a teacher, an expert) would keep calling the
    original module's forward."""
    towers = [m for m in (getattr(model, "visual", None), getattr(model, "transformer", None)) if isinstance(m, torch.nn.Module)]
    if enabled:
        for tower in towers:
            tower.compile()
    try:
        yield
    finally:
        if enabled:
            for tower in towers:
                tower._compiled_call_impl = None


def train_task(method: Any, task: TaskInfo, dataset: Any, ctx: RunContext, *, stream_index: int,
               num_workers: int = 0, progress: bool = True, observer: Any = None,
               fixed_items: bool = False) -> dict[str, float]:
    """Run ``task.iterations`` optimizer steps on ``dataset`` (an Avalanche experience dataset); ``observer``
    (optional) gets each step's loss and learning rate; ``fixed_items``: the dataset's transform is deterministic
    (``train.augment: none``), so its items are read once (see :func:`endless_batches`)."""
    from tqdm.auto import tqdm

    cfg: TrainConfig = ctx.train_config
    model = ctx.model
    method.before_task(task, ctx)
    params = select_trainable(model, method)
    if not params or task.iterations == 0:
        method.after_task(task, ctx)
        return {"iterations": 0}
    optimizer = build_optimizer(params, cfg, task.lr)
    scheduler = lr_schedule(optimizer, cfg, task.lr, task.iterations, len(dataset))
    selection = BestOnValidation(method, task, ctx, params) if cfg.select == "best_val" else None
    per_epoch = steps_per_epoch(len(dataset), cfg.batch_size)
    seed = derived_seed(ctx.seed, stream_index, task.index)
    torch.manual_seed(seed)  # augmentation randomness
    batches = endless_batches(dataset, cfg.batch_size, seed, num_workers, ctx.device.type == "cuda", fixed_items)
    model.train()
    bar = tqdm(range(task.iterations), desc=f"{method.name} | {task.name}", disable=not progress, leave=False)
    running = data_wait = 0.0
    started = time.perf_counter()
    with compiled_towers(model, cfg.compile):
        for step in bar:
            fetch = time.perf_counter()
            images, labels = next(batches)[:2]  # avalanche appends the task label
            data_wait += time.perf_counter() - fetch
            batch = Batch(images.to(ctx.device, non_blocking=True), labels.to(ctx.device, non_blocking=True))
            with ctx.autocast():
                loss = method.training_loss(batch, task, ctx)
            value = loss.item()  # the step's one host synchronisation
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"method {method.name!r}: the loss became {value} on task {task.name!r} (task {task.index + 1}) "
                    f"at step {step + 1}/{task.iterations}; lower the learning rate (train.lr={task.lr}) or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            method.after_iteration(step, task, ctx)
            if selection is not None and ((step + 1) % per_epoch == 0 or step + 1 == task.iterations):
                selection.end_of_epoch(step // per_epoch)
            running = 0.9 * running + 0.1 * value if step else value
            if observer is not None:
                observer.on_step(task.index, step, value, lr)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{running:.3f}")
    model.eval()
    if selection is not None:
        selection.restore()
    method.after_task(task, ctx)
    # wall seconds of the steps, and of them the time spent waiting for the next batch (each step ends in a host sync)
    seconds = {"train_seconds": time.perf_counter() - started, "data_wait_seconds": data_wait}
    return {"iterations": task.iterations, "final_loss": running, "trainable_parameters": sum(p.numel() for p in params),
            **seconds,
            **({"selection": selection.report()} if selection else {})}

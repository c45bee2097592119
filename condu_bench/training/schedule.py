"""Learning-rate schedules of the references: linear warm-up then cosine decay to zero, per step (MTIL), or Dassl's
per-epoch schedule (CoOp and its successors)."""

from __future__ import annotations

import math

import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, schedule: str = "cosine"):
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        decay_steps = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def dassl_epoch_lr(epoch: int, lr: float, epochs: int, warmup_epochs: int, warmup_lr: float | None) -> float:
    """The lr of one epoch under Dassl's ConstantWarmupScheduler around CosineAnnealingLR(T_max=epochs), which the
    trainer steps once per epoch: ``warmup_lr`` for the warm-up epochs, then ``lr`` annealed from the first epoch
    after them, over all ``epochs`` (so the last epoch does not reach zero)."""
    if epoch < warmup_epochs:
        return float(warmup_lr)
    return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / epochs))


def epoch_cosine(optimizer: torch.optim.Optimizer, lr: float, epochs: int, warmup_epochs: int, warmup_lr: float | None,
                 steps_per_epoch: int):
    def factor(step: int) -> float:
        return dassl_epoch_lr(step // steps_per_epoch, lr, epochs, warmup_epochs, warmup_lr) / lr if lr else 0.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lr_schedule(optimizer: torch.optim.Optimizer, cfg, lr: float, total_steps: int, n_train: int):
    """The schedule ``cfg`` (a resolved TrainConfig) names, for a task of ``total_steps`` over ``n_train`` images."""
    from condu_bench.recipes import steps_per_epoch, warmup_steps

    if cfg.schedule == "epoch_cosine":
        per_epoch = steps_per_epoch(n_train, cfg.batch_size)
        epochs = math.ceil(total_steps / per_epoch)
        return epoch_cosine(optimizer, lr, epochs, cfg.warmup_epochs or 0, cfg.warmup_lr, per_epoch)
    return warmup_cosine(optimizer, warmup_steps(cfg, n_train), total_steps, cfg.schedule)

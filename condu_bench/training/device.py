"""Device, precision and seeding decisions, made once per run."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from condu_bench.errors import UserError


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={requested} was asked for but CUDA is not available here; use device=auto or cpu")
    return device


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container or `taskset` can allow fewer than exist)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_num_workers(requested: int | str, synthetic: bool) -> int:
    """``num_workers: auto``: 0 for the synthetic world, else min(8, cores - 2) (0 on a 2-core machine)."""
    if requested != "auto":
        return int(requested)
    if synthetic:
        return 0
    return max(0, min(8, usable_cores() - 2))


def autocast_factory(device: torch.device, precision: str) -> Callable[[], Any]:
    """bf16 autocast on CUDA by default (no loss scaling needed); full fp32 on the CPU."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def derived_seed(*parts: int | str) -> int:
    """A stable seed for (run seed, stream, task, ...): the same whatever ran before, so resumes match."""
    import hashlib

    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)

"""Where a run's files live, whether it is finished, and its resumable progress.

One directory per (method, seed): ``<out>/<method>/seed<seed>/``. A run is finished when ``metrics.json``
exists; finished runs are skipped, never overwritten (``--force`` archives them first). Progress after each
completed task is kept in ``checkpoint/`` so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from condu_bench.atomic_io import atomic_path, atomic_write_json
from condu_bench.errors import UserError

METRICS = "metrics.json"
CHECKPOINT = "checkpoint"


def run_dir(out: Path, method: str, seed: int) -> Path:
    return out / method / f"seed{seed}"


def finished_metrics(directory: Path) -> dict[str, Any] | None:
    path = directory / METRICS
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); move it away to re-run this method") from exc


def prepare(directory: Path, config_hash: str, force: bool) -> str:
    """Decide what to do with ``directory``: "skip" (finished, same config), "resume" or "fresh"."""
    done = finished_metrics(directory)
    if done is not None:
        if not force and done.get("config_hash") == config_hash:
            return "skip"
        if not force:
            raise UserError(
                f"{directory} already holds a finished result of a different configuration "
                f"(config hash {done.get('config_hash')} != {config_hash}); pass --force to archive it and re-run, "
                "or choose another --out"
            )
        archive = directory.with_name(f"{directory.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(directory), archive)
        return "fresh"
    progress = read_progress(directory)
    if progress is not None and progress.get("config_hash") == config_hash and not force:
        return "resume"
    if (directory / CHECKPOINT).exists():
        shutil.rmtree(directory / CHECKPOINT)
    return "fresh"


def read_progress(directory: Path) -> dict[str, Any] | None:
    path = directory / CHECKPOINT / "progress.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a torn write: start over rather than trust it


def save_progress(directory: Path, progress: dict[str, Any], tensors: dict[str, Any]) -> None:
    """Weights first, then the JSON that points at them, so a crash between the two is never read as done."""
    from safetensors.torch import save_file

    ckpt = directory / CHECKPOINT
    with atomic_path(ckpt / "state.safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    atomic_write_json(ckpt / "progress.json", progress, default=str)


def load_progress_tensors(directory: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(directory / CHECKPOINT / "state.safetensors"))


def clear_progress(directory: Path) -> None:
    shutil.rmtree(directory / CHECKPOINT, ignore_errors=True)

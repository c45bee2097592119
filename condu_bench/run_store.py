"""Where a run's files live, whether it is finished, and its resumable progress.

One directory per (method, seed): ``<out>/<method>/seed<seed>/``. A run is finished when ``metrics.json``
exists; finished runs are skipped, never overwritten (``--force`` archives them first). Progress after each
completed task is kept in ``checkpoint/`` so an interrupted run resumes where it stopped.

A checkpoint is a pair: ``state-<n>-<random>.safetensors`` (a new name at every save) and ``progress.json``, which
names that file and records its SHA-256. The tensors are written first, then ``progress.json`` replaces the old
one atomically, then older state files are deleted; a crash at any point leaves ``progress.json`` naming a
complete file whose hash it holds. A pair that does not match (missing or altered state file) is refused.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from condu_bench.atomic_io import atomic_path, atomic_write_json, sha256_file
from condu_bench.errors import UserError
from condu_bench.run_lock import LOCK_NAME

METRICS = "metrics.json"
CHECKPOINT = "checkpoint"
PROGRESS = "progress.json"
STATE_NAME = re.compile(r"state-(\d+)-[0-9a-f]+\.safetensors")


class CheckpointError(UserError):
    """A checkpoint whose progress record and state file do not belong together; the message says how to restart."""

    def __init__(self, directory: Path, why: str):
        ckpt = directory / CHECKPOINT
        super().__init__(
            f"the checkpoint in {ckpt} is inconsistent: {why}. It cannot be resumed safely; re-run with --force to "
            f"discard it and start this method and seed over (or delete {ckpt})"
        )


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
        archive.mkdir()
        for child in directory.iterdir():
            if child.name != LOCK_NAME:  # the lock stays: this process still holds the directory
                shutil.move(str(child), archive / child.name)
        return "fresh"
    if not force:
        progress = read_progress(directory)
        if progress is not None and progress.get("config_hash") == config_hash:
            verified_state_file(directory, progress)  # refuse a damaged checkpoint before any training starts
            return "resume"
    clear_progress(directory)
    return "fresh"


def read_progress(directory: Path) -> dict[str, Any] | None:
    """The last saved progress record, or None when the run has none; an unreadable record is a CheckpointError."""
    path = directory / CHECKPOINT / PROGRESS
    if not path.is_file():
        return None
    try:
        progress = json.loads(path.read_text())
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(directory, f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(progress, dict):
        raise CheckpointError(directory, f"{path} does not hold a progress record")
    return progress


def verified_state_file(directory: Path, progress: dict[str, Any]) -> Path:
    """The state file ``progress`` names, after checking that it exists and has the recorded SHA-256."""
    name, expected = progress.get("state_file"), progress.get("state_sha256")
    if not isinstance(name, str) or not isinstance(expected, str):
        raise CheckpointError(directory, f"{PROGRESS} names no state file and hash (written by an older condu-bench?)")
    path = directory / CHECKPOINT / name
    if Path(name).name != name or not path.is_file():
        raise CheckpointError(directory, f"the state file {path} named in {PROGRESS} is missing")
    digest = sha256_file(path)
    if digest != expected:
        raise CheckpointError(
            directory, f"the state file {path} has SHA-256 {digest}, but {PROGRESS} records {expected} (changed or damaged)"
        )
    return path


def _next_state_name(ckpt: Path) -> str:
    numbers = [int(m.group(1)) for p in ckpt.glob("state-*.safetensors") if (m := STATE_NAME.fullmatch(p.name))]
    return f"state-{max(numbers, default=0) + 1:04d}-{secrets.token_hex(4)}.safetensors"


def save_progress(directory: Path, progress: dict[str, Any], tensors: dict[str, Any]) -> None:
    """Save a new consistent checkpoint: tensors under a new name, then the record naming them, then drop older files."""
    from safetensors.torch import save_file

    ckpt = directory / CHECKPOINT
    ckpt.mkdir(parents=True, exist_ok=True)
    state = ckpt / _next_state_name(ckpt)
    with atomic_path(state) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    record = {**progress, "state_file": state.name, "state_sha256": sha256_file(state)}
    atomic_write_json(ckpt / PROGRESS, record, default=str)
    for old in [*ckpt.glob("state*.safetensors"), *ckpt.glob(".state*.tmp")]:
        if old != state:
            old.unlink(missing_ok=True)  # earlier checkpoints, and any left by a crash before this save


def load_progress_tensors(directory: Path, progress: dict[str, Any]) -> dict[str, Any]:
    """The tensors of the checkpoint ``progress`` (from :func:`read_progress`) names, verified against its hash."""
    from safetensors.torch import load_file

    return load_file(str(verified_state_file(directory, progress)))


def clear_progress(directory: Path) -> None:
    shutil.rmtree(directory / CHECKPOINT, ignore_errors=True)

"""What a finished run keeps for methods that continue from it (MergeTune): the learned state after every task.

Only methods listed in ``KEPT_FOR`` keep it (their learned state is small: prompts, CLIPFit's biases and LayerNorms).
After each task the runner writes ``task_states/<n>.safetensors`` with the method's tensors (``method/<key>``) and the
model parameters the method trains (``model/<name>``), and records it in ``task_states/manifest.json`` under the task's
name with its SHA-256 and the method's non-tensor state. ``task_states/`` survives the end of the run (only
``checkpoint/`` is cleared); a file whose hash does not match its record is refused. Tensors are read with
safetensors, never unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from condu_bench.atomic_io import atomic_path, atomic_write_json, sha256_file
from condu_bench.errors import UserError

DIRECTORY = "task_states"
MANIFEST = "manifest.json"
KEPT_FOR = ("coop", "kgcoop", "clipfit")  # the bases MergeTune continues from


def keeps_task_states(method_name: str) -> bool:
    return method_name in KEPT_FOR


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / DIRECTORY / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); re-run the method that wrote it") from exc
    if not isinstance(manifest, dict):
        raise UserError(f"{path} does not hold a task-state manifest; re-run the method that wrote it")
    return manifest


def save_task_state(run_dir: Path, stream: str, task: str, method: Any, model: torch.nn.Module) -> None:
    """Keep ``method``'s learned state after ``task`` of ``stream`` (replacing an earlier save of the same task)."""
    from safetensors.torch import save_file

    from condu_bench.training.runner import split_method_state

    tensors, plain = split_method_state(method.state_dict())
    trained = {id(p) for _, p in method.trainable_parameters(model)}
    tensors.update({f"model/{n}": p for n, p in model.named_parameters() if id(p) in trained})
    directory = Path(run_dir) / DIRECTORY
    manifest = read_manifest(run_dir)
    previous = manifest.get(task)
    if previous is not None and previous.get("stream") != stream:
        raise UserError(f"two streams ({previous.get('stream')!r}, {stream!r}) train a task named {task!r}; task states "
                        "are kept by task name, so task names must be unique across a scenario's streams")
    name = previous["file"] if previous is not None else f"{len(manifest):04d}.safetensors"
    with atomic_path(directory / name) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    manifest[task] = {"stream": stream, "method": method.name, "file": name, "sha256": sha256_file(directory / name),
                      "method_state": plain}
    atomic_write_json(directory / MANIFEST, manifest)


def load_task_state(run_dir: Path, task: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the non-tensor method state kept after ``task``, verified against the recorded hash."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    entry = manifest.get(task)
    if entry is None:
        kept = ", ".join(sorted(manifest)) or "none"
        raise UserError(f"{run_dir} keeps no learned state for task {task!r} (tasks kept: {kept}); the run must be of "
                        f"the same scenario, by a method that keeps its task states ({', '.join(KEPT_FOR)})")
    path = run_dir / DIRECTORY / str(entry.get("file"))
    if Path(str(entry.get("file"))).name != entry.get("file") or not path.is_file():
        raise UserError(f"the task state {path} named in {run_dir / DIRECTORY / MANIFEST} is missing")
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        raise UserError(f"the task state {path} has SHA-256 {digest}, but the manifest records {entry.get('sha256')} "
                        "(changed or damaged); re-run the base method")
    return load_file(str(path)), dict(entry.get("method_state") or {})

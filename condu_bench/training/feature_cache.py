"""Image features of methods whose image tower never changes (zero-shot, prompt learning): computed once per
evaluated split and reused by every later evaluation of the run, and, for splits read from the decoded-image cache,
by every later run on the same weights.

A method opts in with ``frozen_image_tower = True``; the runner refuses such a method if it trains an image-tower
parameter (:func:`check_frozen_image_tower`). Features are keyed by the evaluated split (its images and transform,
see the evaluator) and by a checksum of the live image tower, so weights that changed in any other way (a hook, a
merge) are never served stale features: they are computed again.

On disk (``disk_dir``; the evaluator puts it under the decoded-image cache, as ``features/``) an entry is keyed by
the decoded split's key (which names its images and transform), a SHA-256 of every image-tower tensor, and the
evaluation context (device type, precision, batch size, torch version): anything that can change a feature bit.
An entry is ``features.safetensors`` (no pickle) and ``meta.json``, built in a private temporary directory and
renamed into place, so concurrent writers leave one valid entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from condu_bench.atomic_io import atomic_directory
from condu_bench.errors import UserError


def image_tower(model: torch.nn.Module) -> torch.nn.Module:
    tower = getattr(model, "visual", None)
    if not isinstance(tower, torch.nn.Module):
        raise UserError(f"{type(model).__name__} has no image tower at .visual; a frozen-image-tower feature cache needs one")
    return tower


@torch.no_grad()
def tower_checksum(model: torch.nn.Module) -> tuple[float, ...]:
    """Per-tensor sums (float64) of the image tower's parameters and buffers: any update changes them."""
    tower = image_tower(model)
    tensors = [*tower.parameters(), *tower.buffers()]
    return tuple(float(t.detach().double().sum()) for t in tensors)


def check_frozen_image_tower(method: Any, model: torch.nn.Module, trainable: Iterable[torch.nn.Parameter]) -> None:
    """UserError if a method that declares a frozen image tower trains one of its parameters."""
    if not getattr(method, "frozen_image_tower", False):
        return
    tower = {id(p) for p in image_tower(model).parameters()}
    if any(id(p) in tower for p in trainable):
        raise UserError(f"method {method.name!r} declares frozen_image_tower = True but trains image-tower parameters; "
                        "drop the declaration or the parameters")


FORMAT_VERSION = 1


@torch.no_grad()
def tower_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the image tower's tensors (names, dtypes, shapes and bytes): equal only for identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(image_tower(model).state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}\0{flat.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Features per evaluated split, for the image-tower checksum they were computed with (the latest one only);
    with ``disk_dir``, splits whose key starts with ``"decoded"`` are also kept on disk for later runs."""

    def __init__(self, disk_dir: str | Path | None = None, context: str = "") -> None:
        self._features: dict[Any, tuple[tuple[float, ...], list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        self.computed = 0  # splits whose features were computed (a hit computes nothing)
        self.loaded = 0  # splits whose features were read from disk
        self.disk_dir = None if disk_dir is None else Path(disk_dir)
        self.context = context  # what else determines a feature's bits: device type, precision, batch size
        self._digests: dict[tuple[float, ...], str] = {}

    def batches(self, key: Any, model: torch.nn.Module,
                compute: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(features, labels)`` batches of split ``key``; ``compute()`` yields them when they are not cached."""
        checksum = tower_checksum(model)
        cached = self._features.get(key)
        if cached is not None and cached[0] == checksum:
            return cached[1]
        entry = self.disk_entry(key, model, checksum)
        batches = None if entry is None else read_entry(entry, _device_of(model))
        if batches is None:
            batches = list(compute())
            self.computed += 1
            if entry is not None:
                write_entry(entry, batches, {"split": str(key[1]), "context": self.context})
        else:
            self.loaded += 1
        self._features[key] = (checksum, batches)
        return batches

    def disk_entry(self, key: Any, model: torch.nn.Module, checksum: tuple[float, ...]) -> Path | None:
        """Where split ``key``'s features for these weights live on disk, or None (no disk, or a key that names images
        only within this process)."""
        if self.disk_dir is None or not (isinstance(key, tuple) and key and key[0] == "decoded"):
            return None
        if checksum not in self._digests:
            self._digests[checksum] = tower_digest(model)
        name = json.dumps([FORMAT_VERSION, str(key[1]), self._digests[checksum], self.context, torch.__version__])
        return self.disk_dir / hashlib.sha256(name.encode()).hexdigest()[:32]


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(image_tower(model).parameters()).device


def read_entry(entry: Path, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """The batches an entry holds, on ``device``; None when there is no complete entry."""
    from safetensors.torch import load_file

    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    tensors = load_file(str(entry / "features.safetensors"))
    features, labels = tensors["features"].to(device), tensors["labels"].to(device)
    sizes = meta["batch_sizes"]
    if sum(sizes) != len(features) or len(features) != len(labels):
        raise UserError(f"feature cache entry {entry} is inconsistent ({sum(sizes)} images listed, {len(features)} "
                        "stored); delete it and it is rebuilt")
    return list(zip(features.split(sizes), labels.split(sizes)))


def write_entry(entry: Path, batches: list[tuple[torch.Tensor, torch.Tensor]], info: dict[str, Any]) -> None:
    """Write ``batches`` as ``entry``, atomically; another process's finished entry is kept as it is."""
    from safetensors.torch import save_file

    if not batches:
        return
    with atomic_directory(entry, "meta.json") as staging:
        features = torch.cat([f.detach() for f, _ in batches]).to("cpu").contiguous()
        labels = torch.cat([l.detach() for _, l in batches]).to("cpu").contiguous()
        save_file({"features": features, "labels": labels}, str(staging / "features.safetensors"))
        meta = {"format": FORMAT_VERSION, "images": len(features), "batch_sizes": [len(f) for f, _ in batches], **info}
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))

"""Evaluation images decoded once: each evaluated split is decoded, resized and centre-cropped into a uint8 array on
disk, memory-mapped by every later evaluation of every method, seed and run that evaluates the same images.

An entry is keyed by what determines its pixels: the dataset's image list (files with their sizes and modification
times, or array rows), the geometric part of the eval transform (everything before ``ToTensor``), and the PIL and
torchvision versions. The tensor part (``ToTensor`` and ``Normalize``) is applied to each batch when it is read, with
the same arithmetic as the per-image transform, so predictions are identical to decoding the files.

An entry is a directory ``<key>/`` holding ``images.npy`` (N, H, W, 3), ``labels.npy`` and ``meta.json``; it is
built in a private temporary directory and renamed into place, so concurrent builders leave one valid entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from condu_bench.atomic_io import atomic_directory

FORMAT_VERSION = 1


def default_cache_root() -> Path:
    """``$CONDU_BENCH_CACHE/decoded`` (default ``~/.cache/condu-bench/decoded``)."""
    from condu_bench.synthetic.pretrain import default_cache_dir

    return default_cache_dir() / "decoded"


def decoded_cache_dir(eval_config: Any) -> Path | None:
    """Where a run's decoded evaluation images live (``eval.cache_dir``, default :func:`default_cache_root`), or None
    with ``eval.decoded_cache: false``."""
    if not eval_config.decoded_cache:
        return None
    return Path(eval_config.cache_dir).expanduser() if eval_config.cache_dir else default_cache_root()


def dataset_identity(dataset: Any, limit: int | None = None) -> str | None:
    """A digest of the images ``dataset`` holds (its first ``limit``), or None when it cannot name them.

    File lists name each file with its size and modification time (a re-extracted dataset is a new entry); image
    arrays are hashed with their pixels, rows and labels. Datasets generated in memory (the synthetic world) are already decoded and
    are not cached on disk.
    """
    from condu_bench.datasets.images import ArrayImageDataset, ImageListDataset

    n = len(dataset) if limit is None else min(limit, len(dataset))
    digest = hashlib.sha256()
    if isinstance(dataset, ImageListDataset):
        digest.update(f"files\0{dataset.root.resolve()}\0".encode())
        for rel, label in dataset.items[:n]:
            stat = (dataset.root / rel).stat()
            digest.update(f"{rel}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()
    if isinstance(dataset, ArrayImageDataset):
        # the pixels themselves (tens of MB: milliseconds), since two copies of a dataset share names and shapes
        digest.update(f"array\0{dataset.key_prefix}\0{tuple(np.shape(dataset.images))}\0".encode())
        digest.update(hashlib.sha256(np.ascontiguousarray(dataset.images).data).digest())
        digest.update(np.asarray(dataset.indices[:n], dtype=np.int64).tobytes())
        digest.update(np.asarray(dataset.targets[:n], dtype=np.int64).tobytes())
        return digest.hexdigest()
    return None


@dataclass
class SplitTransform:
    """An eval transform cut at ``ToTensor``: ``geometric`` maps PIL -> PIL, ``tensor_part`` normalises batches."""

    geometric: Any
    tensor_part: list[Any]
    fingerprint: str

    def to_model_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> what the whole transform gives, stacked: (B, 3, H, W) float."""
        images = pixels.permute(0, 3, 1, 2).contiguous().to(torch.get_default_dtype()).div_(255)
        for step in self.tensor_part:  # Normalize's own arithmetic (sub_ then div_), without its copy
            mean = torch.as_tensor(step.mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
            std = torch.as_tensor(step.std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
            images.sub_(mean).div_(std)
        return images


def _describe(step: Any) -> str:
    if callable(step) and hasattr(step, "__qualname__") and not hasattr(step, "forward"):
        return f"{getattr(step, '__module__', '')}.{step.__qualname__}"  # a function: its repr holds an address
    return repr(step)


def split_transform(transform: Any) -> SplitTransform | None:
    """``transform`` cut at its ``ToTensor``, or None when it is not a torchvision Compose of that shape."""
    import PIL
    import torchvision
    from torchvision import transforms as T

    steps = getattr(transform, "transforms", None)
    if not isinstance(transform, T.Compose) or steps is None:
        return None
    cut = next((i for i, step in enumerate(steps) if isinstance(step, T.ToTensor)), None)
    tail = [] if cut is None else steps[cut + 1 :]
    if cut is None or not all(isinstance(step, T.Normalize) for step in tail):
        return None
    described = [_describe(step) for step in steps[:cut]] + [f"PIL {PIL.__version__}", f"torchvision {torchvision.__version__}"]
    fingerprint = hashlib.sha256("\n".join(described).encode()).hexdigest()
    return SplitTransform(T.Compose(steps[:cut]), list(tail), fingerprint)


class DecodedImages:
    """One cache entry, memory-mapped: ``batches`` yields ``(model input, labels)`` as the full transform would."""

    def __init__(self, directory: Path, transform: SplitTransform):
        self.directory, self.transform = directory, transform
        self.pixels = np.load(directory / "images.npy", mmap_mode="r")
        self.labels = torch.from_numpy(np.load(directory / "labels.npy"))
        if len(self.pixels) != len(self.labels):
            raise ValueError(f"decoded-image cache entry {directory} is inconsistent; delete it to rebuild")

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches converted on ``device`` (uint8 crosses to it, a quarter of the float bytes); the arithmetic is
        the transform's, correctly rounded on every device, so the inputs are identical."""
        from concurrent.futures import ThreadPoolExecutor

        def read(start: int) -> np.ndarray:
            return np.array(self.pixels[start : start + batch_size])  # a writable copy; numpy releases the GIL

        starts = list(range(0, len(self), batch_size))
        with ThreadPoolExecutor(max_workers=1) as reader:  # the next batch is read while this one is computed
            pending = reader.submit(read, starts[0]) if starts else None
            for i, start in enumerate(starts):
                pixels = torch.from_numpy(pending.result())
                if i + 1 < len(starts):
                    pending = reader.submit(read, starts[i + 1])
                if device is not None:
                    pixels = pixels.to(device, non_blocking=True)
                yield self.transform.to_model_input(pixels), self.labels[start : start + batch_size]


class _GeometricOnly(torch.utils.data.Dataset):
    def __init__(self, dataset: Any, geometric: Any, n: int):
        self.dataset, self.geometric, self.n = dataset, geometric, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        pixels = np.asarray(self.geometric(image), dtype=np.uint8)
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"the eval transform's geometric steps gave an image of shape {pixels.shape}, not (H, W, 3)")
        return torch.from_numpy(pixels.copy()), label


def entry_key(identity: str, transform: SplitTransform) -> str:
    return hashlib.sha256(f"v{FORMAT_VERSION}\0{identity}\0{transform.fingerprint}".encode()).hexdigest()[:32]


def open_or_build(dataset: Any, transform: SplitTransform, identity: str, root: Path, *, name: str, limit: int | None = None,
                  num_workers: int = 0, batch_size: int = 64) -> DecodedImages:
    """The entry of ``dataset``'s first ``limit`` images under ``root``, decoding them once if it is not there."""
    root = Path(root)
    final = root / entry_key(identity, transform)
    if (final / "meta.json").is_file():
        return DecodedImages(final, transform)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError(f"dataset {name!r} has an empty test split")
    with atomic_directory(final, "meta.json") as staging:
        loader = torch.utils.data.DataLoader(_GeometricOnly(dataset, transform.geometric, n), batch_size=batch_size,
                                             num_workers=num_workers)
        pixels = labels = None
        written = 0
        for batch_pixels, batch_labels in loader:
            if pixels is None:
                pixels = np.lib.format.open_memmap(staging / "images.npy", mode="w+", dtype=np.uint8,
                                                   shape=(n, *batch_pixels.shape[1:]))
                labels = np.empty(n, dtype=np.int64)
            if tuple(batch_pixels.shape[1:]) != pixels.shape[1:]:
                raise ValueError(f"dataset {name!r}: the eval transform gave images of different sizes")
            pixels[written : written + len(batch_pixels)] = batch_pixels.numpy()
            labels[written : written + len(batch_labels)] = batch_labels.numpy()
            written += len(batch_pixels)
        pixels.flush()
        del pixels
        np.save(staging / "labels.npy", labels)
        meta = {"format": FORMAT_VERSION, "dataset": name, "images": n, "identity": identity,
                "transform": transform.fingerprint}
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
    return DecodedImages(final, transform)


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def cache_entries(root: Path) -> list[dict[str, Any]]:
    """Every complete entry under ``root``: its meta.json plus ``path`` and ``bytes`` on disk (unfinished builds are
    not listed)."""
    root = Path(root)
    if not root.is_dir():
        return []
    entries = []
    for meta in sorted(root.glob("*/meta.json")):
        data = json.loads(meta.read_text())
        entries.append({**data, "bytes": _size(meta.parent), "path": str(meta.parent)})
    return entries


def unfinished_builds(root: Path) -> list[Path]:
    """Staging directories of builds that never finished (a killed process leaves its own behind)."""
    root = Path(root)
    return sorted(p for p in root.glob(".*") if p.is_dir()) if root.is_dir() else []

"""Datasets that return ``(PIL RGB image, label)``: image files listed by path, or in-memory arrays (CIFAR, MNIST).

Both keep ``targets`` without decoding anything, give every item a stable ``key`` (a relative path or
``split[index]``) used by the few-shot cache, and make sub-datasets with optional relabelling
(few-shot draws, 80/20 splits, base/novel halves) through :meth:`subset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from condu_bench.errors import UserError


class CorruptImageError(UserError):
    """An image file that is missing, truncated or not an image; the message names the file."""


def open_rgb(path: Path) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() decodes the whole file, so truncation shows up here
    except FileNotFoundError as exc:
        raise CorruptImageError(f"image file {path} is missing ({exc.strerror})") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(
            f"cannot read image {path}: {exc} (re-extract the dataset archive, or set skip_corrupt=true to skip and "
            "report unreadable images)"
        ) from exc


class ImageListDataset:
    """A list of ``(path relative to root, label)``; ``__getitem__`` opens the file.

    An unreadable file raises :class:`CorruptImageError` naming it. ``drop_unreadable()`` returns a copy
    without unreadable files and records them in ``skipped`` (``(path, reason)`` pairs) for the runner to
    report; it decodes every image once, so it is opt-in (``skip_corrupt``).
    """

    def __init__(self, root: str | Path, items: Sequence[tuple[str, int]], skipped: list[tuple[str, str]] | None = None):
        self.root = Path(root)
        self.items = [(str(p), int(label)) for p, label in items]
        self.targets = [label for _, label in self.items]
        self.skipped: list[tuple[str, str]] = list(skipped or [])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        rel, label = self.items[index]
        return open_rgb(self.root / rel), label

    def path(self, index: int) -> Path:
        return self.root / self.items[index][0]

    def keys(self) -> list[str]:
        return [p for p, _ in self.items]

    def subset(self, indices: Sequence[int], label_map: dict[int, int] | None = None) -> ImageListDataset:
        items = [self.items[i] for i in indices]
        if label_map is not None:
            items = [(p, label_map[label]) for p, label in items]
        return ImageListDataset(self.root, items, self.skipped)

    def missing_files(self) -> list[int]:
        """Indices whose file does not exist (cheap: one stat per item)."""
        return [i for i, (rel, _) in enumerate(self.items) if not (self.root / rel).is_file()]

    def unreadable(self, threads: int = 8) -> list[tuple[int, str]]:
        """(index, reason) for every file that cannot be decoded. PIL releases the GIL while decoding."""

        def probe(index: int) -> tuple[int, str] | None:
            try:
                open_rgb(self.path(index))
            except CorruptImageError as exc:
                return index, str(exc)
            return None

        with ThreadPoolExecutor(max_workers=threads) as pool:
            return [r for r in pool.map(probe, range(len(self))) if r is not None]

    def drop_unreadable(self, threads: int = 8) -> ImageListDataset:
        bad = dict(self.unreadable(threads))
        keep = [i for i in range(len(self)) if i not in bad]
        out = self.subset(keep)
        out.skipped = self.skipped + [(str(self.path(i)), reason) for i, reason in sorted(bad.items())]
        return out


class ArrayImageDataset:
    """Images held in a uint8 array (N, H, W) or (N, H, W, C), e.g. CIFAR-100 pickles and MNIST idx files.

    ``indices`` select rows of ``images``; ``targets`` are aligned with ``indices`` (already relabelled for subsets).
    """

    def __init__(self, images: Any, targets: Sequence[int], key_prefix: str, indices: Sequence[int] | None = None):
        self.images, self.key_prefix = images, key_prefix
        self.indices = list(range(len(targets))) if indices is None else list(indices)
        self.targets = [int(t) for t in targets]
        if len(self.targets) != len(self.indices):
            raise ValueError("targets and indices differ in length")
        self.skipped: list[tuple[str, str]] = []  # arrays cannot be corrupt file by file

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        return Image.fromarray(self.images[self.indices[index]]).convert("RGB"), self.targets[index]

    def keys(self) -> list[str]:
        return [f"{self.key_prefix}[{i}]" for i in self.indices]

    def subset(self, indices: Sequence[int], label_map: dict[int, int] | None = None) -> ArrayImageDataset:
        targets = [self.targets[i] for i in indices]
        if label_map is not None:
            targets = [label_map[t] for t in targets]
        return ArrayImageDataset(self.images, targets, self.key_prefix, [self.indices[i] for i in indices])

    def drop_unreadable(self, threads: int = 8) -> ArrayImageDataset:
        return self

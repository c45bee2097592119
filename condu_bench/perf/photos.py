"""Photo-like JPEG files for timing decoding without a real dataset: smooth colour fields with texture and noise,
compressed as cameras do, so that decoding costs what a natural photo of the same size costs."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8: a random low-frequency colour field plus fine texture and sensor noise."""
    coarse = rng.uniform(0, 255, (4, 4, 3))
    ys, xs = np.linspace(0, 3, height), np.linspace(0, 3, width)
    y0, x0 = np.floor(ys).astype(int).clip(0, 2), np.floor(xs).astype(int).clip(0, 2)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    field = ((1 - fy) * (1 - fx) * coarse[y0][:, x0] + (1 - fy) * fx * coarse[y0][:, x0 + 1]
             + fy * (1 - fx) * coarse[y0 + 1][:, x0] + fy * fx * coarse[y0 + 1][:, x0 + 1])
    texture = 20 * np.sin(np.arange(width)[None, :, None] * rng.uniform(0.05, 0.5)
                          + np.arange(height)[:, None, None] * rng.uniform(0.05, 0.5))
    noise = rng.normal(0, 6, (height, width, 3))
    return np.clip(field + texture + noise, 0, 255).astype(np.uint8)


def write_photos(root: Path, n: int, size: tuple[int, int] = (500, 375), classes: int = 10, seed: int = 0,
                 quality: int = 90) -> list[tuple[str, int]]:
    """``n`` JPEGs of ``size`` (width, height) under ``root``/class_k/; ``(relative path, label)`` items. Existing
    files are kept (a second call costs nothing)."""
    from PIL import Image

    items = []
    for i in range(n):
        label = i % classes
        rel = f"class_{label}/{i:06d}.jpg"
        path = Path(root) / rel
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([seed, i])  # image i is the same whichever files already exist
            Image.fromarray(photo(rng, *size)).save(path, "JPEG", quality=quality)
        items.append((rel, label))
    return items

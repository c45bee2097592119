"""Photo-like JPEG files for timing decoding without a real dataset: smooth colour fields with texture and noise,
compressed as cameras do, so that decoding costs what a natural photo of the same size costs."""

from __future__ import annotations

from pathlib import Path

import numpy as np


PHOTO_VERSION = 2  # changes what every photo looks like: caches of generated photos carry it in their names
NOISE_TILE = 64  # sensor noise is drawn for one tile and repeated: JPEG's 8x8 blocks see noise all the same
NOISE_SIGMA = 16.0  # about 95 KB per 500x375 JPEG at quality 90, as natural photos of that size


def photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8: a random low-frequency colour field plus fine texture and sensor noise (~6 ms at
    500x375)."""
    from PIL import Image

    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    field = np.asarray(coarse.resize((width, height), Image.BILINEAR), dtype=np.float32)
    a, b = rng.uniform(0.05, 0.5, 2).astype(np.float32)
    x, y = np.arange(width, dtype=np.float32) * a, np.arange(height, dtype=np.float32) * b
    texture = 20 * (np.sin(y)[:, None] * np.cos(x)[None, :] + np.cos(y)[:, None] * np.sin(x)[None, :])  # sin(a x + b y)
    tile = rng.normal(0, NOISE_SIGMA, (NOISE_TILE, NOISE_TILE, 3)).astype(np.float32)
    noise = np.tile(tile, (-(-height // NOISE_TILE), -(-width // NOISE_TILE), 1))[:height, :width]
    return np.clip(field + texture[:, :, None] + noise, 0, 255).astype(np.uint8)


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

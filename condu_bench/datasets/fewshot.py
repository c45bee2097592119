"""K shots per class, drawn once per (dataset, layout, K, seed) and cached on disk so every method sees them.

The draw covers all classes (before any base/novel split): train gets K items per class, val
``min(K, 4)`` (CoOp's rule), a class with fewer items keeps them all. The random stream is
``random.Random("condu-fewshot|<dataset>|<layout>|<K>|<seed>")`` (string seeds are hashed with SHA-512 by
Python, so the draw is the same on every machine and run). Items are identified by their stable keys
(relative paths, or ``split[index]`` for array datasets).

A cached draw is verified when loaded: same dataset/layout/K/seed, the same listing fingerprint, and every
cached key present with the same label; otherwise :class:`FewShotCacheError` names the file to delete.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from condu_bench.atomic_io import atomic_write_json
from condu_bench.errors import UserError

FORMAT = 1
VAL_SHOTS_CAP = 4


class FewShotCacheError(UserError):
    """A cached few-shot draw that no longer matches the data on disk."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("CONDU_BENCH_FEWSHOT_CACHE", Path.home() / ".cache" / "condu-bench" / "fewshot"))


def cache_path(cache_dir: str | Path, dataset: str, layout: str, shots: int, seed: int) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in dataset)
    return Path(cache_dir) / f"{safe}_{layout}_{shots}shot_seed{seed}.json"


def fingerprint(dataset: Any) -> str:
    h = hashlib.sha256()
    for key, label in zip(dataset.keys(), dataset.targets):
        h.update(f"{key}\t{label}\n".encode())
    return h.hexdigest()


def draw_indices(targets: list[int], shots: int, rng: random.Random) -> list[int]:
    """``shots`` indices per label (all of them when a class has fewer), sorted."""
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(targets):
        by_label[label].append(i)
    chosen: list[int] = []
    for label in sorted(by_label):
        pool = by_label[label]
        chosen.extend(pool if len(pool) <= shots else rng.sample(pool, shots))
    return sorted(chosen)


def draw(splits: dict[str, Any], dataset: str, layout: str, shots: int, seed: int) -> dict[str, list[int]]:
    """The uncached draw: train K per class, val min(K, 4) per class where a val split exists."""
    if shots < 1:
        raise UserError(f"shots must be a positive number of images per class, not {shots}")
    rng = random.Random(f"condu-fewshot|{dataset}|{layout}|{shots}|{seed}")
    out = {"train": draw_indices(list(splits["train"].targets), shots, rng)}
    if "val" in splits:
        out["val"] = draw_indices(list(splits["val"].targets), min(shots, VAL_SHOTS_CAP), rng)
    return out


def fewshot_splits(splits: dict[str, Any], dataset: str, layout: str, shots: int, seed: int,
                   cache_dir: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The few-shot train (and val) datasets, and info to record (cache file, whether it was reused).

    With ``cache_dir`` None the default cache (``$CONDU_BENCH_FEWSHOT_CACHE`` or ``~/.cache/condu-bench/fewshot``)
    is used; pass ``False`` to neither read nor write a cache.
    """
    names = [s for s in ("train", "val") if s in splits]
    info: dict[str, Any] = {"shots": shots, "seed": seed}
    if cache_dir is False:
        indices = draw(splits, dataset, layout, shots, seed)
        return {s: splits[s].subset(indices[s]) for s in names}, info
    path = cache_path(cache_dir if cache_dir is not None else default_cache_dir(), dataset, layout, shots, seed)
    prints = {s: fingerprint(splits[s]) for s in names}
    if path.is_file():
        indices = _load_verified(path, splits, dataset, layout, shots, seed, prints)
        info.update(cache=str(path), cache_reused=True)
    else:
        indices = draw(splits, dataset, layout, shots, seed)
        record = {
            "format": FORMAT, "dataset": dataset, "layout": layout, "shots": shots, "seed": seed, "fingerprint": prints,
        }
        for s in names:
            keys, targets = splits[s].keys(), splits[s].targets
            record[s] = [[keys[i], targets[i]] for i in indices[s]]
        atomic_write_json(path, record, indent=0)  # a concurrent run reads either nothing or the whole draw
        info.update(cache=str(path), cache_reused=False)
    return {s: splits[s].subset(indices[s]) for s in names}, info


def _load_verified(path: Path, splits: dict[str, Any], dataset: str, layout: str, shots: int, seed: int,
                   prints: dict[str, str]) -> dict[str, list[int]]:
    def fail(why: str) -> FewShotCacheError:
        return FewShotCacheError(f"cached few-shot draw {path} does not match the data: {why}; delete the file to draw again "
                                 "(results made with the old draw are then not comparable)")

    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise fail(f"unreadable ({exc})") from exc
    expected = {"format": FORMAT, "dataset": dataset, "layout": layout, "shots": shots, "seed": seed}
    for key, value in expected.items():
        if record.get(key) != value:
            raise fail(f"{key} is {record.get(key)!r}, expected {value!r}")
    out = {}
    for split, fp in prints.items():
        if record.get("fingerprint", {}).get(split) != fp:
            raise fail(f"the {split} listing changed since the draw (images added, removed or relabelled)")
        position = {k: i for i, k in enumerate(splits[split].keys())}
        indices = []
        for key, label in record.get(split, []):
            i = position.get(key)
            if i is None or splits[split].targets[i] != label:
                raise fail(f"{split} entry {key!r} (label {label}) is not in the listing")
            indices.append(i)
        out[split] = indices
    return out

"""K shots per class, drawn once per (dataset, layout, draw, K, seed) and cached on disk so every method sees them.

Two draws (``fewshot_draw``), both over all classes (before any base/novel split): train gets K items per class,
val ``min(K, 4)`` (CoOp's rule), a class with fewer items keeps them all.

- ``dassl``: CoOp's files exactly. Dassl's ``generate_fewshot_dataset`` (``repeat=False``, as CoOp's datasets call it)
  after CoOp's ``train.py`` seeded Python's global ``random`` with the run seed (``set_random_seed``): items grouped
  by label in first-appearance order of the listing (``split_dataset_by_label``'s defaultdict), then per label
  ``random.sample(items, K)`` when the label has at least K items, else all of them (no draw). Train first, then val
  continuing the same stream. ``random.Random(seed)`` gives the global generator's sequence. Indices keep Dassl's
  order (label by label, in sampled order), i.e. the order of the lists in ``shot_K-seed_S.pkl``.
- ``condu``: the harness's own draw (labels in sorted order, a class with exactly K items kept without a draw, indices
  sorted) from ``random.Random("condu-fewshot|<dataset>|<layout>|<K>|<seed>")`` (string seeds are hashed with
  SHA-512 by Python, so the draw is the same on every machine and run).

Items are identified by their stable keys (relative paths, or ``split[index]`` for array datasets).
A cached draw is verified when loaded: same dataset/layout/draw/K/seed, the same listing fingerprint, and every
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
DRAWS = ("dassl", "condu")


class FewShotCacheError(UserError):
    """A cached few-shot draw that no longer matches the data on disk."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("CONDU_BENCH_FEWSHOT_CACHE", Path.home() / ".cache" / "condu-bench" / "fewshot"))


def cache_path(cache_dir: str | Path, dataset: str, layout: str, shots: int, seed: int, draw_name: str = "condu") -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in dataset)
    # condu keeps the name it had before there was a choice, so existing caches stay valid
    which = "" if draw_name == "condu" else f"{draw_name}_"
    return Path(cache_dir) / f"{safe}_{layout}_{which}{shots}shot_seed{seed}.json"


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


def dassl_indices(targets: list[int], shots: int, rng: random.Random) -> list[int]:
    """Dassl's ``generate_fewshot_dataset(items, num_shots=shots)`` as indices, in Dassl's output order."""
    by_label: dict[int, list[int]] = defaultdict(list)  # insertion order: first appearance, as split_dataset_by_label
    for i, label in enumerate(targets):
        by_label[label].append(i)
    chosen: list[int] = []
    for pool in by_label.values():
        # >= (not >): a class with exactly K items is still passed through random.sample, which draws and reorders
        chosen.extend(rng.sample(pool, shots) if len(pool) >= shots else pool)
    return chosen


def check_draw(draw_name: str) -> str:
    if draw_name not in DRAWS:
        raise UserError(f"scenario.options.fewshot_draw must be one of {', '.join(DRAWS)} (dassl: CoOp/Dassl's "
                        f"shot_K-seed_S.pkl draws; condu: the harness's own), not {draw_name!r}")
    return draw_name


def draw(splits: dict[str, Any], dataset: str, layout: str, shots: int, seed: int,
         draw_name: str = "condu") -> dict[str, list[int]]:
    """The uncached draw: train K per class, val min(K, 4) per class where a val split exists."""
    if shots < 1:
        raise UserError(f"shots must be a positive number of images per class, not {shots}")
    if check_draw(draw_name) == "dassl":
        rng, pick = random.Random(seed), dassl_indices
    else:
        rng, pick = random.Random(f"condu-fewshot|{dataset}|{layout}|{shots}|{seed}"), draw_indices
    out = {"train": pick(list(splits["train"].targets), shots, rng)}
    if "val" in splits:  # continues the train draw's stream
        out["val"] = pick(list(splits["val"].targets), min(shots, VAL_SHOTS_CAP), rng)
    return out


def fewshot_splits(splits: dict[str, Any], dataset: str, layout: str, shots: int, seed: int,
                   cache_dir: str | Path | None = None, draw_name: str = "condu") -> tuple[dict[str, Any], dict[str, Any]]:
    """The few-shot train (and val) datasets, and info to record (draw, cache file, whether it was reused).

    With ``cache_dir`` None the default cache (``$CONDU_BENCH_FEWSHOT_CACHE`` or ``~/.cache/condu-bench/fewshot``)
    is used; pass ``False`` to neither read nor write a cache.
    """
    names = [s for s in ("train", "val") if s in splits]
    info: dict[str, Any] = {"shots": shots, "seed": seed, "fewshot_draw": check_draw(draw_name)}
    if cache_dir is False:
        indices = draw(splits, dataset, layout, shots, seed, draw_name)
        return {s: splits[s].subset(indices[s]) for s in names}, info
    path = cache_path(cache_dir if cache_dir is not None else default_cache_dir(), dataset, layout, shots, seed, draw_name)
    prints = {s: fingerprint(splits[s]) for s in names}
    if path.is_file():
        indices = _load_verified(path, splits, dataset, layout, shots, seed, prints, draw_name)
        info.update(cache=str(path), cache_reused=True)
    else:
        indices = draw(splits, dataset, layout, shots, seed, draw_name)
        record = {
            "format": FORMAT, "dataset": dataset, "layout": layout, "draw": draw_name, "shots": shots, "seed": seed,
            "fingerprint": prints,
        }
        for s in names:
            keys, targets = splits[s].keys(), splits[s].targets
            record[s] = [[keys[i], targets[i]] for i in indices[s]]
        atomic_write_json(path, record, indent=0)  # a concurrent run reads either nothing or the whole draw
        info.update(cache=str(path), cache_reused=False)
    return {s: splits[s].subset(indices[s]) for s in names}, info


def _load_verified(path: Path, splits: dict[str, Any], dataset: str, layout: str, shots: int, seed: int,
                   prints: dict[str, str], draw_name: str) -> dict[str, list[int]]:
    def fail(why: str) -> FewShotCacheError:
        return FewShotCacheError(f"cached few-shot draw {path} does not match the data: {why}; delete the file to draw again "
                                 "(results made with the old draw are then not comparable)")

    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise fail(f"unreadable ({exc})") from exc
    expected = {"format": FORMAT, "dataset": dataset, "layout": layout, "draw": draw_name, "shots": shots, "seed": seed}
    record.setdefault("draw", "condu")  # written before there was a choice
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

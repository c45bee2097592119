"""Import CoOp's own few-shot draws: ``<dataset folder>/split_fewshot/shot_K-seed_S.pkl``.

CoOp's datasets (``datasets/oxford_pets.py`` and the others) pickle ``{"train": [Datum, ...], "val": [Datum, ...]}``
(ImageNet: ``train`` only) with ``pickle.HIGHEST_PROTOCOL``; a ``Datum`` (``dassl.data.datasets.base_dataset``)
holds ``_impath`` (an absolute path on the machine that drew it), ``_label``, ``_domain`` and ``_classname``.

A pickle can run any code when loaded, so these files are read by :class:`DatumUnpickler`, which resolves only the
``Datum`` class (to a plain stand-in) and a few harmless builtins, and refuses every other global before anything is
called. Imported items are matched to the dataset's listing by relative path (the longest tail of ``impath`` that is
a key of the split) and must carry the listing's label.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

from condu_bench.errors import UserError

DATUM = ("dassl.data.datasets.base_dataset", "Datum")
SAFE_BUILTINS = frozenset({"list", "dict", "tuple", "set", "frozenset", "str", "int", "float", "bool"})


class FewShotFileError(UserError):
    """A CoOp few-shot file that is missing, unsafe or does not match the dataset."""


class Datum:
    """Stand-in for Dassl's ``Datum``: its pickled state, checked, and nothing else (no code of the original runs)."""

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, dict) and isinstance(state.get("_impath"), str) and isinstance(state.get("_label"), int)):
            raise pickle.UnpicklingError(f"a Datum without a string _impath and an integer _label: {state!r:.200}")
        self.impath, self.label = state["_impath"], state["_label"]
        self.classname = state.get("_classname", "")


class DatumUnpickler(pickle.Unpickler):
    """Resolves Dassl's ``Datum`` (to :class:`Datum`) and a few builtins; any other global is refused unresolved."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == DATUM:
            return Datum
        if module == "builtins" and name in SAFE_BUILTINS:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CoOp few-shot file holds only Dassl Datum "
                                     "objects in lists and a dict")


def fewshot_file(base: str | Path, folder: Path, root: Path, shots: int, seed: int) -> Path:
    """Where CoOp keeps the draw of the dataset in ``folder`` (under data root ``root``), below ``base`` instead."""
    return Path(base).expanduser() / Path(folder).relative_to(root) / "split_fewshot" / f"shot_{shots}-seed_{seed}.pkl"


def read_fewshot_file(path: Path) -> tuple[dict[str, list[Datum]], str]:
    """The file's ``{"train": [...], "val": [...]}`` and its SHA-256."""
    if not path.is_file():
        raise FewShotFileError(f"CoOp few-shot file {path} does not exist: copy CoOp's split_fewshot/shot_K-seed_S.pkl "
                               "there (fewshot_files mirrors the data root), or drop fewshot_files to draw the shots")
    data = path.read_bytes()
    try:
        loaded = DatumUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError) as exc:
        raise FewShotFileError(f"{path} is not a CoOp few-shot file that can be loaded safely: {exc}") from exc
    splits = ("train", "val")
    if not isinstance(loaded, dict) or "train" not in loaded or set(loaded) - set(splits):
        keys = sorted(loaded) if isinstance(loaded, dict) else type(loaded).__name__
        raise FewShotFileError(f"{path}: expected a dict with 'train' (and 'val') lists of Datum, found {keys}")
    for split, items in loaded.items():
        if not isinstance(items, list) or not all(isinstance(d, Datum) for d in items):
            raise FewShotFileError(f"{path}: '{split}' must be a list of Datum objects")
    return loaded, hashlib.sha256(data).hexdigest()


def match_items(items: list[Datum], dataset: Any, path: Path, split: str) -> list[int]:
    """Indices into ``dataset`` (in the file's order) of the imported items, matched by relative path and label."""
    keys = dataset.keys()
    position = {k: i for i, k in enumerate(keys)}
    depths = sorted({k.count("/") + 1 for k in keys}, reverse=True)
    out, problems = [], []
    for item in items:
        parts = item.impath.replace("\\", "/").split("/")
        index = next((position[k] for k in ("/".join(parts[-d:]) for d in depths) if k in position), None)
        if index is None:
            problems.append(f"{item.impath} is not in the {split} split")
        elif dataset.targets[index] != item.label:
            problems.append(f"{item.impath} has label {item.label} in the file, {dataset.targets[index]} in the split")
        else:
            out.append(index)
    if problems:
        raise FewShotFileError(f"{path}: {len(problems)} of {len(items)} {split} items do not match the dataset on disk, "
                               f"e.g. {'; '.join(problems[:3])} (was the file drawn from another copy or split file?)")
    return out


def imported_splits(splits: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The few-shot train (and val) datasets from a CoOp file, and info to record (file, its SHA-256)."""
    loaded, digest = read_fewshot_file(path)
    wanted = [s for s in ("train", "val") if s in splits]
    if sorted(loaded) != sorted(wanted):
        raise FewShotFileError(f"{path} holds {sorted(loaded)}, the dataset's listing has {wanted}: "
                               "the file belongs to another dataset")
    out = {s: splits[s].subset(match_items(loaded[s], splits[s], path, s)) for s in wanted}
    info = {"fewshot_draw": "imported", "fewshot_file": str(path), "fewshot_file_sha256": digest}
    return out, info

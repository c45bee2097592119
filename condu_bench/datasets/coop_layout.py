"""Readers for the ``coop`` layout: CoOp/Dassl's folders under one data root.

Nine datasets are read from ``split_zhou_<Name>.json`` (``{"train"|"val"|"test": [[rel_path, label, classname]]}``,
paths relative to the dataset's image folder); FGVCAircraft from ``images_variant_{train,val,test}.txt``;
ImageNet and its variants from WordNet-id folders named through ``classnames.txt``. Class names are the
files' (CoOp passes them to the text encoder with ``'_' -> ' '``, so we do the same).
"""

from __future__ import annotations

import json
from pathlib import Path

from condu_bench.datasets.images import ImageListDataset
from condu_bench.datasets.loading import list_dirs, list_images, read_aircraft_variants, read_lines
from condu_bench.datasets.spec import DataLayoutError, DatasetSpec, LayoutSpec, Listing


def _space(name: str) -> str:
    return name.replace("_", " ")


def read_split_zhou(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    path = folder / lay.options["split_file"]
    image_dir = folder / lay.options["image_dir"]
    try:
        data = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataLayoutError(f"{spec.name}: {path} is not valid JSON: {exc}", path=path) from exc
    if not isinstance(data, dict) or not all(k in data for k in ("train", "val", "test")):
        raise DataLayoutError(f"{spec.name}: {path} must hold a dict with 'train', 'val' and 'test' lists", path=path)
    name_of: dict[int, str] = {}
    label_of: dict[str, int] = {}
    problems: list[str] = []
    splits = {}
    for split in ("train", "val", "test"):
        items = []
        for entry in data[split]:
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[1], int)):
                problems.append(f"{split}: malformed entry {entry!r}")
                continue
            rel, label, cname = entry
            if name_of.setdefault(label, cname) != cname:
                problems.append(f"{split}: label {label} is {cname!r} here and {name_of[label]!r} elsewhere ({rel})")
            if label_of.setdefault(cname, label) != label:
                problems.append(f"{split}: class {cname!r} has label {label} here and {label_of[cname]} elsewhere ({rel})")
            items.append((rel, label))
        splits[split] = ImageListDataset(image_dir, items)
    if problems:
        raise DataLayoutError(f"{spec.name}: {path} has inconsistent labels ({len(problems)} entries), e.g. {'; '.join(problems[:3])}",
                              path=path, problems=problems[:5])
    n = max(name_of) + 1 if name_of else 0
    gaps = [i for i in range(n) if i not in name_of]
    if gaps or (name_of and min(name_of) < 0):
        raise DataLayoutError(f"{spec.name}: {path}: labels must be 0..{n - 1} without gaps (no entry for {gaps[:5]}, "
                              f"lowest {min(name_of)})", path=path)
    files = {split: str(path) for split in splits}
    return Listing(spec.name, "coop", [_space(name_of[i]) for i in range(n)], splits, folder, lay.split, files=files)


def read_aircraft(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    # CoOp FGVCAircraft: classnames = variants.txt; split lines "<image id> <variant with spaces>".
    classes, splits, files = read_aircraft_variants(spec, folder, ("train", "val", "test"))
    return Listing(spec.name, "coop", [_space(c) for c in classes], splits, folder, lay.split, files=files)


def read_classnames_txt(spec: DatasetSpec, folder: Path, root: Path) -> tuple[list[str], dict[str, str], Path]:
    """``classnames.txt`` ("n01440764 tench" per line) from the folder or, failing that, ``imagenet/``."""
    for path in (folder / "classnames.txt", root / "imagenet" / "classnames.txt"):
        if path.is_file():
            mapping = {}
            for line in read_lines(path):
                wnid, _, name = line.partition(" ")
                mapping[wnid] = name.strip()
            return sorted(mapping), mapping, path
    raise DataLayoutError(
        f"{spec.name}: missing {folder / 'classnames.txt'} — copy classnames.txt (CoOp's ImageNet instructions, "
        f"https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md) into {folder} or {root / 'imagenet'}",
        kind="missing", path=folder / "classnames.txt",
    )


def _wnid_folders(spec: DatasetSpec, images: Path, wnids: list[str], mapping_path: Path) -> list[tuple[str, int]]:
    index = {w: i for i, w in enumerate(wnids)}
    folders = list_dirs(images)
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise DataLayoutError(f"{spec.name}: {images} has class folders missing from {mapping_path}, e.g. {', '.join(unknown[:5])}",
                              path=images, problems=unknown[:5])
    return [(f"{w}/{f}", index[w]) for w in folders for f in list_images(images / w)]


def read_imagenet(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    # Label = position of the WordNet id in sorted order (= ImageFolder / CoOp order when every folder exists).
    wnids, mapping, path = read_classnames_txt(spec, folder, root)
    splits = {
        "train": ImageListDataset(folder / "images" / "train", _wnid_folders(spec, folder / "images" / "train", wnids, path)),
        "test": ImageListDataset(folder / "images" / "val", _wnid_folders(spec, folder / "images" / "val", wnids, path)),
    }
    empty = [w for w in wnids if not (folder / "images" / "train" / w).is_dir()]
    if empty and len(wnids) == lay.num_classes:
        raise DataLayoutError(f"{spec.name}: {len(empty)} of {len(wnids)} class folders missing in {folder / 'images' / 'train'}, "
                              f"e.g. {', '.join(empty[:5])}", path=folder / "images" / "train", problems=empty[:5])
    return Listing(spec.name, "coop", [mapping[w] for w in wnids], splits, folder, lay.split,
                   files={"train": str(folder / "images" / "train"), "test": str(folder / "images" / "val")})


def read_imagenet_v2(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    # ImageNetV2 folders are the ImageNet label numbers 0..999.
    wnids, mapping, path = read_classnames_txt(spec, folder, root)
    images = folder / lay.options["image_dir"]
    items, bad = [], []
    for name in list_dirs(images):
        if name.isdigit() and int(name) < len(wnids):
            items.extend((f"{name}/{f}", int(name)) for f in list_images(images / name))
        else:
            bad.append(name)
    if bad:
        raise DataLayoutError(f"{spec.name}: {images} has folders that are not labels 0..{len(wnids) - 1}: {', '.join(bad[:5])}",
                              path=images, problems=bad[:5])
    return Listing(spec.name, "coop", [mapping[w] for w in wnids], {"test": ImageListDataset(images, items)}, folder, lay.split,
                   files={"test": str(images)})


def read_imagenet_folders(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    """ImageNet-Sketch (1000 folders) and ImageNet-A / -R (200): labels are positions among the folders present.

    For A and R the folders must be exactly the ImageNet classes the registry lists (``imagenet_indices``,
    ZSCL's CLASS_SUBLIST), so that a partial copy is not silently scored on fewer classes.
    """
    wnids, mapping, path = read_classnames_txt(spec, folder, root)
    images = folder / lay.options["image_dir"]
    present = list_dirs(images)
    unknown = [f for f in present if f not in mapping]
    if unknown:
        raise DataLayoutError(f"{spec.name}: {images} has class folders missing from {path}, e.g. {', '.join(unknown[:5])}",
                              path=images, problems=unknown[:5])
    expected = spec.data.get("imagenet_indices")
    if expected is not None and len(wnids) == 1000 and len(present) == len(expected):
        want = [wnids[i] for i in expected]
        if present != want:
            odd = sorted(set(present) ^ set(want))
            raise DataLayoutError(f"{spec.name}: {images} holds other classes than the registry's {len(expected)} "
                                  f"ImageNet classes, e.g. {', '.join(odd[:5])}", path=images, problems=odd[:5])
    items = [(f"{w}/{f}", label) for label, w in enumerate(present) for f in list_images(images / w)]
    return Listing(spec.name, "coop", [mapping[w] for w in present], {"test": ImageListDataset(images, items)}, folder,
                   lay.split, files={"test": str(images)})

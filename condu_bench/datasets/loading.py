"""Find a dataset under a data root, run its layout reader, and check what came back.

Shared by the scenario builders and ``data check``: a missing folder or file raises
:class:`DataLayoutError` (kind ``missing``) naming the exact path and the official archive that provides it;
a listing whose class count or labels disagree with the registry raises kind ``malformed``.
"""

from __future__ import annotations

from pathlib import Path

from condu_bench.datasets.spec import DataLayoutError, DatasetSpec, LayoutSpec, Listing

ZSCL_SPLIT_SEED = 42


def _present(folder: Path, required: str) -> bool:
    return any((folder / alt).exists() for alt in required.split("|"))


def resolve_folder(spec: DatasetSpec, lay: LayoutSpec, root: Path) -> Path:
    """The first candidate folder holding every required path; otherwise a ``missing`` error for the best candidate."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"{spec.name}: data root {root} does not exist", kind="missing", path=root)
    best: tuple[int, Path, list[str]] | None = None
    for rel in lay.dirs:
        folder = root / rel
        absent = [r for r in lay.required if not _present(folder, r)] if folder.is_dir() else list(lay.required)
        if not absent:
            return folder
        score = len(lay.required) - len(absent) + (1 if folder.is_dir() else 0)
        if best is None or score > best[0]:
            best = (score, folder, absent)
    assert best is not None
    _, folder, absent = best
    first = absent[0].split("|")[0]
    target = folder if first == "." else folder / first
    more = f" (also missing: {', '.join(absent[1:4])}{' ...' if len(absent) > 4 else ''})" if len(absent) > 1 and folder.is_dir() else ""
    raise DataLayoutError(
        f"{spec.name}: missing {target}{more} — {lay.archive.format(root=root)}", kind="missing", path=target
    )


def load_listing(spec: DatasetSpec, root: str | Path, layout: str) -> Listing:
    from condu_bench.registry import import_target

    lay = spec.layout(layout)
    folder = resolve_folder(spec, lay, Path(root))
    reader = import_target(lay.reader)
    listing = reader(spec, lay, folder, Path(root))
    validate_listing(spec, lay, listing)
    return listing


def validate_listing(spec: DatasetSpec, lay: LayoutSpec, listing: Listing) -> None:
    n = len(listing.classnames)
    if n != lay.num_classes:
        raise DataLayoutError(
            f"{spec.name}: {listing.folder} has {n} classes, the registry expects {lay.num_classes} "
            f"({lay.split}); the folder holds another version or an incomplete copy of the dataset",
            path=listing.folder,
        )
    for split, ds in listing.splits.items():
        bad = [(i, t) for i, t in enumerate(ds.targets) if not 0 <= t < n]
        if bad:
            keys = ds.keys()
            examples = [f"{keys[i]} (label {t})" for i, t in bad[:5]]
            raise DataLayoutError(
                f"{spec.name}: {len(bad)} {split} labels out of range 0..{n - 1} in {listing.files.get(split, listing.folder)}, "
                f"e.g. {', '.join(examples)}",
                path=listing.files.get(split, listing.folder), problems=examples,
            )
    # Where the reader derives names from the files the way ZSCL does, the registry's list should agree; a
    # difference is recorded, not fatal (the files are what the reference code would have used).
    reference = spec.classnames
    if lay.options.get("compare_names") and reference is not None and len(reference) == n:
        differ = [f"{a!r} (registry {b!r})" for a, b in zip(listing.classnames, reference) if a != b]
        if differ:
            listing.notes.append(f"{len(differ)} class names on disk differ from the registry's list, e.g. {', '.join(differ[:3])}")


def random_split_80_20(n: int, seed: int = ZSCL_SPLIT_SEED) -> tuple[list[int], list[int]]:
    """ZSCL's split of datasets without an official one (Caltech101, EuroSAT, SUN397).

    ZSCL's ``split_dataset`` calls ``torch.utils.data.random_split(dataset, [int(0.8 * n), n - int(0.8 * n)],
    generator=torch.Generator().manual_seed(42))``; random_split takes ``randperm(n, generator)`` and cuts it
    at ``n_train``. We do the same so the indices are identical, in the same (permuted) order.
    """
    import torch

    n_train = int(0.8 * n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return perm[:n_train], perm[n_train:]


def read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def read_aircraft_variants(spec: DatasetSpec, folder: Path, splits: tuple[str, ...]) -> tuple[list[str], dict, dict[str, str]]:
    """FGVC-Aircraft's own files, read the same way in both layouts: ``(variants, {split: dataset}, {split: file})``.

    Classes are ``variants.txt`` in file order; ``images_variant_<split>.txt`` lines are ``"<image id> <variant>"``.
    """
    from condu_bench.datasets.images import ImageListDataset

    classes = read_lines(folder / "variants.txt")
    index = {c: i for i, c in enumerate(classes)}
    datasets, files = {}, {}
    for split in splits:
        path = folder / f"images_variant_{split}.txt"
        items, unknown = [], []
        for line in read_lines(path):
            image, _, variant = line.partition(" ")
            if variant in index:
                items.append((f"{image}.jpg", index[variant]))
            else:
                unknown.append(repr(line))
        if unknown:
            raise DataLayoutError(f"{spec.name}: {path} names {len(unknown)} variants missing from variants.txt, e.g. "
                                  f"{', '.join(unknown[:5])}", path=path, problems=unknown[:5])
        datasets[split], files[split] = ImageListDataset(folder / "images", items), str(path)
    return classes, datasets, files


def is_image(name: str) -> bool:
    return name.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"))


def list_images(folder: Path) -> list[str]:
    """Image file names in a folder, sorted (os.scandir order depends on the file system)."""
    return sorted(e.name for e in _scandir(folder) if e.is_file() and is_image(e.name))


def list_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in _scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _scandir(folder: Path):
    import os

    with os.scandir(folder) as it:
        return list(it)

"""Readers for the ``zscl`` layout: the torchvision-style folders the ZSCL / ConDU code loads.

Each reader lists the images of one dataset the way torchvision's class does (same files, same label order,
same class names after ZSCL's ``'_' -> ' '``), without decoding anything and without torchvision.
Official train/test splits where the dataset has them; Caltech101, EuroSAT and SUN397 get ZSCL's seeded
80/20 split (:func:`random_split_80_20`) over a sorted file list, so the split is the same on every machine
(torchvision's SUN397 uses ``rglob`` order, which depends on the file system: we sort instead).
"""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

from condu_bench.datasets.images import ArrayImageDataset, ImageListDataset
from condu_bench.datasets.loading import list_dirs, list_images, random_split_80_20, read_aircraft_variants, read_lines
from condu_bench.datasets.spec import DataLayoutError, DatasetSpec, LayoutSpec, Listing


def _space(name: str) -> str:
    return name.replace("_", " ")


def _listing(spec: DatasetSpec, lay: LayoutSpec, folder: Path, classnames: list[str], splits: dict,
             files: dict[str, str] | None = None) -> Listing:
    return Listing(spec.name, "zscl", classnames, splits, folder, lay.split, files=files or {})


def _random_split(spec, lay, folder, root_dir: Path, items: list[tuple[str, int]], classnames: list[str]) -> Listing:
    full = ImageListDataset(root_dir, items)
    train_idx, test_idx = random_split_80_20(len(full))
    return _listing(spec, lay, folder, classnames, {"train": full.subset(train_idx), "test": full.subset(test_idx)})


def _names(spec: DatasetSpec, derived: list[str], where: Path) -> list[str]:
    """ZSCL hard-codes some lists (Caltech101, EuroSAT, Flowers, MNIST): use them once the count on disk agrees."""
    reference = spec.classnames
    if reference is None:
        return derived
    if len(reference) != len(derived):
        raise DataLayoutError(f"{spec.name}: {where} has {len(derived)} classes, the registry expects {len(reference)}", path=where)
    return reference


def _unknown(spec: DatasetSpec, path: Path, unknown: list[str]) -> DataLayoutError:
    return DataLayoutError(
        f"{spec.name}: {path} names {len(unknown)} unknown classes, e.g. {', '.join(unknown[:5])}", path=path, problems=unknown[:5]
    )


def read_aircraft(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    # torchvision FGVCAircraft(annotation_level="variant"): classes = data/variants.txt; ZSCL trains on "train".
    classes, splits, files = read_aircraft_variants(spec, folder / "data", ("train", "test"))
    return _listing(spec, lay, folder, [_space(c) for c in classes], splits, files)


def read_caltech101(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    # torchvision Caltech101: sorted category folders without BACKGROUND_Google (101 classes, Faces_easy kept),
    # images in file order per category.
    images = folder / "101_ObjectCategories"
    categories = [c for c in list_dirs(images) if c != "BACKGROUND_Google"]
    items = [(f"{c}/{f}", label) for label, c in enumerate(categories) for f in list_images(images / c)]
    return _random_split(spec, lay, folder, images, items, _names(spec, categories, images))


def read_eurosat(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    # torchvision EuroSAT is an ImageFolder over 2750/: sorted class folders, sorted files.
    images = folder / "2750"
    classes = list_dirs(images)
    items = [(f"{c}/{f}", label) for label, c in enumerate(classes) for f in list_images(images / c)]
    return _random_split(spec, lay, folder, images, items, _names(spec, classes, images))


def read_sun397(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    # torchvision SUN397: classes = ClassName.txt lines minus the "/a/" prefix; label of sun_*.jpg = its folder path.
    classes = [line[3:].strip() for line in read_lines(folder / "ClassName.txt")]
    index = {c: i for i, c in enumerate(classes)}
    items, unknown = [], []
    for path in sorted(p.relative_to(folder).as_posix() for p in folder.rglob("sun_*.jpg")):
        cls = "/".join(path.split("/")[1:-1])
        if cls in index:
            items.append((path, index[cls]))
        else:
            unknown.append(path)
    if unknown:
        raise _unknown(spec, folder, unknown)
    return _random_split(spec, lay, folder, folder, items, [_space(c) for c in classes])


def read_dtd(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    # torchvision DTD(partition=1): classes = sorted images/ folders; labels/train1.txt and test1.txt ("cls/file.jpg").
    classes = list_dirs(folder / "images")
    index = {c: i for i, c in enumerate(classes)}
    splits, files = {}, {}
    for split in ("train", "test"):
        path = folder / "labels" / f"{split}1.txt"
        lines = read_lines(path)
        unknown = [line for line in lines if line.split("/")[0] not in index]
        if unknown:
            raise _unknown(spec, path, unknown)
        splits[split] = ImageListDataset(folder / "images", [(line, index[line.split("/")[0]]) for line in lines])
        files[split] = str(path)
    return _listing(spec, lay, folder, [_space(c) for c in classes], splits, files)


def read_flowers102(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    # torchvision Flowers102: imagelabels.mat (1-based labels by image id), setid.mat trnid / tstid.
    from scipy.io import loadmat

    labels = loadmat(folder / "imagelabels.mat", squeeze_me=True)["labels"].reshape(-1).tolist()
    setid = loadmat(folder / "setid.mat", squeeze_me=True)
    splits = {}
    for split, key in (("train", "trnid"), ("test", "tstid")):
        ids = setid[key].reshape(-1).tolist()
        bad = [i for i in ids if not 1 <= i <= len(labels)]
        if bad:
            raise DataLayoutError(f"{spec.name}: setid.mat {key} names image ids without a label in imagelabels.mat, e.g. {bad[:5]}",
                                  path=folder / "setid.mat", problems=[str(b) for b in bad[:5]])
        splits[split] = ImageListDataset(folder / "jpg", [(f"image_{i:05d}.jpg", int(labels[i - 1]) - 1) for i in ids])
    n = max(labels) if labels else 0
    return _listing(spec, lay, folder, _names(spec, [str(i) for i in range(1, n + 1)], folder / "imagelabels.mat"), splits,
                    {"train": str(folder / "setid.mat"), "test": str(folder / "setid.mat")})


def read_food101(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    # torchvision Food101: meta/{split}.json = {class: ["class/id", ...]}, classes = sorted keys.
    splits, files, classes = {}, {}, None
    for split in ("train", "test"):
        path = folder / "meta" / f"{split}.json"
        meta = json.loads(path.read_text("utf-8"))
        names = sorted(meta)
        if classes is None:
            classes = names
        elif names != classes:
            raise DataLayoutError(f"{spec.name}: {path} lists other classes than meta/train.json", path=path)
        items = [(f"{entry}.jpg", label) for label, c in enumerate(names) for entry in meta[c]]
        splits[split], files[split] = ImageListDataset(folder / "images", items), str(path)
    return _listing(spec, lay, folder, [_space(c) for c in classes or []], splits, files)


def read_oxford_pets(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    # torchvision OxfordIIITPet: annotations/{trainval,test}.txt lines "Image_id CLASS-ID SPECIES BREED-ID",
    # class name = image id without its number, title-cased words.
    splits, files, names = {}, {}, {}
    for split, fname in (("train", "trainval.txt"), ("test", "test.txt")):
        path = folder / "annotations" / fname
        items = []
        for line in read_lines(path):
            if line.startswith("#"):
                continue
            image_id, label = line.split()[:2]
            if not 1 <= int(label) <= lay.num_classes:
                raise DataLayoutError(f"{spec.name}: label {label} out of range 1..{lay.num_classes} in {path}: {line!r}",
                                      path=path, problems=[line])
            items.append((f"{image_id}.jpg", int(label) - 1))
            name = " ".join(part.title() for part in image_id.rsplit("_", 1)[0].split("_"))
            if names.setdefault(int(label) - 1, name) != name:
                raise DataLayoutError(f"{spec.name}: {path}: label {label} is used for {names[int(label) - 1]!r} and {name!r}",
                                      path=path, problems=[line])
        splits[split], files[split] = ImageListDataset(folder / "images", items), str(path)
    n = max(names) + 1 if names else 0
    missing = [i + 1 for i in range(n) if i not in names]
    if missing:
        raise DataLayoutError(f"{spec.name}: annotation labels {missing[:5]} have no images", path=folder / "annotations")
    return _listing(spec, lay, folder, [names[i] for i in range(n)], splits, files)


def read_stanford_cars(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    # torchvision StanfordCars: devkit/cars_meta.mat class_names; train annotations devkit/cars_train_annos.mat,
    # test annotations cars_test_annos_withlabels.mat; "class" is 1-based.
    from scipy.io import loadmat

    classes = [str(c) for c in loadmat(folder / "devkit" / "cars_meta.mat", squeeze_me=True)["class_names"].reshape(-1).tolist()]
    splits, files = {}, {}
    for split, annos, images in (("train", folder / "devkit" / "cars_train_annos.mat", "cars_train"),
                                 ("test", folder / "cars_test_annos_withlabels.mat", "cars_test")):
        records = loadmat(annos, squeeze_me=True)["annotations"].reshape(-1)
        items = [(str(r["fname"]), int(r["class"]) - 1) for r in records]
        splits[split], files[split] = ImageListDataset(folder / images, items), str(annos)
    return _listing(spec, lay, folder, [_space(c) for c in classes], splits, files)


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR pickles hold dicts of lists and numpy arrays: allow exactly that, not arbitrary code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset pickle")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        try:
            return _ArrayUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise DataLayoutError(f"CIFAR100: cannot read {path}: {exc}", path=path) from exc


def read_cifar100(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    # torchvision CIFAR100: pickled dicts, "data" (N, 3072) uint8 in CHW order, "fine_labels"; meta "fine_label_names".
    import numpy as np

    classes = [str(c) for c in _load_pickle(folder / "meta")["fine_label_names"]]
    splits = {}
    for split in ("train", "test"):
        entry = _load_pickle(folder / split)
        images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        splits[split] = ArrayImageDataset(np.ascontiguousarray(images), list(entry["fine_labels"]), f"cifar100/{split}")
    return _listing(spec, lay, folder, [_space(c) for c in classes], splits,
                    {"train": str(folder / "train"), "test": str(folder / "test")})


def read_idx(path: Path):
    """An MNIST idx file (optionally .gz): big-endian magic 0x0000 0x08 <ndim>, then the dimensions."""
    import numpy as np

    if not path.exists() and Path(f"{path}.gz").exists():
        path = Path(f"{path}.gz")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataLayoutError(f"MNIST: {path} is not an unsigned-byte idx file", path=path)
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    expected = int(np.prod(dims))
    if body.size != expected:
        raise DataLayoutError(f"MNIST: {path} holds {body.size} bytes of data, its header promises {expected}", path=path)
    return body.reshape(dims)


def read_mnist(spec: DatasetSpec, lay: LayoutSpec, folder: Path, root: Path) -> Listing:
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte")
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte")
        if len(images) != len(labels):
            raise DataLayoutError(f"MNIST: {prefix} has {len(images)} images but {len(labels)} labels", path=folder)
        splits[split] = ArrayImageDataset(images, labels.tolist(), f"mnist/{split}")
    derived = [str(i) for i in range(int(max(splits["train"].targets, default=-1)) + 1)]
    return _listing(spec, lay, folder, _names(spec, derived, folder), splits,
                    {"train": str(folder / "train-labels-idx1-ubyte"), "test": str(folder / "t10k-labels-idx1-ubyte")})

"""Tiny fake copies of the real dataset layouts (zscl and coop), for tests that cannot download anything.

Every builder writes the folders, split files, .mat files, pickles or idx files its layout needs, with a few
8x8 images per class, and returns an :class:`Expect` with the class names and image counts the loader must
find. Datasets with up to ~100 classes get every class; the big ones (StanfordCars, SUN397, ImageNet) get
the full class list in their metadata and images in some classes (or one image per class where the layout
derives classes from folders).

Every image is one flat colour that encodes the label the reader must give it (:func:`label_colour`; 16 levels
per channel, which JPEG keeps), so a test can decode each image (:func:`decode_label`) and check its label.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from condu_bench.datasets.catalog import get_spec


@dataclass
class Expect:
    num_classes: int
    counts: dict[str, int]
    classnames: list[str] | None = None  # None: not checked by name
    folder: Path | None = None
    extra: dict = field(default_factory=dict)


UNREAD = 4095  # the code of images no class owns (e.g. Caltech101's BACKGROUND_Google)


def label_colour(label: int) -> tuple[int, int, int]:
    """Label 0..4095 as an RGB colour: one base-16 digit per channel, at the middle of its level."""
    return tuple(16 * ((label >> shift) & 15) + 8 for shift in (0, 4, 8))


def decode_label(image, grey: bool = False) -> int:
    """The label :func:`label_colour` encoded in a (decoded, possibly JPEG-damaged) flat image; ``grey``: a
    one-channel image (MNIST) that carries only the first digit."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(0)
    digits = [int(np.clip(round((v - 8) / 16), 0, 15)) for v in pixels]
    return digits[0] if grey else digits[0] + 16 * digits[1] + 256 * digits[2]


@lru_cache(maxsize=None)
def jpeg_bytes(label: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), label_colour(label)).save(buf, "JPEG")
    return buf.getvalue()


def write_image(path: Path, label: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(label))


def truncate_image(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def names_of(dataset: str, n: int | None = None) -> list[str]:
    names = get_spec(dataset).classnames
    if names is None:
        names = [f"class {i:03d}" for i in range(n or 0)]
    return names


# ----------------------------------------------------------------------------------------------- zscl layout


def zscl_aircraft(root: Path, per_class: int = 2) -> Expect:
    data = root / "fgvc-aircraft-2013b" / "data"
    names = names_of("Aircraft")
    data.mkdir(parents=True, exist_ok=True)
    (data / "variants.txt").write_text("\n".join(names) + "\n")
    counter = 1000000
    for split in ("train", "test"):
        lines = []
        for c, name in enumerate(names):
            for k in range(per_class):
                counter += 1
                write_image(data / "images" / f"{counter}.jpg", c)
                lines.append(f"{counter} {name}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return Expect(100, {"train": 100 * per_class, "test": 100 * per_class}, names, data.parent)


def zscl_caltech101(root: Path, per_class: int = 3) -> Expect:
    images = root / "caltech101" / "101_ObjectCategories"
    folders = {"BACKGROUND_Google": UNREAD, **{f"cat_{i:03d}": i for i in range(101)}}
    for f, label in folders.items():
        for k in range(per_class):
            write_image(images / f / f"image_{k + 1:04d}.jpg", label)
    n = 101 * per_class
    return Expect(101, {"train": int(0.8 * n), "test": n - int(0.8 * n)}, names_of("Caltech101"), images.parent)


def zscl_cifar100(root: Path, per_class: int = 2) -> Expect:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    names = names_of("CIFAR100")
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [n.replace(" ", "_") for n in names], "coarse_label_names": ["x"] * 20}, f)
    for split in ("train", "test"):
        labels = [c for c in range(100) for _ in range(per_class)]
        data = np.repeat(np.array([label_colour(c) for c in labels], np.uint8), 1024, axis=1)  # channel-major rows
        with open(folder / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": [0] * len(labels)}, f)
    return Expect(100, {"train": 100 * per_class, "test": 100 * per_class}, names, folder)


def zscl_dtd(root: Path, per_class: int = 2, nested: bool = False) -> Expect:
    folder = root / "dtd" / "dtd" if nested else root / "dtd"
    names = names_of("DTD")
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        lines = []
        for c, name in enumerate(names):
            for k in range(per_class):
                rel = f"{name}/{name}_{split}{k:04d}.jpg"
                write_image(folder / "images" / rel, c)
                lines.append(rel)
        (folder / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    return Expect(47, {"train": 47 * per_class, "test": 47 * per_class}, names, folder)


EUROSAT_FOLDERS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
                   "Residential", "River", "SeaLake"]


def zscl_eurosat(root: Path, per_class: int = 4) -> Expect:
    images = root / "eurosat" / "2750"
    for c, f in enumerate(EUROSAT_FOLDERS):
        for k in range(per_class):
            write_image(images / f / f"{f}_{k + 1}.jpg", c)
    n = 10 * per_class
    return Expect(10, {"train": int(0.8 * n), "test": n - int(0.8 * n)}, names_of("EuroSAT"), images.parent)


def zscl_flowers102(root: Path, per_class: int = 2) -> Expect:
    from scipy.io import savemat

    folder = root / "flowers-102"
    labels, ids = [], {"trnid": [], "valid": [], "tstid": []}
    for c in range(102):
        for key in ("trnid", "valid", "tstid"):
            for _ in range(per_class):
                labels.append(c + 1)
                ids[key].append(len(labels))
                write_image(folder / "jpg" / f"image_{len(labels):05d}.jpg", c)
    savemat(folder / "imagelabels.mat", {"labels": np.array([labels])})
    savemat(folder / "setid.mat", {k: np.array([v]) for k, v in ids.items()})
    return Expect(102, {"train": 102 * per_class, "test": 102 * per_class}, names_of("Flowers102"), folder)


def zscl_food101(root: Path, per_class: int = 2) -> Expect:
    folder = root / "food-101"
    names = names_of("Food101")
    (folder / "meta").mkdir(parents=True, exist_ok=True)
    counter = 0
    for split in ("train", "test"):
        meta = {}
        for c, name in enumerate(names):
            raw = name.replace(" ", "_")
            meta[raw] = []
            for _ in range(per_class):
                counter += 1
                write_image(folder / "images" / raw / f"{counter}.jpg", c)
                meta[raw].append(f"{raw}/{counter}")
        (folder / "meta" / f"{split}.json").write_text(json.dumps(meta))
    return Expect(101, {"train": 101 * per_class, "test": 101 * per_class}, names, folder)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def zscl_mnist(root: Path, per_class: int = 3, gz: bool = False) -> Expect:
    import gzip

    raw = root / "MNIST" / "raw"
    counts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        labels = np.array([c for c in range(10) for _ in range(per_class)], dtype=np.uint8)
        images = np.repeat(np.array([label_colour(c)[0] for c in labels], np.uint8), 784).reshape(-1, 28, 28)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        if gz:
            for name in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
                path = raw / name
                Path(f"{path}.gz").write_bytes(gzip.compress(path.read_bytes()))
                path.unlink()
        counts[split] = len(labels)
    return Expect(10, counts, names_of("MNIST"), raw)


def zscl_oxford_pets(root: Path, per_class: int = 2) -> Expect:
    folder = root / "oxford-iiit-pet"
    names = names_of("OxfordPets")
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    counter = 0
    for split, fname in (("train", "trainval.txt"), ("test", "test.txt")):
        lines = []
        for c, name in enumerate(names):
            raw = name.replace(" ", "_")  # torchvision title-cases the words back
            for _ in range(per_class):
                counter += 1
                write_image(folder / "images" / f"{raw}_{counter}.jpg", c)
                lines.append(f"{raw}_{counter} {c + 1} 1 1")
        (folder / "annotations" / fname).write_text("\n".join(lines) + "\n")
    return Expect(37, {"train": 37 * per_class, "test": 37 * per_class}, names, folder)


def zscl_stanford_cars(root: Path, classes_with_images: int = 8, per_class: int = 2) -> Expect:
    from scipy.io import savemat

    folder = root / "stanford_cars"
    names = names_of("StanfordCars")
    (folder / "devkit").mkdir(parents=True, exist_ok=True)
    savemat(folder / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    counts = {}
    for split, annos, images in (("train", folder / "devkit" / "cars_train_annos.mat", "cars_train"),
                                 ("test", folder / "cars_test_annos_withlabels.mat", "cars_test")):
        records = []
        for c in range(0, 196, 196 // classes_with_images)[:classes_with_images]:
            for _ in range(per_class):
                fname = f"{len(records) + 1:05d}.jpg"
                write_image(folder / images / fname, c)
                records.append((fname, c + 1))
        savemat(annos, {"annotations": np.array(records, dtype=[("fname", "O"), ("class", "O")])})
        counts[split] = len(records)
    return Expect(196, counts, names, folder)


def sun_classes() -> list[str]:
    # ClassName.txt style: "/<letter>/<name>" with some two-level names like torchvision's "apartment_building/outdoor".
    return [f"/c/class_{i:03d}" + ("/indoor" if i % 50 == 1 else "") for i in range(397)]


def zscl_sun397(root: Path, classes_with_images: int = 6, per_class: int = 3) -> Expect:
    folder = root / "SUN397"
    folder.mkdir(parents=True, exist_ok=True)
    classes = sun_classes()
    (folder / "ClassName.txt").write_text("\n".join(classes) + "\n")
    for c in range(classes_with_images):
        for k in range(per_class):
            write_image(folder / classes[c].lstrip("/") / f"sun_{c:03d}{k}.jpg", c)
    n = classes_with_images * per_class
    names = [c[3:].replace("_", " ") for c in classes]
    return Expect(397, {"train": int(0.8 * n), "test": n - int(0.8 * n)}, names, folder)


ZSCL = {
    "Aircraft": zscl_aircraft, "Caltech101": zscl_caltech101, "CIFAR100": zscl_cifar100, "DTD": zscl_dtd,
    "EuroSAT": zscl_eurosat, "Flowers102": zscl_flowers102, "Food101": zscl_food101, "MNIST": zscl_mnist,
    "OxfordPets": zscl_oxford_pets, "StanfordCars": zscl_stanford_cars, "SUN397": zscl_sun397,
}

# ----------------------------------------------------------------------------------------------- coop layout

COOP_JSON = {  # dataset -> (folder, image dir, split file, number of classes)
    "Caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", 100),
    "OxfordPets": ("oxford_pets", "images", "split_zhou_OxfordPets.json", 37),
    "StanfordCars": ("stanford_cars", "", "split_zhou_StanfordCars.json", 196),
    "Flowers102": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", 102),
    "Food101": ("food-101", "images", "split_zhou_Food101.json", 101),
    "SUN397": ("sun397", "SUN397", "split_zhou_SUN397.json", 397),
    "DTD": ("dtd", "images", "split_zhou_DescribableTextures.json", 47),
    "EuroSAT": ("eurosat", "2750", "split_zhou_EuroSAT.json", 10),
    "UCF101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", 101),
}
COOP_PER_CLASS = {"train": 3, "val": 1, "test": 1}


def coop_json(root: Path, dataset: str, per_class: dict[str, int] | None = None) -> Expect:
    per_class = per_class or COOP_PER_CLASS
    folder_name, image_dir, split_file, n = COOP_JSON[dataset]
    folder = root / folder_name
    names = [f"{dataset.lower()}_class_{i:03d}" for i in range(n)]  # CoOp names carry '_', prompts get spaces
    split = {}
    for s, k in per_class.items():
        entries = []
        for c, name in enumerate(names):
            for j in range(k):
                rel = f"{name}/{s}_{j}.jpg"
                write_image(folder / image_dir / rel, c)
                entries.append([rel, c, name])
        split[s] = entries
    (folder / split_file).write_text(json.dumps(split))
    return Expect(n, {s: n * k for s, k in per_class.items()}, [x.replace("_", " ") for x in names], folder)


def coop_aircraft(root: Path, per_class: int = 2) -> Expect:
    folder = root / "fgvc_aircraft"
    names = names_of("Aircraft")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "variants.txt").write_text("\n".join(names) + "\n")
    counter = 2000000
    for split in ("train", "val", "test"):
        lines = []
        for c, name in enumerate(names):
            for _ in range(per_class):
                counter += 1
                write_image(folder / "images" / f"{counter}.jpg", c)
                lines.append(f"{counter} {name}")
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return Expect(100, {s: 100 * per_class for s in ("train", "val", "test")}, names, folder)


def wnids() -> list[str]:
    return [f"n{i:08d}" for i in range(1000)]


def write_classnames_txt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = get_spec("ImageNet").classnames
    path.write_text("\n".join(f"{w} {n}" for w, n in zip(wnids(), names)) + "\n")


def coop_imagenet(root: Path) -> Expect:
    folder = root / "imagenet"
    write_classnames_txt(folder / "classnames.txt")
    for i, w in enumerate(wnids()):
        write_image(folder / "images" / "train" / w / f"{w}_1.JPEG", i)
        if i % 100 == 0:
            write_image(folder / "images" / "train" / w / f"{w}_2.JPEG", i)
        write_image(folder / "images" / "val" / w / f"ILSVRC2012_val_{i:08d}.JPEG", i)
    return Expect(1000, {"train": 1010, "test": 1000}, get_spec("ImageNet").classnames, folder)


def coop_imagenet_v2(root: Path) -> Expect:
    folder = root / "imagenetv2"
    images = folder / "imagenetv2-matched-frequency-format-val"
    for label in (0, 5, 999):
        write_image(images / str(label) / "a.jpeg", label)
    write_classnames_txt(folder / "classnames.txt")
    return Expect(1000, {"test": 3}, get_spec("ImageNet").classnames, folder)


def coop_imagenet_sketch(root: Path) -> Expect:
    folder = root / "imagenet-sketch"
    for i, w in enumerate(wnids()):
        write_image(folder / "images" / w / "sketch_1.JPEG", i)
    write_classnames_txt(folder / "classnames.txt")
    return Expect(1000, {"test": 1000}, get_spec("ImageNet").classnames, folder)


def _imagenet_subset(root: Path, dataset: str, folder_name: str, image_dir: str) -> Expect:
    folder = root / folder_name
    indices = get_spec(dataset).data["imagenet_indices"]
    all_names = get_spec("ImageNet").classnames
    for position, i in enumerate(indices):
        write_image(folder / image_dir / wnids()[i] / "x.jpg", position)
    (folder / image_dir / "README.txt").write_text("not a class\n")
    write_classnames_txt(folder / "classnames.txt")
    return Expect(200, {"test": 200}, [all_names[i] for i in indices], folder)


def coop_imagenet_a(root: Path) -> Expect:
    return _imagenet_subset(root, "ImageNet-A", "imagenet-adversarial", "imagenet-a")


def coop_imagenet_r(root: Path) -> Expect:
    return _imagenet_subset(root, "ImageNet-R", "imagenet-rendition", "imagenet-r")


COOP = {
    **{name: (lambda root, _n=name: coop_json(root, _n)) for name in COOP_JSON},
    "Aircraft": coop_aircraft, "ImageNet": coop_imagenet, "ImageNet-V2": coop_imagenet_v2,
    "ImageNet-Sketch": coop_imagenet_sketch, "ImageNet-A": coop_imagenet_a, "ImageNet-R": coop_imagenet_r,
}


def build(root: Path, dataset: str, layout: str, **kwargs) -> Expect:
    return {"zscl": ZSCL, "coop": COOP}[layout][dataset](Path(root), **kwargs)


def build_all(root: Path, layout: str, names: list[str] | None = None) -> dict[str, Expect]:
    table = {"zscl": ZSCL, "coop": COOP}[layout]
    return {name: table[name](Path(root)) for name in (names or list(table))}

"""A zscl-layout data tree for MTIL order I with the real test-set sizes and photo-like JPEGs, so that a whole run
can be timed without the datasets (``condu-bench bench --full-mtil``).

Every file and folder the zscl readers (:mod:`condu_bench.datasets.zscl_layout`) need is written in the format
they read: JPEGs of 500x375 (EuroSAT 64x64), CIFAR-100 as its python pickles, MNIST as idx files, split lists,
``.mat`` and ``.json`` metadata. Test splits hold ``max(1, round_half_up(real size x scale))`` images (the readers'
split files list exactly that many; the random 80/20 splits of Caltech101, EuroSAT and SUN397 get as many images in
all as make their test part that size). Train splits are small: training runs a fixed number of iterations and the
loader cycles, so a few files per class are enough, and all but a pool of ``TRAIN_POOL`` photos per dataset are hard
links to that pool (decoding costs the same; generating 87k SUN397 train photos would not be worth it).
A ZSCL reference input (``imagenet/train`` images and a Conceptual-Captions-like ``.tsv``) lets ``zscl`` run too.

The tree is cached under ``default_cache_dir() / full-mtil-zscl-v{VERSION}-scale{scale}``: built in a temporary
sibling folder and renamed into place once complete, so a half-built tree is never read. Every image is seeded by
its dataset, split and index, so two builds are identical.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from condu_bench.errors import UserError
from condu_bench.perf.photos import photo
from condu_bench.training.device import usable_cores

VERSION = 2  # 2: photos.PHOTO_VERSION 2
MANIFEST = "full_mtil.json"  # written last inside the tree: what was generated, and how long it took
ORDER_I = ["Aircraft", "Caltech101", "CIFAR100", "DTD", "EuroSAT", "Flowers102", "Food101", "MNIST", "OxfordPets",
           "StanfordCars", "SUN397"]
# Test-set sizes under ZSCL's splits: the official test lists (Aircraft images_variant_test, CIFAR-100 test, DTD
# test1, Flowers tstid, Food-101 test.json, MNIST t10k, Pets test.txt, Cars test annotations); Caltech101 (8677
# images without BACKGROUND_Google), EuroSAT (27000) and SUN397 (108754) keep n - int(0.8 n) in the seeded 80/20 split.
TEST_SIZES = {"Aircraft": 3333, "Caltech101": 1736, "CIFAR100": 10000, "DTD": 1880, "EuroSAT": 5400,
              "Flowers102": 6149, "Food101": 25250, "MNIST": 10000, "OxfordPets": 3669, "StanfordCars": 8041,
              "SUN397": 21751}
PHOTO_SIZE = (500, 375)  # (width, height): the typical size of the photo datasets' images
EUROSAT_SIZE = (64, 64)
TRAIN_PER_CLASS = 4  # official-split train lists; the random splits' train part is 4x their test part
TRAIN_POOL = 64  # distinct train photos per dataset at scale >= 1 (at least 1); the other train files link to them
REF_IMAGES = 1000  # ZSCL reference images (ImageNet train stand-in) at scale 1; its image stream cycles over them
REF_SENTENCES = 15840  # lines of Conceptual Captions' Validation_GCC-1.1.0-Validation.tsv
REF_IMAGES_DIR = "imagenet/train"  # the paths benchmarks/mtil_order1.yaml names
REF_SENTENCES_FILE = "conceptual_captions/Validation_GCC-1.1.0-Validation.tsv"
QUALITY = 90
EUROSAT_FOLDERS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
                   "Residential", "River", "SeaLake"]


def scaled(n: int, scale: float) -> int:
    """``n x scale`` rounded half up, at least 1."""
    return max(1, int(math.floor(n * scale + 0.5)))


def test_size(dataset: str, scale: float) -> int:
    return scaled(TEST_SIZES[dataset], scale)


def tree_path(scale: float, cache_dir: Path | None = None) -> Path:
    from condu_bench.synthetic.pretrain import default_cache_dir

    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"full-mtil-zscl-v{VERSION}-scale{scale}"


def _seed(key: str, index: int) -> tuple[int, int]:
    return zlib.crc32(key.encode()), index  # crc32, not hash(): the same on every run and machine


def _rng(key: str, index: int) -> np.random.Generator:
    return np.random.default_rng(_seed(key, index))


def _classnames(dataset: str) -> list[str]:
    from condu_bench.datasets.catalog import get_spec

    spec = get_spec(dataset)
    names = spec.classnames if spec.classnames is not None else spec.data.get("clip_classnames")
    if not names:
        raise UserError(f"full-mtil: the registry has no class names for {dataset} (classnames/{spec.data_file})")
    return list(names)


def _round_robin(n: int, classes: int) -> list[int]:
    return [j % classes for j in range(n)]


def random_split_total(n_test: int) -> int:
    """The smallest image count whose 80/20 split (:func:`random_split_80_20`) has ``n_test`` test images."""
    n = max(1, 5 * n_test - 10)
    while n - int(0.8 * n) < n_test:
        n += 1
    return n


class TreePlan:
    """What to write: JPEGs (path, size, seed) for the worker pool, hard links, and small files written at once."""

    def __init__(self, root: Path, scale: float):
        self.root, self.scale = root, scale
        self.photos: list[tuple[str, int, int, tuple[int, int]]] = []
        self.links: list[tuple[str, str]] = []
        self.datasets: dict[str, dict[str, Any]] = {}

    def text(self, rel: str, content: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")

    def binary(self, rel: str, content: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    def test_images(self, dataset: str, rels: list[str], size: tuple[int, int]) -> None:
        self.photos.extend((str(self.root / rel), *size, _seed(f"{dataset}/test", i)) for i, rel in enumerate(rels))

    def train_images(self, dataset: str, rels: list[str], size: tuple[int, int]) -> None:
        pool = min(len(rels), max(1, math.ceil(TRAIN_POOL * min(1.0, self.scale))))
        for k, rel in enumerate(rels):
            if k < pool:
                self.photos.append((str(self.root / rel), *size, _seed(f"{dataset}/train", k)))
            else:
                self.links.append((str(self.root / rels[k % pool]), str(self.root / rel)))

    def record(self, dataset: str, train: int, test: int, classes: int, images: str) -> None:
        self.datasets[dataset] = {"train": train, "test": test, "classes": classes, "images": images}


# ------------------------------------------------------------------------------------ official train/test lists


def _aircraft(plan: TreePlan) -> None:
    names, n_test = _classnames("Aircraft"), test_size("Aircraft", plan.scale)
    base = "fgvc-aircraft-2013b/data"
    plan.text(f"{base}/variants.txt", "\n".join(names) + "\n")
    labels = {"train": [c for c in range(len(names)) for _ in range(TRAIN_PER_CLASS)], "test": _round_robin(n_test, len(names))}
    next_id = 1000000  # seven-digit image ids, unique over both splits, as the release's
    for split, split_labels in labels.items():
        ids = list(range(next_id, next_id + len(split_labels)))
        next_id += len(split_labels)
        plan.text(f"{base}/images_variant_{split}.txt", "".join(f"{i} {names[c]}\n" for i, c in zip(ids, split_labels)))
        rels = [f"{base}/images/{i}.jpg" for i in ids]
        (plan.train_images if split == "train" else plan.test_images)("Aircraft", rels, PHOTO_SIZE)
    plan.record("Aircraft", len(labels["train"]), n_test, len(names), "500x375 JPEG")


def _dtd(plan: TreePlan) -> None:
    names, n_test = _classnames("DTD"), test_size("DTD", plan.scale)
    folders = [n.replace(" ", "_") for n in names]
    for folder in folders:  # the reader takes the classes from these folders, images or not
        (plan.root / "dtd" / "images" / folder).mkdir(parents=True, exist_ok=True)
    labels = {"train": [c for c in range(len(names)) for _ in range(TRAIN_PER_CLASS)], "test": _round_robin(n_test, len(names))}
    for split, split_labels in labels.items():
        lines = [f"{folders[c]}/{folders[c]}_{split}{k:05d}.jpg" for k, c in enumerate(split_labels)]
        plan.text(f"dtd/labels/{split}1.txt", "".join(f"{line}\n" for line in lines))
        rels = [f"dtd/images/{line}" for line in lines]
        (plan.train_images if split == "train" else plan.test_images)("DTD", rels, PHOTO_SIZE)
    plan.record("DTD", len(labels["train"]), n_test, len(names), "500x375 JPEG")


def _flowers102(plan: TreePlan) -> None:
    from scipy.io import savemat

    classes, n_test = len(_classnames("Flowers102")), test_size("Flowers102", plan.scale)
    train = [c for c in range(classes) for _ in range(TRAIN_PER_CLASS)]  # every label: the reader counts max(label)
    labels = train + _round_robin(n_test, classes)
    ids = list(range(1, len(labels) + 1))
    folder = plan.root / "flowers-102"
    folder.mkdir(parents=True, exist_ok=True)
    savemat(folder / "imagelabels.mat", {"labels": np.array([[c + 1 for c in labels]])})
    savemat(folder / "setid.mat", {"trnid": np.array([ids[:len(train)]]), "tstid": np.array([ids[len(train):]])})
    rels = [f"flowers-102/jpg/image_{i:05d}.jpg" for i in ids]
    plan.train_images("Flowers102", rels[:len(train)], PHOTO_SIZE)
    plan.test_images("Flowers102", rels[len(train):], PHOTO_SIZE)
    plan.record("Flowers102", len(train), n_test, classes, "500x375 JPEG")


def _food101(plan: TreePlan) -> None:
    names, n_test = _classnames("Food101"), test_size("Food101", plan.scale)
    folders = [n.replace(" ", "_") for n in names]
    labels = {"train": [c for c in range(len(names)) for _ in range(TRAIN_PER_CLASS)], "test": _round_robin(n_test, len(names))}
    next_id = 100000
    for split, split_labels in labels.items():
        meta: dict[str, list[str]] = {f: [] for f in folders}  # every class in both files, as the reader requires
        for k, c in enumerate(split_labels):
            meta[folders[c]].append(f"{folders[c]}/{next_id + k}")
        next_id += len(split_labels)
        plan.text(f"food-101/meta/{split}.json", json.dumps(meta))
        rels = [f"food-101/images/{entry}.jpg" for entries in meta.values() for entry in entries]
        (plan.train_images if split == "train" else plan.test_images)("Food101", rels, PHOTO_SIZE)
    plan.record("Food101", len(labels["train"]), n_test, len(names), "500x375 JPEG")


def _oxford_pets(plan: TreePlan) -> None:
    names, n_test = _classnames("OxfordPets"), test_size("OxfordPets", plan.scale)
    raw = [n.replace(" ", "_") for n in names]  # the reader title-cases the words of the image id back
    labels = {"train": [c for c in range(len(names)) for _ in range(TRAIN_PER_CLASS)], "test": _round_robin(n_test, len(names))}
    counter = 0
    for split, fname in (("train", "trainval.txt"), ("test", "test.txt")):
        ids = [f"{raw[c]}_{counter + k + 1}" for k, c in enumerate(labels[split])]
        counter += len(ids)
        plan.text(f"oxford-iiit-pet/annotations/{fname}",
                  "".join(f"{i} {c + 1} 1 {c + 1}\n" for i, c in zip(ids, labels[split])))
        rels = [f"oxford-iiit-pet/images/{i}.jpg" for i in ids]
        (plan.train_images if split == "train" else plan.test_images)("OxfordPets", rels, PHOTO_SIZE)
    plan.record("OxfordPets", len(labels["train"]), n_test, len(names), "500x375 JPEG")


def _stanford_cars(plan: TreePlan) -> None:
    from scipy.io import savemat

    names, n_test = _classnames("StanfordCars"), test_size("StanfordCars", plan.scale)
    folder = plan.root / "stanford_cars"
    (folder / "devkit").mkdir(parents=True, exist_ok=True)
    savemat(folder / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    labels = {"train": [c for c in range(len(names)) for _ in range(TRAIN_PER_CLASS)], "test": _round_robin(n_test, len(names))}
    for split, annos, images in (("train", folder / "devkit" / "cars_train_annos.mat", "cars_train"),
                                 ("test", folder / "cars_test_annos_withlabels.mat", "cars_test")):
        records = [(f"{k + 1:05d}.jpg", c + 1) for k, c in enumerate(labels[split])]
        savemat(annos, {"annotations": np.array(records, dtype=[("fname", "O"), ("class", "O")])})
        rels = [f"stanford_cars/{images}/{fname}" for fname, _ in records]
        (plan.train_images if split == "train" else plan.test_images)("StanfordCars", rels, PHOTO_SIZE)
    plan.record("StanfordCars", len(labels["train"]), n_test, len(names), "500x375 JPEG")


# ------------------------------------------------------------------------------------ arrays (CIFAR-100, MNIST)


def _small_images(key: str, n: int, size: int, grey: bool = False) -> np.ndarray:
    images = np.stack([photo(_rng(key, i), size, size) for i in range(n)]) if n else np.zeros((0, size, size, 3), np.uint8)
    return images.mean(axis=3).astype(np.uint8) if grey else images


def _cifar100(plan: TreePlan) -> None:
    names, n_test = _classnames("CIFAR100"), test_size("CIFAR100", plan.scale)
    plan.binary("cifar-100-python/meta", pickle.dumps({"fine_label_names": [n.replace(" ", "_") for n in names],
                                                       "coarse_label_names": [f"coarse_{i}" for i in range(20)]}))
    labels = {"train": [c for c in range(len(names)) for _ in range(TRAIN_PER_CLASS)], "test": _round_robin(n_test, len(names))}
    for split, split_labels in labels.items():
        images = _small_images(f"CIFAR100/{split}", len(split_labels), 32)
        data = images.transpose(0, 3, 1, 2).reshape(len(split_labels), 3072)  # rows are channel-major, as the release
        plan.binary(f"cifar-100-python/{split}", pickle.dumps({"data": data, "fine_labels": split_labels,
                                                               "coarse_labels": [c % 20 for c in split_labels]}))
    plan.record("CIFAR100", len(labels["train"]), n_test, len(names), "32x32 pickle")


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()


def _mnist(plan: TreePlan) -> None:
    n_test = test_size("MNIST", plan.scale)
    labels = {"train": [c for c in range(10) for _ in range(TRAIN_PER_CLASS)], "test": _round_robin(n_test, 10)}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        plan.binary(f"MNIST/raw/{prefix}-images-idx3-ubyte", _idx(_small_images(f"MNIST/{split}", len(labels[split]), 28, grey=True)))
        plan.binary(f"MNIST/raw/{prefix}-labels-idx1-ubyte", _idx(np.array(labels[split], dtype=np.uint8)))
    plan.record("MNIST", len(labels["train"]), n_test, 10, "28x28 idx")


# ------------------------------------------------------------------------------------ seeded 80/20 splits


def _random_split(plan: TreePlan, dataset: str, files: list[tuple[str, str]], order: Callable[[tuple[str, str]], Any],
                  base: str, size: tuple[int, int]) -> None:
    """``files`` are (class folder, file name) pairs under ``base``; ``order`` sorts them as the reader lists them,
    so the test part of its split (:func:`random_split_80_20`) is known and only those files become distinct photos."""
    from condu_bench.datasets.loading import random_split_80_20

    listed = sorted(files, key=order)
    train_idx, test_idx = random_split_80_20(len(listed))
    plan.test_images(dataset, [f"{base}/{'/'.join(listed[i])}" for i in test_idx], size)
    plan.train_images(dataset, [f"{base}/{'/'.join(listed[i])}" for i in sorted(train_idx)], size)


def _spread(n: int, folders: list[str], stem: str) -> list[tuple[str, str]]:
    """``n`` file names spread evenly over ``folders`` (fixed-width numbers)."""
    per = [n // len(folders) + (c < n % len(folders)) for c in range(len(folders))]
    return [(folder, f"{stem}{k:06d}.jpg") for folder, count in zip(folders, per) for k in range(count)]


def _caltech101(plan: TreePlan) -> None:
    classes, n_test = len(_classnames("Caltech101")), test_size("Caltech101", plan.scale)
    folders = [f"class_{i:03d}" for i in range(classes)]  # sorted as the registry's names, which the reader then uses
    for folder in folders:  # the reader counts the folders, images or not
        (plan.root / "caltech101" / "101_ObjectCategories" / folder).mkdir(parents=True, exist_ok=True)
    n = random_split_total(n_test)
    _random_split(plan, "Caltech101", _spread(n, folders, "image_"), lambda f: f, "caltech101/101_ObjectCategories", PHOTO_SIZE)
    plan.record("Caltech101", n - n_test, n_test, classes, "500x375 JPEG")


def _eurosat(plan: TreePlan) -> None:
    n_test = test_size("EuroSAT", plan.scale)
    for folder in EUROSAT_FOLDERS:
        (plan.root / "eurosat" / "2750" / folder).mkdir(parents=True, exist_ok=True)
    n = random_split_total(n_test)
    files = [(folder, f"{folder}_{name}") for folder, name in _spread(n, EUROSAT_FOLDERS, "")]
    _random_split(plan, "EuroSAT", files, lambda f: f, "eurosat/2750", EUROSAT_SIZE)
    plan.record("EuroSAT", n - n_test, n_test, len(EUROSAT_FOLDERS), "64x64 JPEG")


def _sun397(plan: TreePlan) -> None:
    names, n_test = _classnames("SUN397"), test_size("SUN397", plan.scale)
    folders = [f"{name[0].lower()}/{name.replace(' ', '_')}" for name in names]  # ClassName.txt: "/a/abbey"
    if len(set(folders)) != len(folders):
        raise UserError("full-mtil: SUN397 class names collide as folder names")
    plan.text("SUN397/ClassName.txt", "".join(f"/{folder}\n" for folder in folders))
    n = random_split_total(n_test)
    # the reader sorts the relative paths as strings (its rglob order made reproducible)
    _random_split(plan, "SUN397", _spread(n, folders, "sun_"), lambda f: "/".join(f), "SUN397", PHOTO_SIZE)
    plan.record("SUN397", n - n_test, n_test, len(names), "500x375 JPEG")


# ------------------------------------------------------------------------------------ ZSCL reference input

WORDS = {
    "who": ["a man", "a woman", "a child", "two dogs", "a cat", "an old car", "a red bus", "a group of people", "a bird"],
    "does": ["standing", "walking", "sitting", "resting", "waiting", "playing", "parked", "looking out"],
    "where": ["on a beach", "in a kitchen", "near a river", "in the snow", "on a city street", "in a forest",
              "at a market", "under a bridge", "in front of a house", "on a mountain road"],
    "when": ["at sunset", "in the morning", "at night", "on a rainy day", "in summer", "during a festival"],
}


def _reference(plan: TreePlan) -> None:
    n_images, n_sentences = scaled(REF_IMAGES, plan.scale), max(8, scaled(REF_SENTENCES, plan.scale))
    rels = [f"{REF_IMAGES_DIR}/n{k % 10:08d}/n{k % 10:08d}_{k}.JPEG" for k in range(n_images)]  # ten wnid folders
    plan.photos.extend((str(plan.root / rel), *PHOTO_SIZE, _seed("reference", i)) for i, rel in enumerate(rels))
    rng = _rng("sentences", 0)
    lines = [" ".join(rng.choice(WORDS[part]) for part in WORDS) + f"\thttps://example.invalid/cc/{i}.jpg"
             for i in range(n_sentences)]
    plan.text(REF_SENTENCES_FILE, "\n".join(lines) + "\n")
    plan.datasets["zscl_reference"] = {"images": n_images, "sentences": n_sentences, "images_dir": REF_IMAGES_DIR,
                                       "sentences_file": REF_SENTENCES_FILE}


WRITERS = {"Aircraft": _aircraft, "Caltech101": _caltech101, "CIFAR100": _cifar100, "DTD": _dtd, "EuroSAT": _eurosat,
           "Flowers102": _flowers102, "Food101": _food101, "MNIST": _mnist, "OxfordPets": _oxford_pets,
           "StanfordCars": _stanford_cars, "SUN397": _sun397}


# ------------------------------------------------------------------------------------ writing and caching


def _write_jpeg(job: tuple[str, int, int, tuple[int, int]]) -> None:
    from PIL import Image

    path, width, height, seed = job
    Image.fromarray(photo(np.random.default_rng(seed), width, height)).save(path, "JPEG", quality=QUALITY)


def _write_all(plan: TreePlan, workers: int, log: Callable[[str], None]) -> None:
    for parent in {os.path.dirname(job[0]) for job in plan.photos} | {os.path.dirname(dst) for _, dst in plan.links}:
        os.makedirs(parent, exist_ok=True)
    total, step = len(plan.photos), max(1, len(plan.photos) // 10)
    started = time.perf_counter()

    def report(done) -> None:
        for i, _ in enumerate(done, 1):
            if i % step == 0 or i == total:
                log(f"{i}/{total} JPEGs ({i / max(1e-9, time.perf_counter() - started):.0f}/s)")

    if workers == 1:
        report(map(_write_jpeg, plan.photos))
    else:
        import multiprocessing

        with multiprocessing.get_context().Pool(workers) as pool:
            report(pool.imap_unordered(_write_jpeg, plan.photos, chunksize=max(1, min(64, total // (workers * 8)))))
    for src, dst in plan.links:  # after the photos: each link points to a written file
        os.link(src, dst)


def build_tree(root: Path, scale: float, workers: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the whole tree under ``root`` (an empty folder); returns the manifest (also written as ``MANIFEST``)."""
    started = time.perf_counter()
    plan = TreePlan(Path(root), scale)
    for name in ORDER_I:
        WRITERS[name](plan)
    _reference(plan)
    log(f"{len(plan.photos)} JPEGs and {len(plan.links)} hard links to write with {workers} process(es)")
    _write_all(plan, workers, log)
    manifest = {"version": VERSION, "scale": scale, "datasets": plan.datasets, "jpegs": len(plan.photos),
                "links": len(plan.links), "workers": workers, "seconds": round(time.perf_counter() - started, 2)}
    (Path(root) / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def ensure_tree(scale: float = 1.0, cache_dir: Path | None = None, workers: int | None = None,
                log: Callable[[str], None] = print) -> tuple[Path, dict[str, Any], bool]:
    """``(tree, manifest, built)``: the cached tree for ``scale``, generated first if absent (``built``)."""
    if not (isinstance(scale, (int, float)) and 0 < scale <= 1000):
        raise UserError(f"--scale must be a number in (0, 1000], not {scale!r}")
    if workers is not None and workers < 1:
        raise UserError(f"--gen-workers must be at least 1, not {workers}")
    workers = workers or usable_cores()
    final = tree_path(scale, cache_dir)
    if final.exists():
        return final, _read_manifest(final), False
    final.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=final.parent))  # same file system: rename
    try:
        log(f"generating {final} (scale {scale})")
        manifest = build_tree(building, scale, workers, log)
        try:
            os.rename(building, final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(building)  # another process finished the same tree first: use theirs
            return final, _read_manifest(final), False
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return final, manifest, True


def _read_manifest(tree: Path) -> dict[str, Any]:
    path = tree / MANIFEST
    if not path.is_file():
        raise UserError(f"{tree} exists but has no {MANIFEST}, so it is not a tree `bench --full-mtil` finished; "
                        "remove that folder and run again")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("version") != VERSION:
        raise UserError(f"{path} says version {manifest.get('version')}, this code writes {VERSION}; remove {tree}")
    return manifest

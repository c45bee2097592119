"""The built-in real datasets: one :class:`DatasetSpec` each, and the ``DATASETS`` registry that lists them.

Every spec is data: folders, required files, the official archive, the split convention and the class
count per layout. Class names and templates are in ``classnames/<file>.json``. Importing this module imports
neither torch nor PIL (the readers are named as ``"module:function"`` strings).

``DATASETS`` is created here, next to the specs it lists, and re-exported by :mod:`condu_bench.registries`; this
module never imports ``registries`` (the dependency goes one way only).
"""

from __future__ import annotations

from typing import Any

from condu_bench.datasets.spec import DatasetSpec, LayoutSpec
from condu_bench.registry import Registry

Z = "condu_bench.datasets.zscl_layout"
C = "condu_bench.datasets.coop_layout"
COOP_DOC = "CoOp's DATASETS.md, https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
ZSCL_OFFICIAL = "official train/test split (torchvision file lists, as ZSCL)"
ZSCL_RANDOM = "random 80/20 split of all images, torch.Generator seeded 42 (ZSCL's split_dataset)"


def _coop_json(folder: str, image_dir: str, split_file: str, archive: str, num_classes: int, name: str) -> LayoutSpec:
    return LayoutSpec(
        reader=f"{C}:read_split_zhou", dirs=(folder,), required=(image_dir or ".", split_file),
        archive=f"{archive}, and put {split_file} ({COOP_DOC}) into {{root}}/{folder}",
        split=f"CoOp split ({split_file}: train/val/test)", num_classes=num_classes,
        options={"image_dir": image_dir, "split_file": split_file, "coop_name": name},
    )


def _imagenet_variant(folder: str, image_dir: str, archive: str, num_classes: int, reader: str = "read_imagenet_folders") -> LayoutSpec:
    return LayoutSpec(
        reader=f"{C}:{reader}", dirs=(folder,), required=(image_dir,),
        archive=f"{archive}, and copy ImageNet's classnames.txt ({COOP_DOC}) into {{root}}/{folder}",
        split="test only (evaluation target)", num_classes=num_classes, options={"image_dir": image_dir},
    )


_SPECS = [
    DatasetSpec(
        "Aircraft", "aircraft.json", aliases=("FGVCAircraft", "fgvc_aircraft", "fgvc-aircraft"), mtil_name="Aircraft",
        description="FGVC-Aircraft 2013b, 100 variants",
        layouts={
            "zscl": LayoutSpec(f"{Z}:read_aircraft", ("fgvc-aircraft-2013b",),
                               ("data/images", "data/variants.txt", "data/images_variant_train.txt", "data/images_variant_test.txt"),
                               "extract fgvc-aircraft-2013b.tar.gz (https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/) into {root}",
                               ZSCL_OFFICIAL + ": images_variant_train.txt / images_variant_test.txt", 100, {"compare_names": True}),
            "coop": LayoutSpec(f"{C}:read_aircraft", ("fgvc_aircraft",),
                               ("images", "variants.txt", "images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt"),
                               "extract fgvc-aircraft-2013b.tar.gz (https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/) and move "
                               "its fgvc-aircraft-2013b/data/ folder to {root}/fgvc_aircraft",
                               "official train/val/test (images_variant_*.txt, as CoOp)", 100),
        },
    ),
    DatasetSpec(
        "Caltech101", "caltech101.json", aliases=("caltech-101", "caltech"), mtil_name="Caltech101",
        description="Caltech-101 object categories",
        layouts={
            "zscl": LayoutSpec(f"{Z}:read_caltech101", ("caltech101",), ("101_ObjectCategories",),
                               "extract caltech-101.zip (https://data.caltech.edu/records/mzrjq-6wc02) and the "
                               "101_ObjectCategories.tar.gz inside it into {root}/caltech101",
                               ZSCL_RANDOM + "; 101 classes (BACKGROUND_Google dropped)", 101),
            "coop": _coop_json("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
                               "extract 101_ObjectCategories.tar.gz (from caltech-101.zip, https://data.caltech.edu/records/mzrjq-6wc02) "
                               "into {root}/caltech-101", 100, "Caltech101"),
        },
    ),
    DatasetSpec(
        "CIFAR100", "cifar100.json", aliases=("cifar-100", "cifar_100"), mtil_name="CIFAR100", description="CIFAR-100",
        layouts={
            "zscl": LayoutSpec(f"{Z}:read_cifar100", ("cifar-100-python",), ("train", "test", "meta"),
                               "extract cifar-100-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into {root}",
                               ZSCL_OFFICIAL, 100, {"compare_names": True}),
        },
    ),
    DatasetSpec(
        "DTD", "dtd.json", aliases=("DescribableTextures", "textures"), mtil_name="DTD", description="Describable Textures",
        layouts={
            # The archive gives dtd/images; torchvision's DTD(download=True) nests it as dtd/dtd/images.
            "zscl": LayoutSpec(f"{Z}:read_dtd", ("dtd", "dtd/dtd"), ("images", "labels/train1.txt", "labels/test1.txt"),
                               "extract dtd-r1.0.1.tar.gz (https://www.robots.ox.ac.uk/~vgg/data/dtd/) into {root}",
                               ZSCL_OFFICIAL + ": labels/train1.txt / test1.txt", 47, {"compare_names": True}),
            "coop": _coop_json("dtd", "images", "split_zhou_DescribableTextures.json",
                               "extract dtd-r1.0.1.tar.gz (https://www.robots.ox.ac.uk/~vgg/data/dtd/) into {root}", 47,
                               "DescribableTextures"),
        },
    ),
    DatasetSpec(
        "EuroSAT", "eurosat.json", aliases=("euro_sat",), mtil_name="EuroSAT", description="EuroSAT RGB land use",
        layouts={
            "zscl": LayoutSpec(f"{Z}:read_eurosat", ("eurosat",), ("2750",),
                               "extract EuroSAT.zip (RGB, https://github.com/phelber/EuroSAT) into {root}/eurosat", ZSCL_RANDOM, 10),
            "coop": _coop_json("eurosat", "2750", "split_zhou_EuroSAT.json",
                               "extract EuroSAT.zip (RGB, https://github.com/phelber/EuroSAT) into {root}/eurosat", 10, "EuroSAT"),
        },
    ),
    DatasetSpec(
        "Flowers102", "flowers102.json", aliases=("Flowers", "OxfordFlowers", "oxford_flowers", "flowers-102"),
        mtil_name="Flowers", description="Oxford 102 Flowers",
        layouts={
            "zscl": LayoutSpec(f"{Z}:read_flowers102", ("flowers-102",), ("jpg", "imagelabels.mat", "setid.mat"),
                               "put 102flowers.tgz (extracted: jpg/), imagelabels.mat and setid.mat from "
                               "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ into {root}/flowers-102",
                               ZSCL_OFFICIAL + ": setid.mat trnid / tstid", 102),
            "coop": _coop_json("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
                               "put 102flowers.tgz (extracted: jpg/) and imagelabels.mat from "
                               "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ into {root}/oxford_flowers", 102, "OxfordFlowers"),
        },
    ),
    DatasetSpec(
        "Food101", "food101.json", aliases=("Food", "food-101"), mtil_name="Food", description="Food-101",
        layouts={
            "zscl": LayoutSpec(f"{Z}:read_food101", ("food-101",), ("images", "meta/train.json", "meta/test.json"),
                               "extract food-101.tar.gz (https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/) into {root}",
                               ZSCL_OFFICIAL + ": meta/train.json / test.json", 101, {"compare_names": True}),
            "coop": _coop_json("food-101", "images", "split_zhou_Food101.json",
                               "extract food-101.tar.gz (https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/) into {root}",
                               101, "Food101"),
        },
    ),
    DatasetSpec(
        "MNIST", "mnist.json", aliases=(), mtil_name="MNIST", description="MNIST digits",
        layouts={
            "zscl": LayoutSpec(f"{Z}:read_mnist", ("MNIST/raw",),
                               tuple(f"{n}|{n}.gz" for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
                               "put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                               "t10k-labels-idx1-ubyte (.gz or extracted; http://yann.lecun.com/exdb/mnist/ or torchvision's "
                               "mirror) into {root}/MNIST/raw", ZSCL_OFFICIAL, 10),
        },
    ),
    DatasetSpec(
        "OxfordPets", "oxford_pets.json", aliases=("OxfordPet", "Pets", "oxford_pets", "oxford-iiit-pet"),
        mtil_name="OxfordPet", description="Oxford-IIIT Pets, 37 breeds",
        layouts={
            "zscl": LayoutSpec(f"{Z}:read_oxford_pets", ("oxford-iiit-pet",), ("images", "annotations/trainval.txt", "annotations/test.txt"),
                               "extract images.tar.gz and annotations.tar.gz (https://www.robots.ox.ac.uk/~vgg/data/pets/) "
                               "into {root}/oxford-iiit-pet", ZSCL_OFFICIAL + ": annotations/trainval.txt / test.txt", 37,
                               {"compare_names": True}),
            "coop": _coop_json("oxford_pets", "images", "split_zhou_OxfordPets.json",
                               "extract images.tar.gz and annotations.tar.gz (https://www.robots.ox.ac.uk/~vgg/data/pets/) "
                               "into {root}/oxford_pets", 37, "OxfordPets"),
        },
    ),
    DatasetSpec(
        "StanfordCars", "stanford_cars.json", aliases=("Cars", "stanford_cars"), mtil_name="StanfordCars",
        description="Stanford Cars, 196 models",
        layouts={
            "zscl": LayoutSpec(f"{Z}:read_stanford_cars", ("stanford_cars",),
                               ("cars_train", "cars_test", "devkit/cars_meta.mat", "devkit/cars_train_annos.mat",
                                "cars_test_annos_withlabels.mat"),
                               "put cars_train/ and cars_test/ (cars_train.tgz, cars_test.tgz), devkit/ (car_devkit.tgz) and "
                               "cars_test_annos_withlabels.mat of the Stanford Cars release (the original site is offline: use a "
                               "mirror of these files) into {root}/stanford_cars",
                               ZSCL_OFFICIAL + ": devkit annotations", 196, {"compare_names": True}),
            "coop": _coop_json("stanford_cars", "", "split_zhou_StanfordCars.json",
                               "put cars_train/, cars_test/ and devkit/ of the Stanford Cars release (mirrors only) into "
                               "{root}/stanford_cars", 196, "StanfordCars"),
        },
    ),
    DatasetSpec(
        "SUN397", "sun397.json", aliases=("sun",), mtil_name="SUN397", description="SUN397 scenes",
        layouts={
            "zscl": LayoutSpec(f"{Z}:read_sun397", ("SUN397",), ("ClassName.txt",),
                               "extract SUN397.tar.gz (https://vision.princeton.edu/projects/2010/SUN/; it holds SUN397/ClassName.txt) into {root}",
                               ZSCL_RANDOM, 397),
            "coop": _coop_json("sun397", "SUN397", "split_zhou_SUN397.json",
                               "extract SUN397.tar.gz (https://vision.princeton.edu/projects/2010/SUN/) into {root}/sun397",
                               397, "SUN397"),
        },
    ),
    DatasetSpec(
        "ImageNet", "imagenet.json", aliases=("ILSVRC2012", "imagenet-1k"), description="ImageNet-1k (ILSVRC 2012)",
        layouts={
            "coop": LayoutSpec(f"{C}:read_imagenet", ("imagenet",), ("images/train", "images/val"),
                               "put the ILSVRC2012 train and val images (https://image-net.org) into {root}/imagenet/images/train/n*/ "
                               f"and images/val/n*/, and classnames.txt ({COOP_DOC}) into {{root}}/imagenet",
                               "official train / val (val used as test, as CoOp)", 1000),
        },
    ),
    DatasetSpec(
        "UCF101", "ucf101.json", aliases=("ucf-101",), description="UCF101 actions (middle frames)",
        layouts={
            "coop": _coop_json("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json",
                               f"extract UCF-101-midframes.zip ({COOP_DOC}) into {{root}}/ucf101", 101, "UCF101"),
        },
    ),
    DatasetSpec(
        "ImageNet-V2", "imagenet_v2.json", aliases=("ImageNetV2",), description="ImageNetV2 matched-frequency (target)",
        layouts={"coop": _imagenet_variant(
            "imagenetv2", "imagenetv2-matched-frequency-format-val",
            "extract imagenetv2-matched-frequency.tar.gz (https://github.com/modestyachts/ImageNetV2) into {root}/imagenetv2",
            1000, "read_imagenet_v2")},
    ),
    DatasetSpec(
        "ImageNet-Sketch", "imagenet_sketch.json", aliases=("ImageNetSketch", "sketch"), description="ImageNet-Sketch (target)",
        layouts={"coop": _imagenet_variant(
            "imagenet-sketch", "images",
            "extract ImageNet-Sketch.zip (https://github.com/HaohanWang/ImageNet-Sketch) into {root}/imagenet-sketch and "
            "rename its sketch/ folder to images/", 1000)},
    ),
    DatasetSpec(
        "ImageNet-A", "imagenet_a.json", aliases=("ImageNetA", "imagenet-adversarial"), description="ImageNet-A (target, 200 classes)",
        layouts={"coop": _imagenet_variant(
            "imagenet-adversarial", "imagenet-a",
            "extract imagenet-a.tar (https://github.com/hendrycks/natural-adv-examples) into {root}/imagenet-adversarial", 200)},
    ),
    DatasetSpec(
        "ImageNet-R", "imagenet_r.json", aliases=("ImageNetR", "imagenet-rendition"), description="ImageNet-R (target, 200 classes)",
        layouts={"coop": _imagenet_variant(
            "imagenet-rendition", "imagenet-r",
            "extract imagenet-r.tar (https://github.com/hendrycks/imagenet-r) into {root}/imagenet-rendition", 200)},
    ),
]


class _SpecTable:
    """``SPECS.<name>`` for registry targets (``"condu_bench.datasets.catalog:SPECS.DTD"``)."""

    def __init__(self, specs: list[DatasetSpec]):
        self._by_name = {s.name: s for s in specs}

    def __getattr__(self, name: str) -> DatasetSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self):
        return iter(self._by_name.values())


SPECS = _SpecTable(_SPECS)
MTIL_DATASETS = ["Aircraft", "Caltech101", "CIFAR100", "DTD", "EuroSAT", "Flowers102", "Food101", "MNIST", "OxfordPets",
                 "StanfordCars", "SUN397"]
COOP_DATASETS = ["ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "Flowers102", "Food101", "Aircraft", "SUN397", "DTD",
                 "EuroSAT", "UCF101"]
DG_TARGETS = ["ImageNet-V2", "ImageNet-Sketch", "ImageNet-A", "ImageNet-R"]


def register_builtin_datasets(registry: Any) -> None:
    """Add every built-in spec to ``registry`` as a lazy entry; idempotent (entries already there are kept)."""
    for spec in _SPECS:
        if spec.name not in registry:
            layouts = "/".join(spec.layouts)
            registry.register_lazy(spec.name, f"{__name__}:SPECS.{spec.name}", f"{spec.description} [{layouts}]")


# Built-in specs first; plugin packages add more through the entry-point group condu_bench.datasets.
DATASETS: Registry = Registry("dataset", "condu_bench.datasets")
register_builtin_datasets(DATASETS)


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_ALIASES = {_norm(a): s.name for s in _SPECS for a in (s.name, *s.aliases, s.mtil_name or s.name)}


def canonical_name(name: str) -> str:
    """The registry name for a dataset name or alias (case, '-' and '_' ignored); unknown names pass through."""
    return _ALIASES.get(_norm(name), name)


def get_spec(name: str) -> DatasetSpec:
    """A dataset's spec by name or alias, through the ``DATASETS`` registry (did-you-mean errors for unknown names)."""
    return DATASETS.get(canonical_name(name))

"""Real-dataset registry, both layouts, splits, few-shot cache, base/novel and the data check, on tiny fake trees."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fake_trees as ft  # noqa: E402

from condu_bench.datasets.base_novel import base_novel_labels, split_half  # noqa: E402
from condu_bench.datasets.catalog import MTIL_DATASETS, SPECS, canonical_name, get_spec, register_builtin_datasets  # noqa: E402
from condu_bench.datasets.check import check_datasets, format_check  # noqa: E402
from condu_bench.datasets.fewshot import FewShotCacheError, fewshot_splits  # noqa: E402
from condu_bench.datasets.images import CorruptImageError, ImageListDataset  # noqa: E402
from condu_bench.datasets.loading import load_listing, random_split_80_20  # noqa: E402
from condu_bench.datasets.spec import DataLayoutError  # noqa: E402
from condu_bench.errors import UnknownNameError  # noqa: E402
from condu_bench.registry import Registry  # noqa: E402

ALL = ["Aircraft", "Caltech101", "CIFAR100", "DTD", "EuroSAT", "Flowers102", "Food101", "MNIST", "OxfordPets",
       "StanfordCars", "SUN397", "ImageNet", "UCF101", "ImageNet-V2", "ImageNet-Sketch", "ImageNet-A", "ImageNet-R"]


# ---------------------------------------------------------------------------------------------------- registry


def test_registry_lists_every_dataset_without_importing_torch():
    code = ("import sys; from condu_bench.registry import Registry; from condu_bench.datasets.catalog import "
            "register_builtin_datasets as r; reg = Registry('dataset'); r(reg); print(len(reg.names())); "
            "print(any(m in sys.modules for m in ('torch', 'PIL', 'numpy', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(ALL)), "False"]


def test_registration_is_idempotent_and_resolves_aliases():
    reg = Registry("dataset")
    register_builtin_datasets(reg)
    register_builtin_datasets(reg)
    assert sorted(reg.names()) == sorted(ALL)
    assert reg.get("DTD") is SPECS.DTD
    for alias, name in [("FGVCAircraft", "Aircraft"), ("flowers", "Flowers102"), ("Food", "Food101"), ("OxfordPet", "OxfordPets"),
                        ("imagenet_v2", "ImageNet-V2"), ("DescribableTextures", "DTD"), ("cifar-100", "CIFAR100")]:
        assert canonical_name(alias) == name and get_spec(alias).name == name
    with pytest.raises(UnknownNameError, match="did you mean 'EuroSAT'"):
        get_spec("EuroSATT")


@pytest.mark.parametrize("name", ALL)
def test_specs_carry_names_and_templates(name):
    spec = get_spec(name)
    assert spec.templates and all(t.count("{}") == 1 for t in spec.templates)
    assert spec.coop_template.count("{}") == 1
    for layout in spec.layouts.values():
        assert "{root}" in layout.archive and layout.num_classes > 0
        if spec.classnames is not None and name != "Caltech101":
            assert len(spec.classnames) == layout.num_classes
    if spec.classnames is not None and name != "ImageNet":  # CLIP's ImageNet list repeats 'missile' and 'sunglasses'
        assert len(set(spec.classnames)) == len(spec.classnames)


def test_reference_data_matches_the_protocol():
    assert get_spec("EuroSAT").classnames[0] == "annual crop land" and get_spec("EuroSAT").coop_template == "a centered satellite photo of {}."
    assert get_spec("Caltech101").classnames[:2] == ["off-center face", "centered face"]
    assert get_spec("OxfordPets").coop_template == "a photo of a {}, a type of pet."
    assert get_spec("UCF101").coop_template == "a photo of a person doing {}."
    assert get_spec("Food101").coop_template == "a photo of {}, a type of food."
    assert len(get_spec("ImageNet").templates) == 80 and len(get_spec("ImageNet").classnames) == 1000
    assert len(get_spec("ImageNet-A").data["imagenet_indices"]) == 200
    assert get_spec("MNIST").templates == ['a photo of the number: "{}".']
    assert get_spec("Flowers102").mtil_name == "Flowers" and get_spec("OxfordPets").mtil_name == "OxfordPet"


def test_unsupported_layouts_say_so():
    with pytest.raises(DataLayoutError, match="not part of the CoOp protocol; use layout=zscl"):
        get_spec("MNIST").layout("coop")
    with pytest.raises(DataLayoutError, match="only read from the CoOp directory layout; use layout=coop"):
        get_spec("UCF101").layout("zscl")


# ---------------------------------------------------------------------------------------------- both layouts


def _check_listing(listing, expect):
    assert len(listing.classnames) == expect.num_classes
    assert listing.counts() == expect.counts
    if expect.classnames is not None:
        assert listing.classnames == expect.classnames
    for split, ds in listing.splits.items():
        assert len(ds.targets) == len(ds) and all(0 <= t < expect.num_classes for t in ds.targets)
        for i in range(len(ds)):  # every image's colour encodes the label the fake tree gave it
            image, label = ds[i]
            assert image.mode == "RGB" and label == ds.targets[i]
            assert ft.decode_label(image, grey=listing.dataset == "MNIST") == label, (split, i)


@pytest.mark.parametrize("name", MTIL_DATASETS)
def test_zscl_layout(zscl_tree, name):
    root, expect = zscl_tree
    listing = load_listing(get_spec(name), root, "zscl")
    _check_listing(listing, expect[name])
    assert listing.layout == "zscl" and not listing.notes


@pytest.mark.parametrize("name", sorted(ft.COOP))
def test_coop_layout(coop_tree, name):
    root, expect = coop_tree
    listing = load_listing(get_spec(name), root, "coop")
    _check_listing(listing, expect[name])


def test_coop_json_labels_follow_the_file(coop_tree):
    root, _ = coop_tree
    listing = load_listing(get_spec("DTD"), root, "coop")
    entries = json.loads((root / "dtd" / "split_zhou_DescribableTextures.json").read_text())["test"]
    assert listing.splits["test"].keys() == [e[0] for e in entries]
    assert listing.splits["test"].targets == [e[1] for e in entries]
    assert listing.classnames[3] == entries[3][2].replace("_", " ")


def test_zscl_variants(tmp_path):
    ft.zscl_dtd(tmp_path / "a", nested=True)  # torchvision's DTD(download=True) nests dtd/dtd/
    assert load_listing(get_spec("DTD"), tmp_path / "a", "zscl").folder == tmp_path / "a" / "dtd" / "dtd"
    ft.zscl_mnist(tmp_path / "b", gz=True)
    assert load_listing(get_spec("MNIST"), tmp_path / "b", "zscl").counts() == {"train": 30, "test": 30}


def test_random_split_is_zscl_s_and_deterministic(zscl_tree):
    import torch

    root, _ = zscl_tree
    a = load_listing(get_spec("EuroSAT"), root, "zscl")
    b = load_listing(get_spec("EuroSAT"), root, "zscl")
    assert a.splits["train"].keys() == b.splits["train"].keys()
    assert set(a.splits["train"].keys()).isdisjoint(a.splits["test"].keys())
    train, test = random_split_80_20(40)
    ref = torch.utils.data.random_split(range(40), [32, 8], generator=torch.Generator().manual_seed(42))
    assert train == list(ref[0].indices) and test == list(ref[1].indices)
    assert len(random_split_80_20(8677)[0]) == int(0.8 * 8677)


# ---------------------------------------------------------------------------------------------------- few-shot


def test_few_shot_draws_are_seeded_and_cached(coop_tree, tmp_path):
    root, _ = coop_tree
    splits = load_listing(get_spec("Caltech101"), root, "coop").splits
    a, info_a = fewshot_splits(splits, "Caltech101", "coop", 2, seed=1, cache_dir=tmp_path)
    assert not info_a["cache_reused"] and Path(info_a["cache"]).is_file()
    assert set(Counter(a["train"].targets).values()) == {2} and len(a["train"]) == 200
    assert set(Counter(a["val"].targets).values()) == {1}  # min(K, 4), capped by the one val image per class
    b, info_b = fewshot_splits(splits, "Caltech101", "coop", 2, seed=1, cache_dir=tmp_path)
    assert info_b["cache_reused"] and b["train"].keys() == a["train"].keys()
    fresh, _ = fewshot_splits(splits, "Caltech101", "coop", 2, seed=1, cache_dir=False)
    assert fresh["train"].keys() == a["train"].keys()  # the cache holds exactly the seeded draw
    c, _ = fewshot_splits(splits, "Caltech101", "coop", 2, seed=2, cache_dir=tmp_path)
    assert c["train"].keys() != a["train"].keys()
    d, _ = fewshot_splits(splits, "Caltech101", "coop", 1, seed=1, cache_dir=tmp_path)
    assert len(d["train"]) == 100 and len(list(tmp_path.iterdir())) == 3


def test_few_shot_val_is_capped_at_four(tmp_path):
    ft.coop_json(tmp_path, "EuroSAT", {"train": 20, "val": 6, "test": 1})
    splits = load_listing(get_spec("EuroSAT"), tmp_path, "coop").splits
    out, _ = fewshot_splits(splits, "EuroSAT", "coop", 16, seed=1, cache_dir=False)
    assert set(Counter(out["train"].targets).values()) == {16} and set(Counter(out["val"].targets).values()) == {4}


def test_stale_few_shot_cache_is_refused(coop_tree, tmp_path):
    root, _ = coop_tree
    splits = load_listing(get_spec("DTD"), root, "coop").splits
    _, info = fewshot_splits(splits, "DTD", "coop", 2, seed=3, cache_dir=tmp_path)
    path = Path(info["cache"])
    record = json.loads(path.read_text())
    record["train"][0][1] = (record["train"][0][1] + 1) % 47
    path.write_text(json.dumps(record))
    with pytest.raises(FewShotCacheError, match="delete the file"):
        fewshot_splits(splits, "DTD", "coop", 2, seed=3, cache_dir=tmp_path)
    changed = {"train": splits["train"].subset(range(len(splits["train"]) - 1)), "val": splits["val"]}
    path.unlink()
    fewshot_splits(splits, "DTD", "coop", 2, seed=3, cache_dir=tmp_path)
    with pytest.raises(FewShotCacheError, match="listing changed"):
        fewshot_splits(changed, "DTD", "coop", 2, seed=3, cache_dir=tmp_path)


def test_array_datasets_few_shot(zscl_tree, tmp_path):
    root, _ = zscl_tree
    splits = load_listing(get_spec("MNIST"), root, "zscl").splits
    out, _ = fewshot_splits(splits, "MNIST", "zscl", 2, seed=0, cache_dir=tmp_path)
    again, info = fewshot_splits(splits, "MNIST", "zscl", 2, seed=0, cache_dir=tmp_path)
    assert info["cache_reused"] and out["train"].keys() == again["train"].keys() and "val" not in out
    image, label = out["train"][0]
    assert image.size == (28, 28) and label == out["train"].targets[0]


# --------------------------------------------------------------------------------------------------- base/novel


def test_base_novel_split():
    assert base_novel_labels(5) == ([0, 1, 2], [3, 4])
    assert base_novel_labels(100) == (list(range(50)), list(range(50, 100)))
    ds = ImageListDataset("/nowhere", [(f"{i}.jpg", i % 5) for i in range(10)])
    names = list("abcde")
    base, base_names = split_half(ds, names, "base")
    novel, novel_names = split_half(ds, names, "novel")
    assert base_names == ["a", "b", "c"] and novel_names == ["d", "e"]
    assert sorted(set(base.targets)) == [0, 1, 2] and sorted(set(novel.targets)) == [0, 1]
    assert novel.keys()[0] == "3.jpg" and novel.targets[0] == 0


# ----------------------------------------------------------------------------------------------- malformed data


def test_missing_folder_names_path_and_archive(tmp_path):
    with pytest.raises(DataLayoutError, match=r"DTD: missing .*dtd/images — extract dtd-r1.0.1.tar.gz .* into ") as err:
        load_listing(get_spec("DTD"), tmp_path, "zscl")
    assert err.value.kind == "missing"
    (tmp_path / "dtd").mkdir()
    (tmp_path / "dtd" / "images").mkdir()
    with pytest.raises(DataLayoutError, match=r"missing .*labels/train1.txt \(also missing: labels/test1.txt\)"):
        load_listing(get_spec("DTD"), tmp_path, "zscl")
    results = check_datasets(tmp_path, "zscl", ["DTD", "Flowers102"])
    assert [r.status for r in results] == ["missing", "missing"] and not any(r.ok for r in results)
    assert "flowers-102" in results[1].message and "setid.mat" in results[1].message


def test_check_reports_found_datasets(zscl_tree, coop_tree):
    root, expect = zscl_tree
    results = check_datasets(root, "zscl")
    assert [r.dataset for r in results] == MTIL_DATASETS and all(r.ok for r in results)
    text = format_check(results)
    assert "DTD: found" in text and "47 classes; train 94, test 94 images" in text and "11 of 11 datasets usable" in text
    coop, _ = coop_tree
    results = {r.dataset: r for r in check_datasets(coop, "coop")}
    assert all(r.ok for r in results.values()) and results["ImageNet-A"].num_classes == 200
    unsupported = check_datasets(coop, "coop", ["MNIST"])[0]
    assert unsupported.status == "unsupported" and not unsupported.ok


def test_split_file_naming_missing_images(tmp_path):
    ft.coop_json(tmp_path, "EuroSAT")
    gone = tmp_path / "eurosat" / "2750" / "eurosat_class_003" / "test_0.jpg"
    gone.unlink()
    (result,) = check_datasets(tmp_path, "coop", ["EuroSAT"])
    assert result.status == "malformed" and str(gone) in result.problems
    assert "1 test images named in" in result.message and "split_zhou_EuroSAT.json" in result.message


def test_wrong_class_count(tmp_path):
    ft.zscl_dtd(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "dtd" / "images" / "zigzagged")
    for f in ("train1.txt", "test1.txt"):
        path = tmp_path / "dtd" / "labels" / f
        path.write_text("\n".join(l for l in path.read_text().splitlines() if not l.startswith("zigzagged")))
    (result,) = check_datasets(tmp_path, "zscl", ["DTD"])
    assert result.status == "malformed" and "has 46 classes, the registry expects 47" in result.message


def test_inconsistent_and_out_of_range_labels(tmp_path):
    ft.coop_json(tmp_path, "EuroSAT")
    path = tmp_path / "eurosat" / "split_zhou_EuroSAT.json"
    data = json.loads(path.read_text())
    data["train"][0][2] = "eurosat_class_009"  # a class name under two labels
    path.write_text(json.dumps(data))
    with pytest.raises(DataLayoutError, match="inconsistent labels"):
        load_listing(get_spec("EuroSAT"), tmp_path, "coop")
    ft.zscl_oxford_pets(tmp_path / "pets")
    ann = tmp_path / "pets" / "oxford-iiit-pet" / "annotations" / "test.txt"
    ann.write_text(ann.read_text() + "Yorkshire_Terrier_999 40 2 25\n")
    ft.write_image(tmp_path / "pets" / "oxford-iiit-pet" / "images" / "Yorkshire_Terrier_999.jpg")
    (result,) = check_datasets(tmp_path / "pets", "zscl", ["OxfordPets"])
    assert result.status == "malformed" and "label 40 out of range 1..37" in result.message
    assert result.problems == ["Yorkshire_Terrier_999 40 2 25"]


def test_unknown_class_in_split_file(tmp_path):
    ft.zscl_aircraft(tmp_path, per_class=1)
    path = tmp_path / "fgvc-aircraft-2013b" / "data" / "images_variant_test.txt"
    path.write_text(path.read_text() + "999 Concorde\n")
    with pytest.raises(DataLayoutError, match="variants missing from variants.txt, e.g. '999 Concorde'"):
        load_listing(get_spec("Aircraft"), tmp_path, "zscl")


def test_truncated_image_is_named_or_skipped(tmp_path):
    ft.coop_json(tmp_path, "EuroSAT")
    listing = load_listing(get_spec("EuroSAT"), tmp_path, "coop")
    test = listing.splits["test"]
    ft.truncate_image(test.path(2))
    with pytest.raises(CorruptImageError, match=str(test.path(2))):
        test[2]
    kept = test.drop_unreadable()
    assert len(kept) == len(test) - 1 and kept.skipped[0][0] == str(test.path(2))
    (result,) = check_datasets(tmp_path, "coop", ["EuroSAT"], decode=True)
    assert result.status == "malformed" and "cannot be decoded" in result.message
    assert check_datasets(tmp_path, "coop", ["EuroSAT"])[0].ok  # without decoding, only existence is checked


def test_check_reports_unreadable_contents_but_lets_permission_errors_through(tmp_path, monkeypatch):
    from condu_bench.datasets import loading
    from condu_bench.datasets.check import check_one

    def fail_with(exc):
        def load(*args, **kwargs):
            raise exc
        return load

    monkeypatch.setattr(loading, "load_listing", fail_with(OSError("not a MATLAB file")))
    result = check_one(get_spec("Flowers102"), tmp_path, "zscl")
    assert result.status == "malformed" and "not a MATLAB file" in result.message
    monkeypatch.setattr(loading, "load_listing", fail_with(PermissionError(13, "Permission denied")))
    with pytest.raises(PermissionError):
        check_one(get_spec("Flowers102"), tmp_path, "zscl")

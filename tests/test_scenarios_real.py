"""Scenario builders over real-data layouts (fake trees): MTIL orders, few-shot sizes, base-to-novel, transfer."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fake_trees as ft  # noqa: E402

from condu_bench.errors import UserError  # noqa: E402
from condu_bench.scenarios.real import (  # noqa: E402
    build_base_to_novel,
    build_cross_dataset,
    build_domain_generalisation,
    build_mtil,
)

ORDER_I = ["Aircraft", "Caltech101", "CIFAR100", "DTD", "EuroSAT", "Flowers", "Food", "MNIST", "OxfordPet", "StanfordCars", "SUN397"]
ORDER_II = ["StanfordCars", "Food", "MNIST", "OxfordPet", "Flowers", "SUN397", "Aircraft", "Caltech101", "DTD", "EuroSAT", "CIFAR100"]


def test_mtil_orders_follow_the_protocol(zscl_tree):
    root, expect = zscl_tree
    one = build_mtil({"order": "I"}, seed=0, data_root=root)
    two = build_mtil({"order": "II"}, seed=0, data_root=root)
    assert [t.name for t in one.streams[0].train] == ORDER_I
    assert [t.name for t in two.streams[0].train] == ORDER_II
    assert one.protocol == "mtil" and one.split_conventions == ["zscl"] and one.streams[0].evaluate == one.streams[0].train
    dtd = one.streams[0].train[3]
    assert len(dtd.train) == expect["DTD"].counts["train"] and len(dtd.test) == expect["DTD"].counts["test"]
    assert dtd.templates[0] == "a photo of a {} texture." and dtd.info["layout"] == "zscl" and dtd.info["seed"] == 0
    json.dumps(one.info)
    json.dumps([t.info for t in one.streams[0].train])  # recorded with the results
    custom = build_mtil({"order": "dtd,flowers", "task_agnostic": True}, seed=0, data_root=root)
    assert [t.name for t in custom.streams[0].train] == ["DTD", "Flowers"] and custom.task_agnostic


def test_few_shot_mtil_sizes(zscl_tree, tmp_path):
    root, expect = zscl_tree
    scenario = build_mtil({"order": ["EuroSAT", "StanfordCars", "MNIST"], "shots": 2, "fewshot_cache": str(tmp_path)},
                          seed=1, data_root=root)
    eurosat, cars, mnist = scenario.streams[0].train
    from condu_bench.datasets.catalog import get_spec
    from condu_bench.datasets.loading import load_listing

    full = Counter(load_listing(get_spec("EuroSAT"), root, "zscl").splits["train"].targets)  # 80/20 split: 1..4 per class
    assert Counter(eurosat.train.targets) == {c: min(2, n) for c, n in full.items()}
    assert len(cars.train) == 16  # 8 classes with images, 2 each
    assert len(mnist.train) == 20 and len(mnist.test) == expect["MNIST"].counts["test"]
    assert eurosat.info["shots"] == 2 and eurosat.info["cache_reused"] is False
    again = build_mtil({"order": ["EuroSAT"], "shots": True, "fewshot_cache": str(tmp_path)}, seed=1, data_root=root)
    assert again.streams[0].train[0].info["shots"] == 5 and scenario.name == "mtil_custom_fewshot"


def test_mtil_on_coop_splits_falls_back_for_mnist_and_cifar(coop_tree):
    root, expect = coop_tree
    scenario = build_mtil({"order": "I", "layout": "coop"}, seed=0, data_root=root)
    tasks = {t.name: t for t in scenario.streams[0].train}
    assert tasks["DTD"].split_convention == "coop" and len(tasks["DTD"].train) == expect["DTD"].counts["train"]
    assert tasks["MNIST"].split_convention == "zscl" and tasks["CIFAR100"].split_convention == "zscl"
    assert scenario.info["layout_fallbacks"] == {"CIFAR100": "zscl", "MNIST": "zscl"}
    assert scenario.split_conventions == ["coop", "zscl"]


def test_base_to_novel_streams(coop_tree, tmp_path):
    root, expect = coop_tree
    scenario = build_base_to_novel({"shots": 2, "fewshot_cache": str(tmp_path)}, seed=1, data_root=root)
    assert [s.name for s in scenario.streams] == ["ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "Flowers102", "Food101",
                                                  "Aircraft", "SUN397", "DTD", "EuroSAT", "UCF101"]
    by_name = {s.name: s for s in scenario.streams}
    dtd = by_name["DTD"]
    (train,) = dtd.train
    base, novel = dtd.evaluate
    assert train is base and base.name == "DTD/base" and novel.name == "DTD/novel" and novel.train is None
    assert base.num_classes == 24 and novel.num_classes == 23
    assert base.classnames + novel.classnames == expect["DTD"].classnames
    assert len(base.train) == 24 * 2 and set(base.train.targets) == set(range(24))
    assert len(base.test) == 24 and sorted(set(novel.test.targets)) == list(range(23))
    assert base.templates == ["a photo of a {}, a type of texture."] and base.split_convention == "coop"
    assert by_name["Caltech101"].evaluate[0].num_classes == 50 and by_name["ImageNet"].evaluate[1].num_classes == 500
    # the draw was made over all classes before the split, and cached once per dataset
    assert len(list(tmp_path.iterdir())) == 11
    again = build_base_to_novel({"datasets": ["DTD"], "shots": 2, "fewshot_cache": str(tmp_path)}, seed=1, data_root=root)
    assert again.streams[0].train[0].train.keys() == base.train.keys()
    assert again.streams[0].train[0].info["cache_reused"]


def test_cross_dataset_and_domain_generalisation(coop_tree, tmp_path):
    root, _ = coop_tree
    cross = build_cross_dataset({"shots": 1, "fewshot_cache": str(tmp_path)}, seed=1, data_root=root)
    (stream,) = cross.streams
    assert [t.name for t in stream.train] == ["ImageNet"] and len(stream.train[0].train) == 1000
    assert [t.name for t in stream.evaluate] == ["ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "Flowers102", "Food101",
                                                 "Aircraft", "SUN397", "DTD", "EuroSAT", "UCF101"]
    assert all(t.train is None for t in stream.evaluate[1:]) and cross.info["targets"][0] == "Caltech101"
    dg = build_domain_generalisation({"shots": 1, "fewshot_cache": str(tmp_path)}, seed=1, data_root=root)
    names = [t.name for t in dg.streams[0].evaluate]
    assert names == ["ImageNet", "ImageNet-V2", "ImageNet-Sketch", "ImageNet-A", "ImageNet-R"]
    a = dg.streams[0].evaluate[3]
    assert a.num_classes == 200 and a.templates == ["a photo of a {}."] and dg.protocol == "domain_generalisation"
    assert dg.streams[0].train[0].info["cache_reused"]  # same ImageNet draw as the cross-dataset run


def test_bad_options_and_missing_data(zscl_tree, tmp_path):
    root, _ = zscl_tree
    with pytest.raises(UserError, match="give data_root"):
        build_mtil({}, seed=0, data_root=None)
    with pytest.raises(UserError, match="unknown key 'shot'"):
        build_mtil({"shot": 5}, seed=0, data_root=root)
    with pytest.raises(UserError, match="did you mean 'DTD'"):
        build_mtil({"order": ["DTDD"]}, seed=0, data_root=root)
    with pytest.raises(UserError, match="Aircraft: missing .*fgvc-aircraft-2013b"):
        build_mtil({"order": "I"}, seed=0, data_root=tmp_path)
    with pytest.raises(UserError, match="UCF101 is only read from the CoOp directory layout"):
        build_base_to_novel({"datasets": ["UCF101"], "layout": "zscl"}, seed=0, data_root=root)


def test_skip_corrupt_is_recorded(tmp_path):
    ft.zscl_eurosat(tmp_path)
    ft.truncate_image(tmp_path / "eurosat" / "2750" / "Forest" / "Forest_2.jpg")
    scenario = build_mtil({"order": ["EuroSAT"], "skip_corrupt": True}, seed=0, data_root=tmp_path)
    task = scenario.streams[0].train[0]
    skipped = {**task.info["skipped"].get("train", {}), **task.info["skipped"].get("test", {})}
    assert skipped["count"] == 1 and skipped["files"][0].endswith("Forest/Forest_2.jpg")
    assert len(task.train) + len(task.test) == 39


@pytest.mark.parametrize("order, shots, table", [("I", None, "mtil_order1.csv"), ("II", None, "mtil_order2.csv"),
                                                 ("I", 2, "mtil_fewshot.csv"), ("II", 2, None)])
def test_each_mtil_scenario_is_shown_next_to_its_own_published_table(zscl_tree, tmp_path, order, shots, table):
    from condu_bench.reporting.tables import published_csv_for

    root, _ = zscl_tree
    scenario = build_mtil({"order": order, "shots": shots, "fewshot_cache": str(tmp_path)}, seed=0, data_root=root)
    found = published_csv_for(scenario.name, scenario.protocol, Path(__file__).resolve().parents[1] / "results" / "published")
    assert (found.name if found is not None else None) == table, scenario.name

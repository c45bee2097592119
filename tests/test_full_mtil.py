"""`condu-bench bench --full-mtil`: the generated tree is what the zscl readers read at the documented sizes, it is
cached (built once, never half-built), and a whole order-I run reports where its time went."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from condu_bench.perf import full_mtil

SCALE = 0.001
# real test-set size x 0.001, rounded half up, at least 1 (written out: not computed by the code under test)
EXPECTED_TEST = {"Aircraft": 3, "Caltech101": 2, "CIFAR100": 10, "DTD": 2, "EuroSAT": 5, "Flowers102": 6, "Food101": 25,
                 "MNIST": 10, "OxfordPets": 4, "StanfordCars": 8, "SUN397": 22}
CLASSES = {"Aircraft": 100, "Caltech101": 101, "CIFAR100": 100, "DTD": 47, "EuroSAT": 10, "Flowers102": 102, "Food101": 101,
           "MNIST": 10, "OxfordPets": 37, "StanfordCars": 196, "SUN397": 397}
RANDOM_SPLITS = {"Caltech101", "EuroSAT", "SUN397"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("full-mtil-cache")


@pytest.fixture(scope="module")
def tree(cache):
    path, manifest, built = full_mtil.ensure_tree(SCALE, cache_dir=cache, workers=2, log=lambda _: None)
    assert built and path == cache / f"full-mtil-zscl-v{full_mtil.VERSION}-scale{SCALE}"
    return path, manifest


def test_real_test_set_sizes():
    assert sum(full_mtil.TEST_SIZES.values()) == 97209
    assert {n: full_mtil.test_size(n, 1.0) for n in ("Food101", "SUN397", "Caltech101")} == {
        "Food101": 25250, "SUN397": 21751, "Caltech101": 1736}
    # the random splits: the whole datasets' sizes (Caltech101 without background, EuroSAT, SUN397) give these
    assert [n - int(0.8 * n) for n in (8677, 27000, 108754)] == [full_mtil.TEST_SIZES[d] for d in ("Caltech101", "EuroSAT", "SUN397")]
    for n_test in (1, 2, 5, 22, 1736, 21751):
        total = full_mtil.random_split_total(n_test)
        assert total - int(0.8 * total) == n_test and (total - 1) - int(0.8 * (total - 1)) < n_test


def test_the_zscl_readers_find_the_scaled_test_sets_and_every_class(tree):
    from condu_bench.datasets.catalog import get_spec
    from condu_bench.datasets.loading import load_listing

    root, manifest = tree
    for name in full_mtil.ORDER_I:
        listing = load_listing(get_spec(name), root, "zscl")
        counts = listing.counts()
        assert counts["test"] == EXPECTED_TEST[name], name
        assert len(listing.classnames) == CLASSES[name], name
        assert listing.notes == [], (name, listing.notes)  # class names on disk agree with the registry's
        targets = list(listing.splits["test"].targets)
        if name in RANDOM_SPLITS:
            n = counts["train"] + counts["test"]  # the 80/20 split of every file found
            assert n - int(0.8 * n) == counts["test"] and counts["train"] == manifest["datasets"][name]["train"]
        else:  # official lists: test labels round-robin over the classes, a few train images of every class
            assert targets == [j % CLASSES[name] for j in range(EXPECTED_TEST[name])], name
            assert sorted(set(listing.splits["train"].targets)) == list(range(CLASSES[name])), name
        assert manifest["datasets"][name]["test"] == EXPECTED_TEST[name]


def test_images_have_the_real_formats_and_are_seeded(tree, tmp_path):
    from PIL import Image

    from condu_bench.baselines.zscl import read_sentences
    from condu_bench.datasets.catalog import get_spec
    from condu_bench.datasets.loading import load_listing

    root, manifest = tree
    sizes = {}
    for name in ("Aircraft", "EuroSAT", "SUN397", "CIFAR100", "MNIST"):
        image = load_listing(get_spec(name), root, "zscl").splits["test"][0][0]
        sizes[name] = image.size
    assert sizes == {"Aircraft": (500, 375), "EuroSAT": (64, 64), "SUN397": (500, 375), "CIFAR100": (32, 32), "MNIST": (28, 28)}
    cifar = load_listing(get_spec("CIFAR100"), root, "zscl").splits["test"]
    assert np.asarray(cifar[0][0]).std() > 10  # photo-like content, not a flat fill

    # ZSCL's reference input where benchmarks/mtil_order1.yaml looks for it
    ref = manifest["datasets"]["zscl_reference"]
    assert len(list((root / "imagenet" / "train").rglob("*.JPEG"))) == ref["images"] == 1
    assert len(read_sentences(root / full_mtil.REF_SENTENCES_FILE)) == ref["sentences"] == 16

    # every JPEG is a function of its seed: writing the planned job again gives the same bytes
    plan = full_mtil.TreePlan(tmp_path / "again", SCALE)
    full_mtil.WRITERS["Food101"](plan)
    job = plan.photos[-1]
    os.makedirs(os.path.dirname(job[0]))
    full_mtil._write_jpeg(job)
    original = root / os.path.relpath(job[0], tmp_path / "again")
    assert original.read_bytes() == open(job[0], "rb").read()
    with Image.open(original) as image:
        assert image.format == "JPEG"


def test_a_second_call_reuses_the_tree_without_writing(tree, cache):
    root, manifest = tree
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    again, manifest_again, built = full_mtil.ensure_tree(SCALE, cache_dir=cache, workers=2, log=lambda _: None)
    assert (again, manifest_again, built) == (root, manifest, False)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    assert [p.name for p in cache.iterdir()] == [root.name]  # no building folder left behind


def test_a_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(plan, workers, log):
        raise OSError("disk full")

    monkeypatch.setattr(full_mtil, "_write_all", broken)
    with pytest.raises(OSError, match="disk full"):
        full_mtil.ensure_tree(SCALE, cache_dir=tmp_path, workers=1, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_without_manifest_is_refused(tmp_path):
    from condu_bench.errors import UserError

    full_mtil.tree_path(SCALE, tmp_path).mkdir(parents=True)
    with pytest.raises(UserError, match="no full_mtil.json"):
        full_mtil.ensure_tree(SCALE, cache_dir=tmp_path, workers=1, log=lambda _: None)


def test_options_of_full_mtil_need_it(capsys):
    from condu_bench.cli import main

    assert main(["bench", "--scale", "0.5"]) != 0
    assert "--scale only apply with --full-mtil" in capsys.readouterr().err
    assert main(["bench", "--full-mtil", "--quick"]) != 0
    assert "--quick do not apply to --full-mtil" in capsys.readouterr().err


def test_bench_full_mtil_times_a_whole_order_one_run(tree, cache, tmp_path, monkeypatch, capsys):
    from condu_bench.cli import main

    root, _ = tree
    monkeypatch.setenv("CONDU_BENCH_CACHE", str(cache))  # the tree the fixture built is the one reused
    out_file = tmp_path / "full.json"
    micro = ["model.arch=condu-micro-vit", "train.iterations=1", "train.batch_size=4", "train.warmup_steps=1",
             "progress=false", "num_workers=0", "scenario.options.templates=coop"]  # one template: seconds, not minutes
    assert main(["bench", "--full-mtil", "--scale", str(SCALE), "--methods", "finetune", "--json", str(out_file), *micro]) == 0
    printed = capsys.readouterr().out
    out = json.loads(out_file.read_text())
    assert out["tree"] == str(root) and out["generated_now"] is False
    assert out["test_images"] == EXPECTED_TEST
    r = out["methods"]["finetune"]
    assert r["tasks"] == 11 and r["iterations"] == 11 and r["batch_size"] == 4 and r["model"] == "condu-micro-vit"
    assert r["train_seconds"] > 0 and r["eval_seconds"] > 0
    assert r["train_seconds"] >= r["data_wait_seconds"] >= 0
    assert r["wall_seconds"] >= r["train_seconds"] + r["eval_seconds"]
    assert r["other_seconds"] == pytest.approx(r["wall_seconds"] - r["train_seconds"] - r["eval_seconds"], abs=0.01)
    assert r["train_images_per_s"] == pytest.approx(11 * 4 / r["train_seconds"], rel=0.01)
    assert r["eval_images_per_row"] == sum(EXPECTED_TEST.values()) and r["eval_images_per_s"] > 0
    row = next(line for line in printed.splitlines() if line.startswith("| finetune |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[2]) == pytest.approx(r["train_seconds"], abs=0.06) and cells[6] == "11"

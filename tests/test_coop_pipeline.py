"""The CoOp data pipeline: Dassl's few-shot draw, CoOp's shot_K-seed_S.pkl files, CoOp's train augmentation, templates.

The expected draws are computed here by replaying Dassl's ``generate_fewshot_dataset`` step by step on Python's
global ``random`` (as CoOp's ``train.py`` seeds it), independently of the harness's implementation.
"""

from __future__ import annotations

import json
import pickle
import random
import sys
import types
from collections import defaultdict
from pathlib import Path

import pytest

from condu_bench.errors import UserError

SEED, K = 2, 5
# EuroSAT (10 classes) in the coop layout, with a hand-made split file: labels interleaved (first appearance is
# not sorted order), uneven class sizes, class 7 with fewer than K train images, class 3 with exactly K.
TRAIN_COUNTS = {4: 9, 0: 7, 7: 3, 1: 6, 3: 5, 9: 8, 2: 6, 5: 7, 8: 6, 6: 10}
VAL_COUNTS = {c: 2 + c % 5 for c in range(10)}  # 2..6: some classes below min(K, 4) = 4


def names(c: int) -> str:
    return f"Class_{c}"


def entries(split: str, counts: dict[int, int]) -> list[list]:
    pools = {c: [f"{names(c)}/{split}_{c}_{j}.jpg" for j in range(n)] for c, n in counts.items()}
    out, rng = [], random.Random(99)  # a fixed interleaving, independent of everything drawn later
    while any(pools.values()):
        c = rng.choice([c for c, pool in pools.items() if pool])
        out.append([pools[c].pop(0), c, names(c)])
    return out


@pytest.fixture(scope="module")
def eurosat_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coop_pipeline")
    folder = root / "eurosat"
    (folder / "2750").mkdir(parents=True)  # the draw never opens an image
    split = {"train": entries("train", TRAIN_COUNTS), "val": entries("val", VAL_COUNTS),
             "test": [[f"{names(c)}/test_{c}.jpg", c, names(c)] for c in range(10)]}
    (folder / "split_zhou_EuroSAT.json").write_text(json.dumps(split))
    return root, split


@pytest.fixture
def global_random():
    state = random.getstate()
    yield
    random.setstate(state)


def dassl_by_hand(split: dict, seed: int, shots: int) -> dict[str, list[str]]:
    """CoOp train.py: set_random_seed(seed); then the dataset's generate_fewshot_dataset for train, then val."""
    random.seed(seed)
    out = {}
    for name, k in (("train", shots), ("val", min(shots, 4))):
        tracker = defaultdict(list)  # Dassl split_dataset_by_label
        for item in split[name]:
            tracker[item[1]].append(item)
        dataset = []
        for _label, items in tracker.items():
            if len(items) >= k:
                dataset.extend(random.sample(items, k))
            else:
                dataset.extend(items)  # repeat=False
        out[name] = [item[0] for item in dataset]
    return out


def listing(root):
    from condu_bench.datasets.catalog import get_spec
    from condu_bench.datasets.loading import load_listing

    return load_listing(get_spec("EuroSAT"), root, "coop")


def test_dassl_draw_reproduces_a_hand_made_dassl_draw(eurosat_root, global_random, tmp_path):
    from condu_bench.datasets.fewshot import fewshot_splits

    root, split = eurosat_root
    expected = dassl_by_hand(split, SEED, K)
    splits, info = fewshot_splits(listing(root).splits, "EuroSAT", "coop", K, SEED, tmp_path, draw_name="dassl")
    assert splits["train"].keys() == expected["train"]  # same items, same order (the pkl's list)
    assert splits["val"].keys() == expected["val"]  # min(K, 4), continuing the train draw's stream
    assert info["fewshot_draw"] == "dassl" and not info["cache_reused"]
    counts = defaultdict(int)
    for label in splits["train"].targets:
        counts[label] += 1
    assert counts[7] == 3 and counts[3] == K and all(counts[c] == K for c in TRAIN_COUNTS if c != 7)
    # the val draw really continues the stream: drawn from a fresh generator it differs
    random.seed(SEED)
    fresh = dassl_by_hand({"train": [], "val": split["val"]}, SEED, K)["val"]
    assert fresh != expected["val"]
    again, info = fewshot_splits(listing(root).splits, "EuroSAT", "coop", K, SEED, tmp_path, draw_name="dassl")
    assert info["cache_reused"] and again["train"].keys() == expected["train"] and again["val"].keys() == expected["val"]


def test_draw_choice_changes_the_cache_key(eurosat_root, tmp_path):
    from condu_bench.datasets.fewshot import FewShotCacheError, cache_path, fewshot_splits

    root, _ = eurosat_root
    assert cache_path(tmp_path, "EuroSAT", "coop", K, SEED, "dassl") != cache_path(tmp_path, "EuroSAT", "coop", K, SEED, "condu")
    assert cache_path(tmp_path, "EuroSAT", "coop", K, SEED).name == f"EuroSAT_coop_{K}shot_seed{SEED}.json"  # as before
    condu, info_c = fewshot_splits(listing(root).splits, "EuroSAT", "coop", K, SEED, tmp_path, draw_name="condu")
    dassl, info_d = fewshot_splits(listing(root).splits, "EuroSAT", "coop", K, SEED, tmp_path, draw_name="dassl")
    assert info_c["cache"] != info_d["cache"] and not info_d["cache_reused"]
    assert condu["train"].keys() == sorted(condu["train"].keys(), key=listing(root).splits["train"].keys().index)
    assert set(condu["train"].keys()) != set(dassl["train"].keys())
    # a cache file renamed to the other draw's key is refused, not silently reused
    Path(info_c["cache"]).replace(info_d["cache"])
    with pytest.raises(FewShotCacheError, match="draw is 'condu', expected 'dassl'"):
        fewshot_splits(listing(root).splits, "EuroSAT", "coop", K, SEED, tmp_path, draw_name="dassl")
    with pytest.raises(UserError, match="fewshot_draw must be one of dassl, condu"):
        fewshot_splits(listing(root).splits, "EuroSAT", "coop", K, SEED, False, draw_name="coop")


def test_scenarios_default_to_dassl_on_the_coop_layout(eurosat_root, global_random, tmp_path):
    from condu_bench.scenarios.real import build_base_to_novel, build_mtil, hashed_options

    root, split = eurosat_root
    expected = dassl_by_hand(split, SEED, K)
    scenario = build_base_to_novel({"datasets": ["EuroSAT"], "shots": K, "fewshot_cache": str(tmp_path)}, SEED, root)
    base = scenario.streams[0].train[0]
    labels = dict((rel, c) for rel, c, _ in split["train"] + split["val"])
    assert base.train.keys() == [r for r in expected["train"] if labels[r] < 5]  # base half = labels 0..4
    assert base.val.keys() == [r for r in expected["val"] if labels[r] < 5]
    assert base.info["fewshot_draw"] == "dassl" and scenario.info["fewshot_draw"] == "dassl"
    condu = build_base_to_novel({"datasets": ["EuroSAT"], "shots": K, "fewshot_cache": str(tmp_path),
                                 "fewshot_draw": "condu"}, SEED, root)
    assert condu.streams[0].train[0].info["fewshot_draw"] == "condu"
    mtil = build_mtil({"order": ["EuroSAT"], "layout": "coop", "shots": K, "fewshot_cache": str(tmp_path)}, SEED, root)
    assert mtil.streams[0].train[0].train.keys() == expected["train"]
    # the resolved (hashed) config names the draw wherever it is dassl; configs that drew with condu keep their hash
    assert hashed_options("base_to_novel", {"shots": 16})["fewshot_draw"] == "dassl"
    assert hashed_options("mtil", {"shots": 5, "layout": "coop"})["fewshot_draw"] == "dassl"
    assert hashed_options("mtil", {"shots": 5}) == {"shots": 5}
    assert hashed_options("base_to_novel", {"fewshot_draw": "condu"})["fewshot_draw"] == "condu"


# --- CoOp's shot_K-seed_S.pkl files ---------------------------------------------------------------------------------

def dassl_module():
    """A stand-in ``dassl.data.datasets.base_dataset.Datum``, registered so that pickle records Dassl's path."""
    module = types.ModuleType("dassl.data.datasets.base_dataset")

    class Datum:
        def __init__(self, impath="", label=0, domain=0, classname=""):
            self._impath, self._label, self._domain, self._classname = impath, label, domain, classname

    Datum.__module__ = module.__name__
    Datum.__qualname__ = "Datum"
    module.Datum = Datum
    return module


@pytest.fixture
def dassl_datum(monkeypatch):
    module = dassl_module()
    for name in ("dassl", "dassl.data", "dassl.data.datasets"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.Datum


def write_coop_pkl(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)  # as CoOp's datasets write them
    return path


def test_coop_pkl_import_round_trip(eurosat_root, dassl_datum, tmp_path, global_random):
    from condu_bench.scenarios.real import build_base_to_novel

    root, split = eurosat_root
    drawn = dassl_by_hand(split, 1, 4)
    labels = dict((rel, c) for rel, c, _ in split["train"] + split["val"])
    elsewhere = "/home/someone/DATA/eurosat/2750"  # CoOp stores absolute paths of the machine that drew
    data = {s: [dassl_datum(f"{elsewhere}/{rel}", labels[rel], 0, names(labels[rel])) for rel in drawn[s]] for s in drawn}
    files = tmp_path / "coop_root"
    pkl = write_coop_pkl(files / "eurosat" / "split_fewshot" / "shot_4-seed_1.pkl", data)
    assert b"dassl.data.datasets.base_dataset" in pkl.read_bytes()
    scenario = build_base_to_novel({"datasets": ["EuroSAT"], "shots": 4, "fewshot_files": str(files)}, 1, root)
    base = scenario.streams[0].train[0]
    assert base.train.keys() == [r for r in drawn["train"] if labels[r] < 5]
    assert base.val.keys() == [r for r in drawn["val"] if labels[r] < 5]
    assert base.info["fewshot_draw"] == "imported" and base.info["fewshot_file"] == str(pkl)
    assert len(base.info["fewshot_file_sha256"]) == 64 and scenario.info["fewshot_draw"] == "imported"
    # the same draw as the harness's dassl draw of seed 1
    own = build_base_to_novel({"datasets": ["EuroSAT"], "shots": 4, "fewshot_cache": str(tmp_path / "c")}, 1, root)
    assert own.streams[0].train[0].train.keys() == base.train.keys()

    with pytest.raises(UserError, match="shot_4-seed_2.pkl does not exist"):
        build_base_to_novel({"datasets": ["EuroSAT"], "shots": 4, "fewshot_files": str(files)}, 2, root)
    with pytest.raises(UserError, match="not both"):
        build_base_to_novel({"datasets": ["EuroSAT"], "shots": 4, "fewshot_files": str(files), "fewshot_draw": "dassl"}, 1, root)
    # an item that is not in the split, and one with another label, are named
    bad = dict(data, train=data["train"] + [dassl_datum(f"{elsewhere}/Class_0/nowhere.jpg", 0, 0, "Class_0")])
    write_coop_pkl(pkl, bad)
    with pytest.raises(UserError, match="Class_0/nowhere.jpg is not in the train split"):
        build_base_to_novel({"datasets": ["EuroSAT"], "shots": 4, "fewshot_files": str(files)}, 1, root)
    first = data["train"][0]
    relabelled = dict(data, train=[dassl_datum(first._impath, (first._label + 1) % 10, 0, "x")] + data["train"][1:])
    write_coop_pkl(pkl, relabelled)
    with pytest.raises(UserError, match=r"has label \d in the file, \d in the split"):
        build_base_to_novel({"datasets": ["EuroSAT"], "shots": 4, "fewshot_files": str(files)}, 1, root)


class Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch):
    from condu_bench.datasets.coop_files import FewShotFileError, read_fewshot_file

    monkeypatch.chdir(tmp_path)
    path = write_coop_pkl(tmp_path / "shot_16-seed_1.pkl", {"train": [Boom()], "val": []})
    with pytest.raises(FewShotFileError, match=r"refused to load (posix|nt|os)\.system"):
        read_fewshot_file(path)
    assert not (tmp_path / "pwned").exists()
    other = write_coop_pkl(tmp_path / "other.pkl", {"train": [types.SimpleNamespace(a=1)]})
    with pytest.raises(FewShotFileError, match="refused to load types.SimpleNamespace"):
        read_fewshot_file(other)
    odd = write_coop_pkl(tmp_path / "odd.pkl", ["not", "a", "dict"])
    with pytest.raises(FewShotFileError, match="expected a dict with 'train'"):
        read_fewshot_file(odd)


# --- CoOp's train augmentation ----------------------------------------------------------------------------------------

def check_coop_transform(transform, size):
    from torchvision import transforms as T

    crop, flip, to_tensor, normalize = transform.transforms  # Dassl's order, nothing else
    assert type(crop) is T.RandomResizedCrop and type(flip) is T.RandomHorizontalFlip
    assert type(to_tensor) is T.ToTensor and type(normalize) is T.Normalize
    assert crop.size == (size, size) and crop.scale == (0.08, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert crop.interpolation == T.InterpolationMode.BICUBIC and flip.p == 0.5
    return normalize


def test_coop_augmentation_is_dassls_pipeline():
    from PIL import Image

    from condu_bench.config import ModelConfig
    from condu_bench.method import RunContext
    from condu_bench.models.loading import coop_train_transform, load_model

    clip_mean, clip_std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # CoOp's configs
    normalize = check_coop_transform(coop_train_transform(224, clip_mean, clip_std), 224)
    assert tuple(normalize.mean) == clip_mean and tuple(normalize.std) == clip_std
    loaded = load_model(ModelConfig(arch="condu-micro-vit", pretrained=None), progress=False)
    size = loaded.model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    check_coop_transform(loaded.coop_train_transform, size)
    assert loaded.coop_train_transform(Image.new("RGB", (50, 30))).shape == (3, size, size)
    ctx = RunContext(model=loaded.model, tokenizer=None, device=None, pretrained_state={}, train_config=None, seed=0,
                     train_transform=loaded.train_transform, eval_transform=loaded.eval_transform,
                     coop_train_transform=loaded.coop_train_transform)
    assert ctx.augmentation("coop") is loaded.coop_train_transform and ctx.augmentation("model") is loaded.train_transform
    assert ctx.augmentation("none") is loaded.eval_transform
    with pytest.raises(UserError, match="no such transform"):
        RunContext(model=None, tokenizer=None, device=None, pretrained_state={}, train_config=None, seed=0).augmentation("coop")


@pytest.mark.parametrize("benchmark_file", ["base_to_novel", "cross_dataset", "domain_generalisation"])
def test_coop_benchmark_files_train_with_coop_augmentation(benchmark_file):
    from condu_bench.config import load_config
    from condu_bench.experiment import method_run_config
    from condu_bench.recipes import resolve_train
    from condu_bench.registries import METHODS
    from condu_bench.resources import benchmark_path

    config = load_config(benchmark_path(benchmark_file))
    for name in config.methods:
        cls = METHODS.get(name)
        train = resolve_train(config.train, getattr(cls, "recipe", None), config.recipes.get(name), name)
        assert train.augment == "coop", name
        resolved = method_run_config(config, name, 1, cls.Config(), train)
        assert resolved["train"]["augment"] == "coop" and resolved["scenario"]["options"]["fewshot_draw"] == "dassl"
    with pytest.raises(UserError, match=r"augment='crop' is not one of \['coop', 'model', 'none'\]"):
        load_config(benchmark_path(benchmark_file), ["train.augment=crop"])


# --- templates ------------------------------------------------------------------------------------------------------

def test_zero_shot_rows_use_coops_zero_shot_templates(eurosat_root, tmp_path):
    from condu_bench.datasets.catalog import COOP_DATASETS, DG_TARGETS, get_spec
    from condu_bench.scenarios.real import build_base_to_novel, build_mtil, hashed_options

    # CoOp trainers/zsclip.py vs KgCoOp trainers/kgcoop.py: only DTD differs
    differ = [n for n in [*COOP_DATASETS, *DG_TARGETS] if get_spec(n).template_set("coop_zeroshot") != ("coop_zeroshot", [get_spec(n).coop_template])]
    assert differ == ["DTD"] and get_spec("DTD").template_set("coop_zeroshot")[1] == ["{} texture."]
    assert get_spec("DTD").template_set("coop") == ("handcrafted", ["a photo of a {}, a type of texture."])
    with pytest.raises(UserError, match="MNIST has no 'coop_zeroshot' templates"):
        get_spec("MNIST").template_set("coop_zeroshot")

    root, _ = eurosat_root
    scenario = build_base_to_novel({"datasets": ["EuroSAT"], "shots": 2, "fewshot_cache": str(tmp_path)}, 1, root)
    base, novel = scenario.streams[0].evaluate
    assert base.info["templates"] == "handcrafted" and base.info["zeroshot_templates"] == "coop_zeroshot"
    assert scenario.info["templates"] == "handcrafted" and scenario.info["zeroshot_templates"] == "coop_zeroshot"
    zero = scenario.for_zero_shot()
    zbase, znovel = zero.streams[0].evaluate
    assert zero.streams[0].train[0] is zbase and zbase.train is base.train  # same shots, one task object per stream
    assert zbase.info["templates"] == "coop_zeroshot" and zero.info["templates"] == "coop_zeroshot"
    assert base.info["templates"] == "handcrafted"  # the other methods' scenario is untouched
    assert hashed_options("cross_dataset", {})["zeroshot_templates"] == "coop_zeroshot"
    same = build_base_to_novel({"datasets": ["EuroSAT"], "shots": 2, "fewshot_cache": str(tmp_path),
                                "zeroshot_templates": "handcrafted"}, 1, root)
    assert same.for_zero_shot().streams[0].evaluate[0].templates == base.templates
    with pytest.raises(UserError, match="scenario.options.templates: unknown template set 'fancy'"):
        build_base_to_novel({"datasets": ["EuroSAT"], "templates": "fancy"}, 1, root)
    mtil = build_mtil({"order": ["EuroSAT"], "layout": "coop"}, 1, root)
    assert mtil.for_zero_shot() is mtil and mtil.streams[0].train[0].info["templates"] == "ensemble"


def test_zeroshot_method_declares_zero_shot_rows():
    from condu_bench.registries import METHODS

    assert METHODS.get("zeroshot").zero_shot_templates
    assert not any(getattr(METHODS.get(m), "zero_shot_templates", False) for m in ("coop", "kgcoop", "clipfit", "finetune"))

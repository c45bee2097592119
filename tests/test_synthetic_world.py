"""Unit tests of the embedded synthetic world: domain generators, caption data, tiny-CLIP cache."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(2)

from PIL import Image  # noqa: E402

from condu_bench.synthetic import domains as D  # noqa: E402

SMALL = dict(n_per_class=6, image_size=32)


@pytest.mark.parametrize("name", D.KNOWN_DOMAINS)
def test_domain_split_is_deterministic_and_well_formed(name):
    a = D.make_domain_split(name, "train", seed=3, **SMALL)
    b = D.make_domain_split(name, "train", seed=3, **SMALL)
    c = D.make_domain_split(name, "train", seed=4, **SMALL)
    assert np.array_equal(a.images, b.images) and a.targets == b.targets
    assert not np.array_equal(a.images, c.images)
    n_classes = len(D.domain_classnames(name))
    assert len(a) == n_classes * SMALL["n_per_class"]
    assert sorted(set(a.targets)) == list(range(n_classes))
    assert all(a.targets.count(k) == SMALL["n_per_class"] for k in range(n_classes))
    assert a.classnames == D.domain_classnames(name)
    assert a.templates == D.domain_templates(name)
    img, label = a[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (32, 32)
    assert isinstance(label, int) and label == a.targets[0]
    assert np.array_equal(np.asarray(img), a.images[0])


@pytest.mark.parametrize("name", D.KNOWN_DOMAINS)
def test_train_and_test_are_disjoint(name):
    tr = D.make_domain_split(name, "train", seed=0, **SMALL)
    te = D.make_domain_split(name, "test", seed=0, **SMALL)
    train_keys = {im.tobytes() for im in tr.images}
    assert not any(im.tobytes() in train_keys for im in te.images)
    assert not np.array_equal(tr.images, te.images)


def test_digit_samples_are_split_between_train_and_test():
    train_pool, test_pool = set(D._digit_pool("train")), set(D._digit_pool("test"))
    assert train_pool and test_pool and not (train_pool & test_pool)


def test_other_image_sizes_work():
    ds = D.make_domain_split("shapes", "test", n_per_class=2, image_size=48, seed=0)
    assert ds.images.shape[1:] == (48, 48, 3)
    assert ds[0][0].size == (48, 48)


def test_classnames_and_templates():
    assert len(D.DOMAIN_NAMES) >= 6 and len(set(D.DOMAIN_NAMES)) == len(D.DOMAIN_NAMES)
    for name in D.KNOWN_DOMAINS:
        names = D.domain_classnames(name)
        assert len(names) >= 5 and len(set(names)) == len(names)
        assert all(isinstance(c, str) and c for c in names)
        templates = D.domain_templates(name)
        assert templates and all(t.count("{}") == 1 for t in templates)
    with pytest.raises(KeyError):
        D.domain_classnames("nope")
    with pytest.raises(ValueError):
        D.make_domain_split("shapes", "val", **SMALL, seed=0)


def test_images_are_not_blank():
    for name in D.KNOWN_DOMAINS:
        ds = D.make_domain_split(name, "test", seed=0, **SMALL)
        assert ds.images.std() > 10  # real content, not a constant image


def test_coloured_shapes_classes_are_shape_major_and_drawn_in_their_colour():
    names = D.domain_classnames("coloured_shapes")
    assert len(names) == len(D.SHAPES) * len(D.COLOURS) == 48
    base, novel = names[:24], names[24:]  # base_novel_labels: the first ceil(n / 2) labels
    assert {n.split()[1] for n in base} == {"circle", "square", "triangle"}
    assert {n.split()[1] for n in novel} == {"cross", "ring", "star"}
    assert {n.split()[0] for n in base} == {n.split()[0] for n in novel} == set(D.COLOURS)
    assert "coloured_shapes" not in D.DOMAIN_NAMES  # the default MTIL order keeps its six domains
    ds = D.make_domain_split("coloured_shapes", "test", n_per_class=20, image_size=32, seed=0)
    images, targets = ds.images.astype(np.float64), np.array(ds.targets)

    def redness(colour):  # mean red minus blue over the images of that colour's classes
        picked = np.isin(targets, [i for i, n in enumerate(names) if n.startswith(colour + " ")])
        return (images[picked][..., 0] - images[picked][..., 2]).mean()

    assert redness("red") > redness("blue") + 20
    # the shape is the class's: a ring leaves its centre pixel as background more often than a square does
    def centre_is_object(shape):
        picked = np.isin(targets, [i for i, n in enumerate(names) if n.endswith(" " + shape)])
        centre, corner = images[picked][:, 16, 16], images[picked][:, 1, 1]
        return (np.abs(centre - corner).sum(axis=1) > 60).mean()

    assert centre_is_object("square") > centre_is_object("ring") + 0.3


def test_counted_and_placed_shapes_draw_their_class_s_number_kind_and_place():
    from scipy import ndimage

    counted, placed = D.domain_classnames("counted_shapes"), D.domain_classnames("placed_shapes")
    assert len(counted) == len(placed) == len(D.SHAPES) * 5 == 30
    assert counted[:6] == ["one circle", "two circles", "three circles", "four circles", "five circles", "one square"]
    assert placed[:2] == ["circle in the top left", "circle in the top right"] and placed[-1] == "star in the center"
    assert not {"counted_shapes", "placed_shapes"} & set(D.DOMAIN_NAMES)

    ds = D.make_domain_split("counted_shapes", "test", n_per_class=10, image_size=32, seed=0)
    dark = ds.images.astype(np.float64).mean(-1) < 110  # dark grey objects on paper
    targets = np.array(ds.targets)
    objects = np.array([ndimage.label(d, structure=np.ones((3, 3)))[1] for d in dark])
    assert (objects == targets % 5 + 1).mean() > 0.9  # a star's thin points can split at 32 pixels
    # the kind is the class's: a star leaves more of its bounding box empty than a circle does
    fill = np.array([d.sum() / max(1, np.ptp(np.nonzero(d)[0]) + 1) ** 2 for d in dark])
    one = targets % 5 == 0
    assert fill[one & (targets // 5 == 0)].mean() > fill[one & (targets // 5 == 5)].mean() + 0.15

    ds = D.make_domain_split("placed_shapes", "test", n_per_class=10, image_size=32, seed=0)
    images, targets = ds.images.astype(np.float64), np.array(ds.targets)
    yellow = (images[..., 0] > 150) & (images[..., 2] < 150)  # the object on its dark blue board
    ys, xs = np.mgrid[0:32, 0:32] / 32.0
    centre = np.stack([(yellow * xs).sum((1, 2)), (yellow * ys).sum((1, 2))], 1) / yellow.sum((1, 2))[:, None]
    nearest = np.argmin(((centre[:, None] - D._POS_XY[None]) ** 2).sum(-1), axis=1)
    assert (nearest == targets % 5).all()


def test_letters_domain_draws_every_class_with_its_own_glyph():
    assert D.domain_classnames("letters") == list("abcdefghijklmnopqrstuvwxyz")
    assert "letters" in D.OPT_IN_DOMAINS and "letters" not in D.DOMAIN_NAMES
    ds = D.make_domain_split("letters", "test", n_per_class=20, image_size=32, seed=0)
    ink = 255.0 - ds.images.astype(np.float64).mean(-1)  # dark ink on paper
    targets = np.array(ds.targets)
    class_means = np.stack([ink[targets == k].mean(0) for k in range(26)])
    # the printed glyph, resized to 24 of the image's 32 pixels and centred
    glyphs = np.stack([np.pad(np.asarray(Image.fromarray((D._letter_glyph(k, "printed") * 255).astype(np.uint8))
                                         .resize((24, 24), Image.BILINEAR), np.float64), 4) for k in range(26)])

    def standardised(a):
        a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    correlation = standardised(class_means) @ standardised(glyphs).T
    assert (correlation.argmax(1) == np.arange(26)).all()  # every class looks most like its own letter
    # test images use the bank's held-out variants, in all three styles (italic: the captions' rare one)
    assert not set(D._letter_pool("train")) & set(D._letter_pool("test"))
    italic = D._letter_glyph(D.LETTERS.index("i"), "italic")
    assert np.array_equal(italic[0], np.roll(D._letter_glyph(8, "printed")[0], 2))


def test_letter_captions_are_an_opt_in_share_of_the_pairs():
    plain = D.make_caption_dataset(40, seed=1)
    assert np.array_equal(D.make_caption_dataset(40, seed=1, letters=0.0).images, plain.images)
    mixed = D.make_caption_dataset(40, seed=1, letters=0.25)
    scenes = D._scene_captions(30, image_size=32, seed=1)
    assert np.array_equal(mixed.images[:30], scenes.images) and mixed.captions[:30] == scenes.captions
    forms = ("the letter ", "a capital ", "the character ", "a letter ")
    for caption in mixed.captions[30:]:
        assert caption.startswith(forms), caption
        letter = next(caption[len(f):].split(" ")[0].rstrip(".") for f in forms if caption.startswith(f))
        assert letter in D.LETTERS
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="share of the caption pairs"):
            D.make_caption_dataset(40, letters=bad)


def test_caption_dataset():
    cd = D.make_caption_dataset(200, image_size=32, seed=1)
    again = D.make_caption_dataset(200, image_size=32, seed=1)
    assert len(cd) == 200
    assert np.array_equal(cd.images, again.images) and cd.captions == again.captions
    img, cap = cd[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (32, 32)
    assert isinstance(cap, str) and cap
    text = " ".join(cd.captions)
    vocab = set(D.SHAPES) | set(D.COLOURS) | set(D.POSITIONS) | set(D.NUMBERS) | set(D.DIGITS)
    for words in (D.SHAPES, D.COLOURS, D.POSITIONS, D.NUMBERS, D.DIGITS):
        assert any(w in text for w in words)
    assert any(t in text for t in D.TEXTURES[1:])
    assert sum(any(w in c for w in vocab) for c in cd.captions) > 150
    assert len(set(cd.captions)) > 50  # compositional, not a handful of fixed strings


# ------------------------------------------------------------------------------------------------
# tiny CLIP cache
# ------------------------------------------------------------------------------------------------
@pytest.fixture()
def tiny_cfg():
    pytest.importorskip("open_clip")
    pytest.importorskip("safetensors")
    from condu_bench.synthetic.pretrain import PretrainConfig

    return PretrainConfig(n_pairs=48, steps=2, batch_size=16, warmup_steps=1, eval_n_per_class=0)


def test_model_config_registration():
    open_clip = pytest.importorskip("open_clip")
    from condu_bench.models.configs import CONFIG_DIR, register_model_configs

    register_model_configs()
    register_model_configs()  # idempotent
    assert (CONFIG_DIR / "condu-tiny-vit.json").is_file()
    assert "condu-tiny-vit" in open_clip.list_models()
    cfg = json.loads((CONFIG_DIR / "condu-tiny-vit.json").read_text())
    assert cfg["text_cfg"]["vocab_size"] == 49408 and "quick_gelu" in cfg


def test_cache_builds_reuses_and_rebuilds(tmp_path, tiny_cfg):
    from condu_bench.synthetic import pretrain as P

    n0 = P.BUILD_COUNT
    path = P.cached_tiny_clip(tiny_cfg, cache_dir=tmp_path, progress=False)
    assert path.is_file() and path.suffix == ".safetensors" and path.parent == tmp_path
    assert P.BUILD_COUNT == n0 + 1
    side = P.read_sidecar(path)
    from condu_bench.atomic_io import sha256_file

    assert side["fingerprint"] == tiny_cfg.fingerprint() and side["sha256"] == sha256_file(path)
    assert side["config"]["steps"] == 2 and "final_loss" in side["metrics"]
    digest = side["sha256"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    # second call: reused, untouched
    mtime = path.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.cached_tiny_clip(tiny_cfg, cache_dir=tmp_path, progress=False) == path
    assert P.BUILD_COUNT == n0 + 1 and path.stat().st_mtime_ns == mtime

    # the weights load into the open_clip model: every tensor equal to the one saved
    from safetensors.torch import load_file

    model, tok = P.load_tiny_clip(path, tiny_cfg)
    saved, loaded = load_file(str(path)), model.state_dict()
    assert set(saved) == set(loaded) and all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert tok(["a red circle."]).shape == (1, tok.context_length)

    # truncated weights -> warning + rebuild
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        assert P.cached_tiny_clip(tiny_cfg, cache_dir=tmp_path, progress=False) == path
    assert P.BUILD_COUNT == n0 + 2 and path.stat().st_size == len(data)

    # edited hash in the sidecar -> rebuild
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["sha256"] = "0" * 64
    sidecar.write_text(json.dumps(meta))
    with pytest.warns(RuntimeWarning, match="sha256"):
        P.cached_tiny_clip(tiny_cfg, cache_dir=tmp_path, progress=False)
    assert P.BUILD_COUNT == n0 + 3

    # unreadable / missing sidecar -> rebuild
    sidecar.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        P.cached_tiny_clip(tiny_cfg, cache_dir=tmp_path, progress=False)
    sidecar.unlink()
    with pytest.warns(RuntimeWarning, match="missing"):
        P.cached_tiny_clip(tiny_cfg, cache_dir=tmp_path, progress=False)
    assert P.BUILD_COUNT == n0 + 5 and len(P.read_sidecar(path)["sha256"]) == len(digest)

    # explicit rebuild
    P.cached_tiny_clip(tiny_cfg, cache_dir=tmp_path, progress=False, rebuild=True)
    assert P.BUILD_COUNT == n0 + 6


def test_cache_key_depends_on_config(tmp_path, tiny_cfg, monkeypatch):
    import dataclasses

    from condu_bench.synthetic import pretrain as P

    other = dataclasses.replace(tiny_cfg, seed=tiny_cfg.seed + 1)
    a, _ = P.cache_paths(tiny_cfg, tmp_path)
    b, _ = P.cache_paths(other, tmp_path)
    assert a != b and a.parent == b.parent == tmp_path
    assert P.cache_paths(tiny_cfg, tmp_path)[0] == a  # stable
    assert f"-g{D.GENERATOR_VERSION}-{tiny_cfg.fingerprint()}." in a.name  # generator version and recipe both key it

    monkeypatch.setenv("CONDU_BENCH_CACHE", str(tmp_path / "envcache"))
    assert P.default_cache_dir() == tmp_path / "envcache"
    assert P.cache_paths(tiny_cfg)[0].parent == tmp_path / "envcache"
    monkeypatch.delenv("CONDU_BENCH_CACHE")
    assert P.default_cache_dir() == P.Path.home() / ".cache" / "condu-bench"


def test_stale_fingerprint_is_rebuilt(tmp_path, tiny_cfg):
    from condu_bench.synthetic import pretrain as P

    path = P.cached_tiny_clip(tiny_cfg, cache_dir=tmp_path, progress=False)
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["fingerprint"] = "stale"
    sidecar.write_text(json.dumps(meta))
    n = P.BUILD_COUNT
    with pytest.warns(RuntimeWarning, match="fingerprint"):
        P.cached_tiny_clip(tiny_cfg, cache_dir=tmp_path, progress=False)
    assert P.BUILD_COUNT == n + 1
    assert P.read_sidecar(path)["fingerprint"] == tiny_cfg.fingerprint()


def test_cache_that_does_not_load_is_rebuilt_but_os_errors_propagate(tmp_path, tiny_cfg, monkeypatch):
    import safetensors.torch

    from condu_bench.atomic_io import sha256_file
    from condu_bench.synthetic import pretrain as P

    path = P.cached_tiny_clip(tiny_cfg, cache_dir=tmp_path, progress=False)
    sidecar = path.with_suffix(".json")
    path.write_bytes(b"not safetensors at all")  # a damaged file whose hash the sidecar vouches for
    meta = json.loads(sidecar.read_text())
    meta["sha256"] = sha256_file(path)
    sidecar.write_text(json.dumps(meta))
    n0 = P.BUILD_COUNT
    with pytest.warns(RuntimeWarning, match="safetensors load failed"):
        P.cached_tiny_clip(tiny_cfg, cache_dir=tmp_path, progress=False)
    assert P.BUILD_COUNT == n0 + 1

    def denied(*args, **kwargs):
        raise PermissionError("cache not readable")

    monkeypatch.setattr(safetensors.torch, "load_file", denied)  # not a damaged file: no silent rebuild
    with pytest.raises(PermissionError):
        P.cached_tiny_clip(tiny_cfg, cache_dir=tmp_path, progress=False)
    assert P.BUILD_COUNT == n0 + 1


def _recipe_options(cfg) -> list[str]:
    """``cfg``'s fields that differ from the calibrated recipe, as ``KEY=VALUE`` options."""
    import dataclasses

    from condu_bench.synthetic.pretrain import PretrainConfig

    default = PretrainConfig()
    return [f"{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)
            if f.name != "seed" and getattr(cfg, f.name) != getattr(default, f.name)]


def test_pretrain_command_builds_once_per_seed_and_recipe(tmp_path, tiny_cfg, capsys):
    from condu_bench import cli
    from condu_bench.synthetic import pretrain as P

    base = ["pretrain", "--cache-dir", str(tmp_path), "--no-progress", "--seed", "3", *_recipe_options(tiny_cfg)]
    n0 = P.BUILD_COUNT
    assert cli.main(base) == 0
    path = capsys.readouterr().out.strip()
    side = P.read_sidecar(P.Path(path))
    assert side["config"]["seed"] == 3 and side["config"]["steps"] == tiny_cfg.steps and P.BUILD_COUNT == n0 + 1
    assert cli.main(base) == 0
    assert capsys.readouterr().out.strip() == path and P.BUILD_COUNT == n0 + 1  # cached
    assert cli.main([*base, "--rebuild"]) == 0
    assert P.BUILD_COUNT == n0 + 2
    assert cli.main([*base, "init_logit_scale=100"]) == 0  # another recipe: its own file
    other = capsys.readouterr().out.strip().splitlines()[-1]
    assert other != path and P.read_sidecar(P.Path(other))["config"]["init_logit_scale"] == 100.0
    assert P.BUILD_COUNT == n0 + 3
    assert cli.main([*base, "init_logit_scal=100"]) == 2  # a clear error, nothing built
    assert "did you mean 'init_logit_scale'" in capsys.readouterr().err and P.BUILD_COUNT == n0 + 3


def test_init_logit_scale_sets_the_starting_temperature_and_is_hashed_only_when_set(tmp_path, tiny_cfg):
    import dataclasses
    import math

    from safetensors.torch import load_file

    from condu_bench.synthetic import pretrain as P

    # the calibrated recipe's fingerprint names every cached tiny CLIP: a new recipe field must not move it
    assert P.PretrainConfig().fingerprint() == "0027370b1d286726"
    hot = dataclasses.replace(tiny_cfg, init_logit_scale=100.0)
    assert hot.fingerprint() != tiny_cfg.fingerprint()
    assert dataclasses.replace(tiny_cfg, init_logit_scale=100).fingerprint() == hot.fingerprint()
    scales = {}
    for cfg in (tiny_cfg, hot):
        weights = load_file(str(P.cached_tiny_clip(cfg, cache_dir=tmp_path, progress=False)))
        scales[cfg.init_logit_scale] = math.exp(float(weights["logit_scale"]))
    # two AdamW steps at lr <= 2e-3 move log(scale) by at most about 0.004
    assert abs(scales[None] - 1 / 0.07) < 0.1 and 99.0 < scales[100.0] <= 100.0
    with pytest.raises(ValueError, match=r"init_logit_scale must be in \(0, 100\]"):
        P.PretrainConfig(init_logit_scale=0.0)


def test_letters_recipe_field_is_checked_and_hashed_only_when_set():
    import dataclasses

    from condu_bench.synthetic import pretrain as P

    base = P.PretrainConfig()
    assert base.letters is None and base.fingerprint() == "0027370b1d286726"
    with_letters = dataclasses.replace(base, letters=0.2)
    assert with_letters.fingerprint() not in (base.fingerprint(), dataclasses.replace(base, letters=0.3).fingerprint())
    # the pretraining's zero-shot record covers the opt-in domains its captions name, and only those
    assert D.captioned_opt_in_domains(base) == () and D.captioned_opt_in_domains(with_letters) == ("letters",)
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match="share of caption pairs"):
            P.PretrainConfig(letters=bad)


def test_model_pretrain_overrides_the_synthetic_recipe_and_is_checked():
    from condu_bench.config import ModelConfig
    from condu_bench.errors import UserError
    from condu_bench.models.loading import synthetic_pretrain_config

    cfg = synthetic_pretrain_config(ModelConfig(pretrained="synthetic-seed2", pretrain={"init_logit_scale": 100}))
    assert (cfg.seed, cfg.init_logit_scale, cfg.steps) == (2, 100.0, 950)
    assert synthetic_pretrain_config(ModelConfig(pretrained="synthetic")).init_logit_scale is None
    for pretrain, message in [({"init_logit_scal": 100}, "did you mean 'init_logit_scale'"),
                              ({"seed": 1}, "set by model.arch and the model.pretrained tag"),
                              ({"steps": "many"}, "model.pretrain.steps: expected an integer"),
                              ({"init_logit_scale": 300}, r"init_logit_scale must be in \(0, 100\]")]:
        with pytest.raises(UserError, match=message):
            synthetic_pretrain_config(ModelConfig(pretrained="synthetic", pretrain=pretrain))
    with pytest.raises(UserError, match="synthetic tiny CLIP only"):
        synthetic_pretrain_config(ModelConfig(arch="ViT-B-16", pretrained="openai", pretrain={"steps": 10}))


def test_a_scenario_with_letters_needs_a_tiny_clip_pretrained_on_letters():
    from condu_bench.config import ModelConfig
    from condu_bench.errors import UserError
    from condu_bench.models.loading import check_pretrain_vocabulary
    from condu_bench.scenarios.synthetic import build_synthetic_mtil
    from condu_bench.scenarios.synthetic_b2n import build_synthetic_b2n

    small = {"n_test_per_class": 2, "image_size": 16}
    b2n = build_synthetic_b2n({"domains": ["digits", "letters"], "n_pool_per_class": 6, "shots": 2, **small}, seed=1)
    mtil = build_synthetic_mtil({"order": ["letters"], "n_train_per_class": 2, **small}, seed=0)
    assert b2n.info["pretrain_vocabulary"] == mtil.info["pretrain_vocabulary"] == ["letters"]
    assert "pretrain_vocabulary" not in build_synthetic_b2n({"domains": ["digits"], "n_pool_per_class": 6, "shots": 2,
                                                             **small}, seed=1).info
    with pytest.raises(UserError, match=r"pretrained with captions of letters.*model\.pretrain\.letters="):
        check_pretrain_vocabulary(ModelConfig(pretrained="synthetic-seed1"), ["letters"])
    check_pretrain_vocabulary(ModelConfig(pretrained="synthetic-seed1", pretrain={"letters": 0.3}), ["letters"])
    check_pretrain_vocabulary(ModelConfig(pretrained="synthetic"), [])
    check_pretrain_vocabulary(ModelConfig(arch="ViT-B-16", pretrained="openai"), ["letters"])  # a real CLIP's own
    with pytest.raises(UserError, match="share of caption pairs"):
        check_pretrain_vocabulary(ModelConfig(pretrained="synthetic", pretrain={"letters": 2}), ["letters"])


def test_run_config_holds_model_pretrain_only_when_set():
    from condu_bench.config import RunConfig, config_hash, from_dict
    from condu_bench.experiment import method_run_config

    def resolved(model: dict) -> dict:
        config = from_dict(RunConfig, {"model": model, "methods": ["zeroshot"], "seeds": [0]})
        return method_run_config(config, "zeroshot", 0, None, config.train)

    plain, hot = resolved({}), resolved({"pretrain": {"init_logit_scale": 100}})
    assert "pretrain" not in plain["model"]  # runs from before the option keep their hashes
    assert hot["model"]["pretrain"] == {"init_logit_scale": 100} and config_hash(hot) != config_hash(plain)


def test_a_style_changes_only_the_domains_it_names():
    shared = {"look": "shared"}
    plain = D.make_domain_split("shapes", "train", seed=0, style=shared, **SMALL)
    styled = D.make_domain_split("shapes", "train", seed=0, style={**shared, "digit_style": "mnist"}, **SMALL)
    assert np.array_equal(plain.images, styled.images)  # a digits knob leaves shapes alone
    digits = D.make_domain_split("digits", "train", seed=0, style=shared, **SMALL)
    mnist = D.make_domain_split("digits", "train", seed=0, style={**shared, "digit_style": "mnist"}, **SMALL)
    assert mnist.targets == digits.targets and not np.array_equal(mnist.images, digits.images)
    corners = mnist.images[:, [0, 0, -1, -1], [0, -1, 0, -1]].astype(float)
    assert corners.mean() < 50  # MNIST's look: plain, nearly black ground
    assert np.abs(mnist.images.astype(float).mean(axis=(1, 2)) - mnist.images.mean(axis=(1, 2, 3))[:, None]).max() < 12  # grey
    own = D.make_domain_split("shapes", "train", seed=0, **SMALL)
    assert np.array_equal(own.images, D.make_domain_split("shapes", "train", seed=0, style={"digit_r": [0.3, 0.4]}, **SMALL).images)
    assert not np.array_equal(own.images, plain.images)  # the default is the own look, not version 5's


def _hue_spread(images: np.ndarray) -> np.ndarray:
    """Per image, the spread of its mean colour over the channels (0 for grey images; pixel noise averages out)."""
    mean = images.astype(float).mean(axis=(1, 2))
    return mean.max(axis=-1) - mean.min(axis=-1)


def test_every_domain_holds_the_factors_other_domains_classify_fixed():
    """World version 6: only colours varies hue, only textures varies the background pattern, only shapes varies the
    shape of its object; the look of each domain is its own."""
    split = {name: D.make_domain_split(name, "test", seed=0, n_per_class=6, image_size=32) for name in D.DOMAIN_NAMES}
    for name in ("shapes", "textures", "digits", "counts"):  # grey: a model fine-tuned on them learns nothing about hue
        assert _hue_spread(split[name].images).max() < 3, name
    assert np.median(_hue_spread(split["colours"].images)) > 20
    corners = {name: split[name].images[:, [1, 1, -2, -2], [1, -2, 1, -2]].astype(float) for name in ("shapes", "digits", "counts")}
    assert corners["digits"].mean() < 50 and corners["shapes"].mean() < 100 and corners["counts"].mean() > 190
    for name in ("shapes", "digits"):  # plain grounds: no background pattern to become invariant to
        assert (corners[name].std(axis=1) < 20).all(), name
    positions = split["positions"].images.reshape(len(split["positions"]), -1, 3).astype(float)  # brightest: the star
    brightest = positions[np.arange(len(positions)), positions.sum(-1).argmax(axis=1)]
    assert (brightest[:, 0] > brightest[:, 2] + 80).all()  # yellow on every image: the marker's colour is fixed
    colours = D.make_domain_split("colours", "test", seed=0, n_per_class=6, image_size=32, style={"distract": 0.0})
    centre = colours.images[:, 12:20, 12:20].astype(float)
    assert (centre.std(axis=(1, 2)).max(axis=-1) < 20).all()  # one swatch fills the centre: no shape to learn


def test_style_knobs_are_checked_by_name_and_value():
    from condu_bench.errors import UserError
    from condu_bench.scenarios.synthetic import build_synthetic_mtil

    with pytest.raises(ValueError, match="unknown style knob 'digits_style'"):
        D.make_domain_split("digits", "train", seed=0, style={"digits_style": "mnist"}, **SMALL)
    with pytest.raises(ValueError, match="shared look only"):
        D.make_domain_split("digits", "train", seed=0, style={"digit_style": "mnist"}, **SMALL)
    for bad, message in (({"look": "shared", "count_style": "paper"}, "one of scene, sheet"),
                         ({"occlude": "half"}, "takes a number"), ({"look": "mine"}, "one of own, shared"),
                         ({"shape_r": [0.3]}, r"\[low, high\]"), ("mnist", "mapping")):
        with pytest.raises(UserError, match=message):
            build_synthetic_mtil({"style": bad, "n_train_per_class": 2, "n_test_per_class": 2}, seed=0)
    style = {"look": "shared", "count_style": "sheet"}
    scenario = build_synthetic_mtil({"style": style, "order": ["counts"], "n_train_per_class": 2,
                                     "n_test_per_class": 2}, seed=0)
    assert scenario.info["style"] == style  # recorded with the result


def test_the_world_version_is_recorded_hashed_and_checked():
    from condu_bench.errors import UserError
    from condu_bench.scenarios.synthetic import build_synthetic_mtil, versioned_options
    from condu_bench.scenarios.synthetic_b2n import build_synthetic_b2n

    small = {"order": ["counts"], "n_train_per_class": 2, "n_test_per_class": 2}
    assert build_synthetic_mtil(small, seed=0).info["world_version"] == D.WORLD_VERSION == 6
    assert build_synthetic_mtil({**small, "world_version": 6}, seed=0).info["world_version"] == 6
    for build, options in ((build_synthetic_mtil, small), (build_synthetic_b2n, {"domains": ["counts"]})):
        with pytest.raises(UserError, match="renders synthetic world version 6"):
            build({**options, "world_version": 5}, seed=1)
    assert versioned_options("synthetic_b2n", {"shots": 4}) == {"shots": 4, "world_version": 6}
    assert versioned_options("mtil", {"shots": 4}) == {"shots": 4}  # real data has no world version

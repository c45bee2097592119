"""The decoded-image cache and the frozen-image-tower feature cache: identical predictions, invalidation, concurrency."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from condu_bench.config import ModelConfig, TrainConfig
from condu_bench.data.task import TaskData
from condu_bench.datasets import decoded_cache as dc
from condu_bench.datasets.images import ArrayImageDataset, ImageListDataset
from condu_bench.errors import UserError
from condu_bench.method import BaseMethod, RunContext
from condu_bench.models.loading import load_model
from condu_bench.training.device import autocast_factory
from condu_bench.training.evaluate import Evaluator


def write_photos(root: Path, n: int = 10, classes: int = 3) -> ImageListDataset:
    """JPEGs and PNGs of different sizes and aspect ratios, filled with noise (resizing and cropping matter)."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        ext = "jpg" if i % 2 else "png"
        path = root / f"c{i % classes}" / f"img{i}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        items.append((str(path.relative_to(root)), i % classes))
    return ImageListDataset(root, items)


@pytest.fixture(scope="module")
def ctx():
    loaded = load_model(ModelConfig(arch="condu-micro-vit", pretrained=None))
    state = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}
    return RunContext(model=loaded.model.eval(), tokenizer=loaded.tokenizer, device=torch.device("cpu"),
                      pretrained_state=state, train_config=TrainConfig(), seed=0, eval_transform=loaded.eval_transform,
                      autocast=autocast_factory(torch.device("cpu"), "fp32"))


class RecordInputs(BaseMethod):
    """Standard inference that keeps every batch of model inputs and logits it saw."""

    name = "record"

    def __init__(self):
        super().__init__()
        self.inputs, self.outputs = [], []

    def logits(self, images, task, ctx):
        from condu_bench.models.classifier import cosine_logits, image_features, text_classifier

        self.inputs.append(images.clone())
        out = cosine_logits(image_features(ctx.model, images), text_classifier(ctx.model, ctx.tokenizer, task.classnames,
                                                                               task.templates, ctx.device))
        self.outputs.append(out)
        return out


def evaluate(ctx, task, cache_dir, batch_size=4):
    method = RecordInputs()
    accuracy = Evaluator(ctx, batch_size, progress=False, decoded_cache_dir=cache_dir).accuracy(method, task)
    return accuracy, torch.cat(method.inputs), torch.cat(method.outputs)


def test_cached_evaluation_sees_exactly_the_decoded_inputs(ctx, tmp_path):
    task = TaskData("photos", ["a", "b", "c"], ["a {}."], test=write_photos(tmp_path / "photos"))
    uncached = evaluate(ctx, task, None)
    first = evaluate(ctx, task, tmp_path / "cache")  # builds the entry
    second = evaluate(ctx, task, tmp_path / "cache")  # memory-maps it
    (entry,) = dc.cache_entries(tmp_path / "cache")
    assert entry["images"] == 10 and entry["dataset"] == "photos"
    for run in (first, second):
        assert torch.equal(run[1], uncached[1])  # bit-identical model inputs
        assert torch.equal(run[2], uncached[2])
        assert run[0] == uncached[0]
    pixels = np.load(Path(entry["path"]) / "images.npy", mmap_mode="r")
    assert pixels.dtype == np.uint8 and pixels.shape == (10, *uncached[1].shape[2:], 3)


def test_array_datasets_are_cached_too(ctx, tmp_path):
    rng = np.random.default_rng(1)
    array = ArrayImageDataset(rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), [0, 1, 0, 1, 0, 1], "mnist/test-images")
    task = TaskData("digits", ["0", "1"], ["a {}."], test=array)
    uncached = evaluate(ctx, task, None)
    cached = evaluate(ctx, task, tmp_path / "cache")
    assert torch.equal(cached[1], uncached[1]) and len(dc.cache_entries(tmp_path / "cache")) == 1
    # Another copy of the dataset (same name, shape, rows and labels, other pixels) is another entry.
    other = ArrayImageDataset(255 - array.images, array.targets, "mnist/test-images")
    other_task = TaskData("digits", ["0", "1"], ["a {}."], test=other)
    assert torch.equal(evaluate(ctx, other_task, tmp_path / "cache")[1], evaluate(ctx, other_task, None)[1])
    assert len(dc.cache_entries(tmp_path / "cache")) == 2


def test_a_changed_image_list_or_transform_is_a_new_entry(ctx, tmp_path):
    from torchvision import transforms as T

    photos = write_photos(tmp_path / "photos")
    task = TaskData("photos", ["a", "b", "c"], ["a {}."], test=photos)
    root = tmp_path / "cache"
    evaluate(ctx, task, root)
    evaluate(ctx, TaskData("photos", ["a", "b", "c"], ["a {}."], test=photos.subset(range(8))), root)
    assert len(dc.cache_entries(root)) == 2  # a different image list
    # A file rewritten in place (new content, new mtime) is a different image.
    path = photos.path(3)
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(path, format="JPEG")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    changed = evaluate(ctx, task, root)
    assert len(dc.cache_entries(root)) == 3
    assert torch.equal(changed[1], evaluate(ctx, task, None)[1])
    # A different eval transform (resize interpolation) is a new entry, and its inputs follow it.
    steps = list(ctx.eval_transform.transforms)
    steps[0] = T.Resize(steps[0].size, interpolation=T.InterpolationMode.NEAREST)
    other = RunContext(**{**ctx.__dict__, "eval_transform": T.Compose(steps)})
    evaluated = evaluate(other, task, root)
    assert len(dc.cache_entries(root)) == 4
    assert torch.equal(evaluated[1], evaluate(other, task, None)[1])
    assert not torch.equal(evaluated[1], changed[1])


def test_datasets_generated_in_memory_and_unusual_transforms_are_not_cached_on_disk(ctx, tmp_path):
    from condu_bench.synthetic.domains import make_domain_split

    split = make_domain_split("shapes", "test", n_per_class=1, image_size=32, seed=0)
    assert dc.dataset_identity(split) is None
    assert dc.split_transform(lambda image: image) is None
    task = TaskData("shapes", split.classnames, split.templates, test=split)
    evaluate(ctx, task, tmp_path / "cache")
    assert dc.cache_entries(tmp_path / "cache") == []


class Gate:
    """A dataset that blocks its first image until both builders are inside the build."""

    def __init__(self, dataset, barrier):
        self.dataset, self.barrier = dataset, barrier

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        if index == 0:
            self.barrier.wait(timeout=60)
        return self.dataset[index]


def build_in_process(photos_root, items, root, barrier, queue):
    from condu_bench.config import ModelConfig
    from condu_bench.models.loading import load_model

    transform = dc.split_transform(load_model(ModelConfig(arch="condu-micro-vit", pretrained=None)).eval_transform)
    photos = ImageListDataset(photos_root, items)
    entry = dc.open_or_build(Gate(photos, barrier), transform, dc.dataset_identity(photos), root, name="photos")
    queue.put(entry.directory.name)


def test_two_processes_filling_one_entry_leave_one_valid_entry(ctx, tmp_path):
    photos = write_photos(tmp_path / "photos")
    context = multiprocessing.get_context("spawn")  # fork would inherit torch's thread pool
    barrier, queue = context.Barrier(2), context.Queue()
    workers = [context.Process(target=build_in_process, args=(photos.root, photos.items, tmp_path / "cache", barrier, queue))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    names = {queue.get(timeout=5), queue.get(timeout=5)}
    assert len(names) == 1
    assert [p.name for p in (tmp_path / "cache").iterdir()] == list(names)  # no staging directory left behind
    task = TaskData("photos", ["a", "b", "c"], ["a {}."], test=photos)
    assert torch.equal(evaluate(ctx, task, tmp_path / "cache")[1], evaluate(ctx, task, None)[1])


# ------------------------------------------------------------------------------------------------------------------
# Feature cache
# ------------------------------------------------------------------------------------------------------------------
def zeroshot():
    from condu_bench.registries import METHODS

    return METHODS.get("zeroshot")()


def test_frozen_tower_features_are_computed_once_and_recomputed_when_the_tower_changes(ctx, tmp_path):
    task = TaskData("photos", ["a", "b", "c"], ["a {}."], test=write_photos(tmp_path / "photos", n=12))
    cached = Evaluator(ctx, 4, progress=False)
    plain = Evaluator(ctx, 4, progress=False, feature_cache=False)
    reference = plain.accuracy(zeroshot(), task)
    assert cached.accuracy(zeroshot(), task) == reference and cached.features.computed == 1
    assert cached.accuracy(zeroshot(), task) == reference and cached.features.computed == 1  # a hit
    calls = []
    original = ctx.model.encode_image
    ctx.model.encode_image = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        cached.accuracy(zeroshot(), task)
        assert calls == []  # no image went through the tower
        with torch.no_grad():
            ctx.model.visual.proj.mul_(-1.0)  # the tower changed: the cached features are stale
        changed = cached.accuracy(zeroshot(), task)
        assert cached.features.computed == 2 and calls
        assert changed == plain.accuracy(zeroshot(), task)
    finally:
        del ctx.model.encode_image
        ctx.model.load_state_dict(ctx.pretrained_state)


def test_frozen_tower_features_persist_on_disk_for_the_same_weights_and_context_only(ctx, tmp_path):
    """A later run (a new evaluator) on the same decoded split and weights reads the features from disk, bit for bit,
    without running the tower; changed weights or batch size make a new entry, never a stale hit."""
    from condu_bench.training.evaluate import FEATURES_DIR

    task = TaskData("photos", ["a", "b", "c"], ["a {}."], test=write_photos(tmp_path / "photos", n=12))
    cache = tmp_path / "cache"
    plain = Evaluator(ctx, 4, progress=False, feature_cache=False).accuracy(zeroshot(), task)
    first = Evaluator(ctx, 4, progress=False, decoded_cache_dir=cache)
    assert first.accuracy(zeroshot(), task) == plain and (first.features.computed, first.features.loaded) == (1, 0)
    entries = lambda: sorted(p.name for p in (cache / FEATURES_DIR).iterdir())  # noqa: E731
    assert len(entries()) == 1 and not entries()[0].startswith(".")
    calls = []
    original = ctx.model.encode_image
    ctx.model.encode_image = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        second = Evaluator(ctx, 4, progress=False, decoded_cache_dir=cache)
        assert second.accuracy(zeroshot(), task) == plain and (second.features.computed, second.features.loaded) == (0, 1)
        assert calls == []  # read from disk: no image went through the tower
        (key, (_, computed)), (_, (_, loaded)) = *first.features._features.items(), *second.features._features.items()
        assert [len(f) for f, _ in loaded] == [4, 4, 4]
        assert all(torch.equal(a, b) and torch.equal(la, lb) for (a, la), (b, lb) in zip(computed, loaded))
        other_batch = Evaluator(ctx, 3, progress=False, decoded_cache_dir=cache)
        other_batch.accuracy(zeroshot(), task)
        assert other_batch.features.computed == 1 and len(entries()) == 2
        with torch.no_grad():
            ctx.model.visual.proj.mul_(-1.0)  # other weights: other features
        changed = Evaluator(ctx, 4, progress=False, decoded_cache_dir=cache)
        assert changed.accuracy(zeroshot(), task) == Evaluator(ctx, 4, progress=False, feature_cache=False).accuracy(zeroshot(), task)
        assert changed.features.computed == 1 and changed.features.loaded == 0 and len(entries()) == 3
    finally:
        del ctx.model.encode_image
        ctx.model.load_state_dict(ctx.pretrained_state)


def test_a_feature_entry_written_first_is_kept_and_no_staging_is_left(tmp_path):
    """Two writers of one entry: the rename of the second fails on the finished first, which stays valid."""
    from condu_bench.training.feature_cache import read_entry, write_entry

    entry = tmp_path / "features" / "0123abcd"
    first = [(torch.ones(2, 3), torch.tensor([0, 1])), (torch.zeros(1, 3), torch.tensor([2]))]
    write_entry(entry, first, {"split": "s"})
    write_entry(entry, [(torch.full((3, 3), 7.0), torch.tensor([5, 5, 5]))], {"split": "s"})
    got = read_entry(entry, torch.device("cpu"))
    assert [torch.equal(f, g) and torch.equal(l, m) for (f, l), (g, m) in zip(first, got)] == [True, True]
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]
    assert read_entry(tmp_path / "features" / "missing", torch.device("cpu")) is None


def test_prompt_methods_classify_cached_features_as_they_classify_images(ctx, tmp_path):
    from condu_bench.registries import METHODS

    task = TaskData("photos", ["a", "b", "c"], ["a {}."], test=write_photos(tmp_path / "photos", n=12))
    ctx.label_space = [task]
    for name in ("coop", "cocoop", "kgcoop"):
        method = METHODS.get(name)()
        method.setup(ctx)
        assert method.frozen_image_tower
        images = torch.stack([ctx.eval_transform(task.test[i][0]) for i in range(4)])
        from condu_bench.models.classifier import image_features

        with torch.no_grad():
            assert torch.equal(method.logits(images, task, ctx),
                               method.logits_from_features(image_features(ctx.model, images), task, ctx))
            assert torch.equal(method.logits(images, None, ctx),
                               method.logits_from_features(image_features(ctx.model, images), None, ctx))
        with_cache = Evaluator(ctx, 4, progress=False).accuracy(method, task)
        assert with_cache == Evaluator(ctx, 4, progress=False, feature_cache=False).accuracy(method, task)


def test_a_method_declaring_a_frozen_tower_cannot_train_it(ctx):
    from condu_bench.training.loop import select_trainable

    class Liar(BaseMethod):
        name = "liar"
        frozen_image_tower = True

        def trainable_parameters(self, model):
            return [("visual.proj", model.visual.proj)]

        def logits_from_features(self, features, task, ctx):
            return None

    with pytest.raises(UserError, match="frozen_image_tower"):
        select_trainable(ctx.model, Liar())
    ctx.model.requires_grad_(False)


def test_a_frozen_tower_declaration_needs_logits_from_features():
    from condu_bench.method import check_method_class

    class Incomplete:
        frozen_image_tower = True

    with pytest.raises(UserError, match="logits_from_features"):
        check_method_class("incomplete", type("X", (Incomplete,), {k: getattr(BaseMethod, k) for k in
                                                                   ("name", "trains", "Config", "setup", "trainable_parameters",
                                                                    "before_task", "training_loss", "after_iteration",
                                                                    "after_task", "logits", "state_dict", "load_state_dict",
                                                                    "report")}))


def test_cache_command_reports_entries_and_sizes_and_clears(ctx, tmp_path, capsys):
    from condu_bench.cli import main

    task = TaskData("photos", ["a", "b", "c"], ["a {}."], test=write_photos(tmp_path / "photos"))
    evaluate(ctx, task, tmp_path / "cache")
    (entry,) = dc.cache_entries(tmp_path / "cache")
    assert entry["bytes"] == sum(p.stat().st_size for p in Path(entry["path"]).iterdir())
    assert main(["cache", "--dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert f"| photos | 10 | {entry['bytes'] / 2**20:.1f} |" in out and "1 entries" in out
    Evaluator(ctx, 4, progress=False, decoded_cache_dir=tmp_path / "cache").accuracy(zeroshot(), task)  # features too
    assert main(["cache", "--dir", str(tmp_path / "cache")]) == 0
    assert "image features (frozen image towers)" in capsys.readouterr().out
    (tmp_path / "cache" / ".deadbeef.x1y2").mkdir()  # what a build killed mid-way leaves
    assert main(["cache", "--dir", str(tmp_path / "cache"), "--clear"]) == 0
    out = capsys.readouterr().out
    assert "1 unfinished builds" in out and "1 feature entries" in out
    assert dc.cache_entries(tmp_path / "cache") == [] and list((tmp_path / "cache").iterdir()) == []


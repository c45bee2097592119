"""The synthetic base-to-novel scenario: halves, shots, validation draw and seeds."""

from __future__ import annotations

import numpy as np
import pytest

from condu_bench.errors import UnknownNameError, UserError
from condu_bench.registries import SCENARIOS
from condu_bench.synthetic.domains import domain_classnames, make_domain_split

OPTIONS = {"domains": ["shapes", "counts"], "shots": 4, "n_pool_per_class": 12, "n_test_per_class": 6}


@pytest.fixture(scope="module")
def scenario():
    return SCENARIOS.get("synthetic_b2n")(OPTIONS, 1)


def _rows(dataset):
    return {dataset.images[i].tobytes() for i in range(len(dataset))}


def test_each_domain_trains_base_and_scores_both_halves(scenario):
    assert scenario.protocol == "base_to_novel"
    assert [s.name for s in scenario.streams] == ["shapes", "counts"]
    counts = scenario.streams[1]
    base, novel = counts.evaluate
    assert counts.train == [base]
    assert base.classnames == ["one", "two", "three"] and novel.classnames == ["four", "five"]  # ceil(5/2) base
    assert base.train is not None and novel.train is None
    # 4 shots of each base class, 4 validation shots, relabelled 0..; tests hold every test image of the half
    assert sorted(base.train.targets) == sorted([0, 1, 2] * 4)
    assert sorted(base.val.targets) == sorted([0, 1, 2] * 4)
    assert sorted(novel.test.targets) == sorted([0, 1] * 6)


def test_shots_are_pool_images_of_their_class_and_val_is_disjoint(scenario):
    shapes_base = scenario.streams[0].evaluate[0]
    pool = make_domain_split("shapes", "train", n_per_class=12, image_size=32, seed=0)
    names = domain_classnames("shapes")
    by_bytes = {pool.images[i].tobytes(): names[pool.targets[i]] for i in range(len(pool))}
    for split in (shapes_base.train, shapes_base.val):
        for i in range(len(split)):
            assert by_bytes[split.images[i].tobytes()] == shapes_base.classnames[split.targets[i]]
    assert not _rows(shapes_base.train) & _rows(shapes_base.val)


def test_seed_draws_other_shots_but_the_same_test_images(scenario):
    other = SCENARIOS.get("synthetic_b2n")(OPTIONS, 2)
    a, b = scenario.streams[0].evaluate[0], other.streams[0].evaluate[0]
    assert _rows(a.train) != _rows(b.train)
    assert np.array_equal(a.test.images, b.test.images)
    again = SCENARIOS.get("synthetic_b2n")(OPTIONS, 1).streams[0].evaluate[0]
    assert np.array_equal(again.train.images, a.train.images)


def test_bad_options_are_clear_errors():
    with pytest.raises(UnknownNameError, match="shapez"):
        SCENARIOS.get("synthetic_b2n")({"domains": ["shapez"]}, 1)
    with pytest.raises(UserError, match="n_pool_per_class"):
        SCENARIOS.get("synthetic_b2n")({"shots": 16, "n_pool_per_class": 10}, 1)
    with pytest.raises(UserError, match="unknown key 'shot'"):
        SCENARIOS.get("synthetic_b2n")({"shot": 4}, 1)


def test_val_per_class_sets_the_validation_draw_and_keeps_the_shots(scenario):
    larger = SCENARIOS.get("synthetic_b2n")({**OPTIONS, "val_per_class": 7}, 1)
    default, wide = scenario.streams[1].evaluate[0], larger.streams[1].evaluate[0]
    assert sorted(wide.val.targets) == sorted([0, 1, 2] * 7)  # counts' three base classes, 7 each
    assert np.array_equal(wide.train.images, default.train.images)  # the training shots do not move
    assert not _rows(wide.train) & _rows(wide.val)
    assert wide.info["val_per_class"] == 7 and default.info["val_per_class"] == 4
    with pytest.raises(UserError, match=r"must hold the 4 training shots and 9 validation images"):
        SCENARIOS.get("synthetic_b2n")({**OPTIONS, "val_per_class": 9}, 1)
    with pytest.raises(UserError, match="val_per_class must be a positive"):
        SCENARIOS.get("synthetic_b2n")({**OPTIONS, "val_per_class": 0}, 1)

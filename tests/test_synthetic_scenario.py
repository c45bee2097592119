"""The synthetic MTIL scenario: order, options, few-shot draws, Avalanche stream."""

from collections import Counter

import pytest

from condu_bench.errors import UnknownNameError, UserError
from condu_bench.scenarios.synthetic import build_synthetic_mtil

SMALL = {"n_train_per_class": 6, "n_test_per_class": 3, "order": ["shapes", "counts"]}


def test_order_and_task_data():
    scenario = build_synthetic_mtil(SMALL, seed=0)
    (stream,) = scenario.streams
    assert [t.name for t in stream.train] == ["shapes", "counts"]
    assert stream.evaluate == stream.train
    for task in stream.train:
        assert len(task.train) == 6 * task.num_classes and len(task.test) == 3 * task.num_classes
        assert task.split_convention == "synthetic"
    assert scenario.protocol == "mtil" and not scenario.task_agnostic


def test_few_shot_draws_k_per_class_seeded():
    draw = lambda seed: build_synthetic_mtil({**SMALL, "shots": 2}, seed=seed).streams[0].train[0].train
    a, b, c = draw(1), draw(1), draw(2)
    assert set(Counter(a.targets).values()) == {2}
    assert a.indices == b.indices
    assert a.indices != c.indices
    image, label = a[0]
    assert label == a.targets[0]


def test_task_agnostic_label_spaces():
    known = build_synthetic_mtil(SMALL, seed=0)
    agnostic = build_synthetic_mtil({**SMALL, "task_agnostic": True}, seed=0)
    union = build_synthetic_mtil({**SMALL, "task_agnostic": True, "label_space": "union"}, seed=0)
    assert (known.name, agnostic.name, union.name) == ("synthetic_mtil", "synthetic_mtil_agnostic", "synthetic_mtil_agnostic_union")
    assert agnostic.label_space == agnostic.info["label_space"] == "dataset" and "label_space" not in known.info
    for scenario, spans_all in ((known, False), (agnostic, False), (union, True)):
        (stream,) = scenario.streams
        for task in stream.evaluate:
            names = [t.name for t in scenario.evaluation_space(stream, task)]
            assert names == (["shapes", "counts"] if spans_all else [task.name])


def test_bad_options():
    with pytest.raises(UserError, match="unknown key 'n_train'"):
        build_synthetic_mtil({"n_train": 3}, seed=0)
    with pytest.raises(UserError, match="label_space must be one of dataset, union, not 'all'"):
        build_synthetic_mtil({**SMALL, "task_agnostic": True, "label_space": "all"}, seed=0)
    with pytest.raises(UserError, match="label_space=union needs task_agnostic: true"):
        build_synthetic_mtil({**SMALL, "label_space": "union"}, seed=0)
    with pytest.raises(UnknownNameError, match="did you mean 'shapes'"):
        build_synthetic_mtil({"order": ["shapez"]}, seed=0)


def test_avalanche_stream_has_one_experience_per_domain_with_task_labels():
    from condu_bench.scenarios.avalanche_stream import build_avalanche_benchmark

    scenario = build_synthetic_mtil(SMALL, seed=0)
    identity = lambda x: x
    benchmark = build_avalanche_benchmark(scenario.streams[0], identity, identity)
    experiences = list(benchmark.train_stream)
    assert [e.task_label for e in experiences] == [0, 1]
    assert [e.task_data.name for e in experiences] == ["shapes", "counts"]
    assert experiences[1].classes_in_this_experience_names == experiences[1].task_data.classnames
    image, label, task_label = experiences[1].dataset[0]
    assert task_label == 1 and label == scenario.streams[0].train[1].train.targets[0]


def test_the_label_space_is_hashed_even_at_its_default():
    """A task-agnostic result from before the option (scored over the union) never passes for a finished run of the
    default (each dataset's own classes): the default is written into the run's config, and so into its hash."""
    from condu_bench.config import load_config
    from condu_bench.experiment import config_hash, method_run_config

    def resolved(*options):
        config = load_config(None, ["scenario.options.task_agnostic=true", *options])
        return method_run_config(config, "zeroshot", 0, None, config.train)

    default, explicit, union = resolved(), resolved("scenario.options.label_space=dataset"), resolved("scenario.options.label_space=union")
    assert default["scenario"]["options"]["label_space"] == "dataset"
    assert config_hash(default) == config_hash(explicit) != config_hash(union)
    known = load_config(None, [])
    assert "label_space" not in method_run_config(known, "zeroshot", 0, None, known.train)["scenario"]["options"]

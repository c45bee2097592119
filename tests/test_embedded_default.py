"""The embedded default behaves like CLIP + MTIL in miniature, checked on the real default run.

Uses the tiny CLIP from the user cache (pretrained on first need, a few minutes on 2 cores) and the default
benchmark file unchanged, so what is asserted is what `condu-bench run` shows. The thresholds keep a margin
below what was measured over training seeds 0-2 and tiny CLIPs pretrained with seeds 0-2 (floating-point
results differ between CPUs; the README's world table gives the measured values).
"""

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    from condu_bench.cli import resolve_benchmark
    from condu_bench.config import load_config
    from condu_bench.experiment import run_experiment

    config = load_config(resolve_benchmark(None), ["progress=false"])
    out = tmp_path_factory.mktemp("default")
    records = run_experiment(config, out, log=lambda *_: None)
    return config, out, {r["method"]: r for r in records}


def matrix(out, method):
    from condu_bench.reporting.matrix_io import read_accuracy_matrix

    values, steps, _ = read_accuracy_matrix(out / method / "seed0" / "accuracy_matrix.csv")
    return values, steps


@pytest.fixture(scope="module")
def facts(default_run):
    from condu_bench.synthetic.world_check import facts_of

    _, out, records = default_run
    ft, _ = matrix(out, "finetune")
    return facts_of(records["zeroshot"], records["finetune"], ft)


def gate(name):
    from condu_bench.synthetic.world_check import GATES

    return [p for p in GATES if p.name == name]


@pytest.mark.parametrize("name", ["zero-shot mean", "zero-shot max", "zero-shot min over chance"])
def test_zero_shot_is_above_chance_with_room_to_learn(facts, name):
    for prop in gate(name):
        assert prop.margin(facts) >= 0, (prop.describe(), prop.measure(facts), facts["zs"])


@pytest.mark.parametrize("name", ["FT diagonal mean", "FT diagonal min"])
def test_finetuning_learns_each_task(facts, name):
    (prop,) = gate(name)
    assert prop.margin(facts) >= 0, (prop.describe(), facts["diagonal"], facts["zs"])


def test_finetuning_helps_and_forgets(facts):
    for name in ("FT Last - zero-shot Last", "zero-shot Transfer - FT Transfer"):
        (prop,) = gate(name)
        assert prop.margin(facts) >= 0, (prop.describe(), prop.measure(facts))


def test_forgetting_is_visible_in_the_matrix(facts):
    (prop,) = gate("FT largest forgetting")
    assert prop.margin(facts) >= 0, facts["forgetting"]  # some domain loses accuracy after later training


def test_every_gate_is_tested():
    from condu_bench.synthetic.world_check import GATES

    tested = {"zero-shot mean", "zero-shot max", "zero-shot min over chance", "FT diagonal mean", "FT diagonal min",
              "FT Last - zero-shot Last", "zero-shot Transfer - FT Transfer", "FT largest forgetting"}
    assert {p.name for p in GATES} == tested


def test_a_method_reduces_forgetting(default_run):
    config, _, records = default_run
    if "wise_ft" not in config.methods:
        pytest.skip("the default method list has no forgetting-reducing method")
    assert records["wise_ft"]["transfer"] > records["finetune"]["transfer"]


def test_leaderboard_files(default_run):
    from condu_bench.reporting.run_report import write_leaderboard

    config, out, records = default_run
    text = write_leaderboard(out, list(records.values()))
    assert (out / "leaderboard.csv").is_file()
    for method in config.methods:
        assert f"| {method} |" in text
    saved = json.loads((out / "finetune" / "seed0" / "metrics.json").read_text())
    assert saved["model"]["weights_sha256"] and saved["model"]["pretrained"] == "synthetic"

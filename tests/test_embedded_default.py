"""The embedded default behaves like CLIP + MTIL in miniature (issue 2, point 3), checked on the real run.

Uses the calibrated tiny CLIP from the user cache (pretrained on first need, a few minutes on 2 cores) and
the default benchmark file unchanged, so what is asserted is what `condu-bench run` shows.
"""

import json

import pytest

from condu_bench.cli import resolve_benchmark
from condu_bench.config import load_config
from condu_bench.experiment import run_experiment


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    config = load_config(resolve_benchmark(None), ["progress=false"])
    out = tmp_path_factory.mktemp("default")
    records = run_experiment(config, out, log=lambda *_: None)
    return config, out, {r["method"]: r for r in records}


def test_zero_shot_is_above_chance_with_room_to_learn(default_run):
    from condu_bench.synthetic.domains import domain_classnames

    _, _, records = default_run
    per_dataset = records["zeroshot"]["per_dataset"]
    for domain, metrics in per_dataset.items():
        chance = 100.0 / len(domain_classnames(domain))
        assert metrics["last"] >= 2 * chance, (domain, metrics["last"], chance)
    at_most_90 = [d for d, m in per_dataset.items() if m["last"] <= 90.0]
    assert len(at_most_90) >= len(per_dataset) / 2, per_dataset


def test_finetuning_helps_and_forgets(default_run):
    _, _, records = default_run
    zs, ft = records["zeroshot"], records["finetune"]
    assert ft["last"] > zs["last"]  # fine-tuning helps
    assert ft["transfer"] <= zs["transfer"] - 5.0  # ... and costs zero-shot transfer


def test_forgetting_is_visible_in_the_matrix(default_run):
    from condu_bench.reporting.matrix_io import read_accuracy_matrix

    _, out, _ = default_run
    matrix, steps, _ = read_accuracy_matrix(out / "finetune" / "seed0" / "accuracy_matrix.csv")
    drops = [matrix[i, i] - matrix[-1, i] for i in range(len(steps) - 1)]
    assert max(drops) >= 5.0, drops  # some domain loses accuracy after later training


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

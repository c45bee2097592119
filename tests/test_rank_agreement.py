"""The synthetic leaderboard's ranking against a published table: Kendall tau-b per metric, in the report."""

from pathlib import Path

import pytest

from report_fixtures import small_matrix, write_mtil_run

PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "published"
NAMES = ["shapes", "colours", "digits"]


def runs(root: Path, offsets: dict[str, float], config=None) -> Path:
    for method, offset in offsets.items():
        for seed in (0, 1):
            write_mtil_run(root, "synthetic_mtil", method, seed, small_matrix(offset + seed * 0.1), NAMES, config=config)
    return root


def test_tau_per_metric_over_the_methods_both_tables_have(tmp_path):
    from condu_bench.reporting.collect import collect_runs, group_runs
    from condu_bench.reporting.rank_agreement import rank_agreement, ranking_reference

    # every metric of the harness orders zeroshot < lwf < finetune < icarl (the offsets shift whole matrices)
    runs(tmp_path / "a", {"zeroshot": 0.0, "lwf": 5.0, "finetune": 10.0, "icarl": 15.0, "mine": 3.0})
    runs(tmp_path / "b", {"icarl": 1.0}, config={"train": {"lr": 2e-5}})  # a second icarl configuration
    filename, published = ranking_reference("synthetic_mtil", PUBLISHED)
    assert filename == "mtil_order1.csv"
    agreements, left_out = rank_agreement(group_runs(collect_runs([tmp_path / "a"])), published)
    tau = {a.metric: a.tau for a in agreements}
    # published order I: Last 65.3 / 74.6 / 77.3 / 80.1 (the same order); Transfer 69.4 / 56.9 / 44.6 / 50.4
    # (1 of 6 pairs concordant: finetune < icarl); Avg 65.3 / 64.7 / 55.9 / 65.7 (3 of 6)
    assert tau == pytest.approx({"last": 1.0, "transfer": -2 / 3, "avg": 0.0})
    assert left_out == ["mine (no published row)"]
    assert {p[1] for p in agreements[0].pairs} == {"Zero-shot", "LwF", "Continual-FT", "iCaRL"}
    _, left_out = rank_agreement(group_runs(collect_runs([tmp_path / "a", tmp_path / "b"])), published)
    assert "icarl (2 configurations)" in left_out  # which configuration would count is not the report's guess
    assert ranking_reference("synthetic_mtil_agnostic", PUBLISHED) is None


def test_the_report_writes_the_ranking_table(tmp_path):
    from condu_bench.reporting.report import build_report

    runs(tmp_path / "runs", {"zeroshot": 0.0, "finetune": 10.0, "icarl": 15.0})
    build_report([tmp_path / "runs"], tmp_path / "out", published_dir=PUBLISHED)
    table = (tmp_path / "out" / "tables" / "ranking_synthetic_mtil.md").read_text()
    assert "Kendall tau-b" in table and "mtil_order1.csv" in table
    # Last: 65.3 < 77.3 < 80.1 as in the harness -> 1.00; Transfer: zs 69.4 > icarl 50.4 > ft 44.6 -> 1 of 3 pairs
    assert "| 1.00 |" in table and "-0.33" in table

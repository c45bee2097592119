"""Paper-layout tables from hand-made result directories: numbers, mean ± std, bolding, published rows, empty cells."""

from __future__ import annotations

import math

import numpy as np
import pytest
from report_fixtures import REPO, small_matrix, write_b2n_run, write_mtil_run, zscl_matrix

from condu_bench.errors import UserError
from condu_bench.reporting.collect import collect_runs, group_runs
from condu_bench.reporting.paper_tables import (
    DIFF,
    PUBLISHED,
    RUN,
    base_to_novel_table,
    cost_table,
    beyond_table,
    load_published,
    mtil_tables,
)
from condu_bench.reporting.table_writers import to_csv, to_latex, to_markdown

PUB = REPO / "results" / "published"


def order1_published():
    return load_published(PUB / "mtil_order1.csv", PUB / "zscl_matrices", "order1", PUB / "mtil_order1_per_dataset.csv")


def test_zscl_released_matrices_reproduce_the_published_rows(tmp_path):
    for k, (file, method) in enumerate((("zscl", "zscl"), ("continual-ft", "finetune"), ("lwf", "lwf"), ("icarl", "icarl"))):
        values, names = zscl_matrix(file)
        write_mtil_run(tmp_path, "mtil_orderI", method, 0, values, names)
    groups = group_runs(collect_runs([tmp_path]))
    tables = {t.name.rsplit("_", 1)[-1]: t for t in mtil_tables("mtil_orderI", groups, order1_published())}
    expected = {"zscl": (68.1, 75.4, 83.6), "finetune": (44.6, 55.9, 77.3), "lwf": (56.9, 64.7, 74.6), "icarl": (50.4, 65.7, 80.1)}
    for method, numbers in expected.items():
        for key, number in zip(("transfer", "avg", "last"), numbers):
            table = tables[key]
            k = next(i for i, r in enumerate(table.rows) if r.label == method)
            run, published, diff = table.rows[k:k + 3]
            assert (run.kind, published.kind, diff.kind) == (RUN, PUBLISHED, DIFF)
            assert round(run.value("Average"), 1) == number
            assert published.value("Average") == number and "ZSCL released" in published.source
            assert abs(diff.value("Average")) < 0.05
    # per dataset: ZSCL's cells equal the published per-dataset CSV (e.g. Transfer on Caltech101 86.0, Last on MNIST 98.7)
    last = tables["last"]
    zscl_row = next(r for r in last.rows if r.label == "zscl")
    assert round(zscl_row.value("MNIST"), 1) == 98.7 and round(zscl_row.value("Aircraft"), 1) == 40.6
    transfer = tables["transfer"]
    assert round(next(r for r in transfer.rows if r.label == "zscl").value("Caltech101"), 1) == 86.0
    assert next(r for r in transfer.rows if r.label == "zscl").value("Aircraft") is None  # first dataset: no transfer
    md = to_markdown(last)
    zscl_line = next(line for line in md.splitlines() if line.startswith("| zscl | 1 |"))
    assert zscl_line.split(" | ")[2].strip("*<u>/") == "40.6" and "ZSCL (published)" in md
    assert zscl_line.endswith("| **83.6** |")  # ZSCL's Last is the best of these four methods and their paper rows


def test_seed_aggregation_mean_std_and_config_groups(tmp_path):
    names = ["a", "b", "c"]
    for seed, offset in ((0, -1.0), (1, 0.0), (2, 1.0)):  # seeds run with different CPU thread counts: one setting
        write_mtil_run(tmp_path / "sweep", "synthetic_mtil", "finetune", seed, small_matrix(offset), names,
                       config={"num_threads": None if seed == 0 else seed})
    write_mtil_run(tmp_path / "other", "synthetic_mtil", "finetune", 0, small_matrix(5.0), names, config={"train": {"lr": 1e-3}})
    # an archived replaced run is ignored
    write_mtil_run(tmp_path / "sweep" / "old.replaced-20260101", "synthetic_mtil", "finetune", 0, small_matrix(50.0), names)
    groups = group_runs(collect_runs([tmp_path / "sweep", tmp_path / "other"]))
    assert len(groups) == 2 and sorted(len(g.runs) for g in groups) == [1, 3]
    (avg,) = [t for t in mtil_tables("synthetic_mtil", groups) if t.name.endswith("_avg")]
    three = next(r for r in avg.rows if r.seeds == 3)
    assert three.label.startswith("finetune [")  # two configs of one method: the label carries the config key
    # Avg of "a" = mean(80, 60, 50) = 63.33; seeds offset -1/0/+1 -> std 1
    assert three.cells["a"].mean == pytest.approx(190 / 3) and three.cells["a"].std == pytest.approx(1.0)
    assert three.cells["a"].n == 3 and len(three.cells["a"].runs) == 3
    assert "63.3 ± 1.0" in to_markdown(avg)
    assert r"63.3$\pm$1.0" in to_latex(avg)
    one = next(r for r in avg.rows if r.seeds == 1)
    assert one.cells["a"].std is None and "| 1 | **68.3** |" in to_markdown(avg)  # one seed: no ± part; best: bold
    beyond = beyond_table("synthetic_mtil", groups)
    seeds3 = next(r for r in beyond.rows if r.seeds == 3)
    assert seeds3.cells["a BWT"].mean == pytest.approx(-30.0) and seeds3.cells["a BWT"].std == pytest.approx(0.0)
    assert seeds3.cells["Area"].mean == pytest.approx((80 + 75 + 215 / 3) / 3)


def test_best_bold_second_underlined_and_empty_placeholder_rows(tmp_path):
    names = ["a", "b", "c"]
    write_mtil_run(tmp_path, "synthetic_mtil", "zscl", 0, small_matrix(2.0), names)
    write_mtil_run(tmp_path, "synthetic_mtil", "lwf", 0, small_matrix(1.0), names)
    write_mtil_run(tmp_path, "synthetic_mtil", "finetune", 0, small_matrix(0.0), names)
    groups = group_runs(collect_runs([tmp_path]))
    (last,) = [t for t in mtil_tables("synthetic_mtil", groups, wanted=["zscl", "lwf", "finetune", "condu"],
                                      placeholders=True) if t.name.endswith("_last")]
    tex = to_latex(last)
    assert r"zscl & 1 & \textbf{52.0}" in tex and r"lwf & 1 & \underline{51.0}" in tex and r"finetune & 1 & 50.0" in tex
    condu = next(r for r in last.rows if r.label == "condu")
    assert condu.seeds == 0 and all(s.mean is None for s in condu.cells.values())
    assert "| condu |  | — | — | — | — |" in to_markdown(last)
    assert r"condu &  & -- & -- & -- & --" in tex
    csv_text = to_csv(last)
    assert "condu,run,no run yet,a,,,0," in csv_text  # an empty cell stays empty in the CSV, not 0


def test_base_to_novel_average_hm_and_published(tmp_path):
    write_b2n_run(tmp_path, "coop", 1, {"DTD": (80.0, 40.0), "EuroSAT": (90.0, 60.0)})
    write_b2n_run(tmp_path, "coop", 2, {"DTD": (82.0, 42.0), "EuroSAT": (92.0, 62.0)})
    groups = group_runs(collect_runs([tmp_path]))
    published = load_published(PUB / "b2n_average.csv", per_dataset_csv=PUB / "b2n_hm_per_dataset.csv")
    table = base_to_novel_table("base_to_novel", groups, published)
    run, pub, diff = table.rows[:3]
    base, novel = np.mean([85, 87]), np.mean([50, 52])
    assert run.value("Average HM") == pytest.approx(2 * base * novel / (base + novel))
    assert run.value("DTD HM") == pytest.approx(2 * 81 * 41 / 122)
    assert pub.label == "CoOp (published)" and pub.value("Average HM") == 71.66 and pub.value("DTD HM") == 54.24
    assert diff.value("DTD HM") == pytest.approx(2 * 81 * 41 / 122 - 54.24)
    assert pub.value("DTD Base") is None  # the per-dataset file holds HM only: Base stays empty, not invented


def test_cost_block_fills_only_recorded_fields(tmp_path):
    names = ["a", "b", "c"]
    write_mtil_run(tmp_path, "s", "zscl", 0, small_matrix(), names)
    write_mtil_run(tmp_path, "s", "zscl", 1, small_matrix(), names, extra={"method_report": {"trainable_parameters": 1234}})
    table = cost_table("s", group_runs(collect_runs([tmp_path])))
    row = table.rows[0]
    assert row.cells["training time (s)"].mean == pytest.approx(10.5) and row.cells["training time (s)"].n == 2
    assert row.cells["trainable params"].mean == 1234 and row.cells["trainable params"].n == 1
    assert row.cells["peak GPU memory (MiB)"].mean is None
    assert any("peak GPU memory (MiB)" in n and "not estimated" in n for n in table.notes)


def test_missing_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        collect_runs([tmp_path / "nope"])


def test_fewshot_and_task_agnostic_variants(tmp_path):
    from condu_bench.reporting.report import published_for

    names = ["a", "b", "c"]
    write_mtil_run(tmp_path / "fs", "mtil_orderI_fewshot", "condu", 0, small_matrix(), names)
    write_mtil_run(tmp_path / "ta", "mtil_orderI_task_agnostic", "condu", 0, small_matrix(), names)
    fewshot = group_runs(collect_runs([tmp_path / "fs"]))
    published = published_for("mtil_orderI_fewshot", "mtil", PUB)
    (transfer,) = [t for t in mtil_tables("mtil_orderI_fewshot", fewshot, published) if t.name.endswith("_transfer")]
    run, pub, diff = transfer.rows[:3]
    assert pub.label == "ConDU (FT) (published)" and pub.value("Average") == 70.0 and pub.value("b") is None
    assert diff.value("Average") == pytest.approx(run.value("Average") - 70.0)
    # task-agnostic MTIL has no published table: the same layout, harness rows only
    assert published_for("mtil_orderI_task_agnostic", "mtil", PUB) is None
    agnostic = mtil_tables("mtil_orderI_task_agnostic", group_runs(collect_runs([tmp_path / "ta"])))
    assert [r.kind for r in agnostic[0].rows] == [RUN]


def test_cross_dataset_avg_c_excludes_the_source(tmp_path):
    import json

    from condu_bench.reporting.paper_tables import target_average_table

    for seed, shift in ((1, 0.0), (2, 2.0)):
        d = tmp_path / "coop" / f"seed{seed}"
        d.mkdir(parents=True)
        accuracies = {"ImageNet": 70.0 + shift, "DTD": 40.0 + shift, "EuroSAT": 50.0 + shift}
        d.joinpath("metrics.json").write_text(json.dumps({
            "scenario": "cross_dataset", "protocol": "cross_dataset", "method": "coop", "seed": seed,
            "source": accuracies["ImageNet"], "average": (accuracies["DTD"] + accuracies["EuroSAT"]) / 2,
            "per_dataset": {k: {"accuracy": v} for k, v in accuracies.items()}, "datasets": list(accuracies)}))
    table = target_average_table("cross_dataset", "cross_dataset", group_runs(collect_runs([tmp_path])))
    row = table.rows[0]
    assert table.columns[-2:] == ["Source", "Avg-C"]
    assert row.value("Avg-C") == pytest.approx(46.0) and row.cells["Avg-C"].std == pytest.approx(math.sqrt(2))
    assert row.value("Source") == pytest.approx(71.0) and row.value("DTD") == pytest.approx(41.0)
    assert "source is excluded" in " ".join(table.notes)


def test_inference_cost_is_evaluation_time_over_zero_shots(tmp_path):
    names = ["a", "b", "c"]
    write_mtil_run(tmp_path, "s", "zeroshot", 0, small_matrix(), names,
                   extra={"method_report": {"eval_seconds_per_image": 0.002}})
    for seed, t in ((0, 0.010), (1, 0.006)):
        write_mtil_run(tmp_path, "s", "condu", seed, small_matrix(), names,
                       extra={"method_report": {"eval_seconds_per_image": t}})
    table = cost_table("s", group_runs(collect_runs([tmp_path])))
    ratio = {r.label: r.cells["inference cost vs zero-shot"].mean for r in table.rows}
    assert ratio["condu"] == pytest.approx(0.008 / 0.002) and ratio["zeroshot"] == pytest.approx(1.0)
    assert any("inference cost" in n for n in table.notes)

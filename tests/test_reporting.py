"""Reporting: matrix CSV I/O, table writers, leaderboards, paper tables, plots and run reports."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from condu_bench.reporting.matrix_io import read_accuracy_matrix, write_accuracy_matrix
from condu_bench.reporting.plots import plot_accuracy_matrix, plot_metric_bars
from condu_bench.reporting.run_report import write_leaderboard, write_run_report
from condu_bench.reporting.tables import (
    build_tables,
    collect_results,
    leaderboard,
    match_method,
    paper_table,
    per_dataset_table,
    results_frame,
    to_csv,
    to_latex,
    to_markdown,
)

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "results" / "published"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def mtil_run(method, seed, transfer, avg, last, scenario="synthetic_mtil", per=None):
    per = per or {"shapes": {"transfer": None, "avg": avg, "last": last},
                  "digits": {"transfer": transfer, "avg": avg, "last": last}}
    return {"scenario": scenario, "protocol": "mtil", "method": method, "seed": seed, "transfer": transfer,
            "avg": avg, "last": last, "per_dataset": per, "datasets": list(per), "config_hash": f"h{seed}",
            "split_convention": "synthetic"}


def write_runs(root: Path, runs):
    for k, run in enumerate(runs):
        d = root / run["scenario"] / f"{run['method']}_s{run['seed']}_{k}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(run))


# ---------------------------------------------------------------- matrix CSV

def test_matrix_round_trip(tmp_path):
    matrix = np.array([[55.1155, 86.0023, 1 / 3], [48.5, 94.182, 68.55]])
    path = write_accuracy_matrix(tmp_path / "sub" / "accuracy_matrix.csv", matrix, ["Air craft", "Caltech"],
                                 ["Air craft", "Caltech", "CIFAR,100"])
    assert path.read_text().splitlines()[0] == 'step,Air craft,Caltech,"CIFAR,100"'
    got, steps, cols = read_accuracy_matrix(path)
    assert np.array_equal(got, matrix)  # exact, not approximately
    assert steps == ["Air craft", "Caltech"] and cols == ["Air craft", "Caltech", "CIFAR,100"]


def test_read_published_fixture():
    matrix, steps, cols = read_accuracy_matrix(PUBLISHED / "zscl_matrices" / "order1_zscl.csv")
    assert matrix.shape == (11, 11) and steps == cols and cols[0] == "Aircraft"
    assert matrix[0, 0] == pytest.approx(55.1155) and matrix[10, 10] == pytest.approx(80.2216)


def test_write_rejects_shape_mismatch(tmp_path):
    with pytest.raises(ValueError, match="does not match"):
        write_accuracy_matrix(tmp_path / "m.csv", np.zeros((2, 2)), ["a"], ["a", "b"])


@pytest.mark.parametrize(
    "text, problem",
    [
        ("task,a,b\nx,1,2\n", "first column must be 'step'"),
        ("step,a,b\nx,1,oops\n", "line 2, column 'b': non-numeric cell 'oops'"),
        ("step,a,b\nx,1,2\ny,1\n", "line 3 has 2 cells, the header has 3"),
        ("step,a,b\nx,1,2,3\n", "ragged"),
        ("", "empty"),
        ("step,a\n", "no data rows"),
        ("step,a\nx,nan\n", "non-finite"),
    ],
)
def test_malformed_matrix_files(tmp_path, text, problem):
    path = tmp_path / "bad_matrix.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        read_accuracy_matrix(path)
    assert str(path) in str(info.value) and problem in str(info.value)


# ---------------------------------------------------------------- writers

@pytest.fixture
def small_df():
    return pd.DataFrame({"method": ["wise_ft", "a|b"], "n_seeds": [2, 1], "avg": [55.04, float("nan")],
                         "last": [77.25, 80.0]})


def test_markdown(small_df):
    lines = to_markdown(small_df, decimals=1).splitlines()
    assert lines[0] == "| method | n_seeds | avg | last |"
    assert lines[1] == "|:---|---:|---:|---:|"
    assert lines[2] == "| wise_ft | 2 | 55.0 | 77.2 |"
    assert lines[3] == r"| a\|b | 1 | - | 80.0 |"
    assert len(lines) == 4


def test_csv_reloads_equal(tmp_path, small_df):
    path = to_csv(small_df, tmp_path / "t" / "table.csv")
    pd.testing.assert_frame_equal(pd.read_csv(path), small_df, check_dtype=False)


def test_latex_booktabs_and_escaping():
    df = pd.DataFrame({"method_name": ["lwf_vr", "R&D 50%"], "hm": [71.7, 77.0]})
    tex = to_latex(df)
    lines = tex.splitlines()
    assert lines[0] == r"\begin{tabular}{lr}" and lines[-1] == r"\end{tabular}"
    assert r"\toprule" in lines and r"\midrule" in lines and r"\bottomrule" in lines
    assert r"method\_name & hm \\" in lines
    assert r"lwf\_vr & 71.70 \\" in lines
    assert r"R\&D 50\% & 77.00 \\" in lines
    assert "lwf_vr" not in tex


# ---------------------------------------------------------------- results, leaderboard, paper tables

@pytest.mark.parametrize(
    "run, paper",
    [("finetune", "Continual-FT"), ("zeroshot", "Zero-shot"), ("zscl", "ZSCL"), ("zscl_star", "ZSCL*"),
     ("wise_ft", "WiSE-FT"), ("lwf", "LwF"), ("lwf_vr", "LwF-VR"), ("icarl", "iCaRL"), ("condu_ft", "ConDU (FT)"),
     ("condu_lora", "ConDU (LoRA)"), ("moe_adapters", "MoE-Adapters"), ("ZSCL", "ZSCL"), ("unknown", None)],
)
def test_match_method_mtil(run, paper):
    names = pd.read_csv(PUBLISHED / "mtil_order1.csv")["method"]
    assert match_method(run, names) == paper


@pytest.mark.parametrize("run, paper", [("zeroshot", "CLIP"), ("coop", "CoOp"), ("kgcoop", "KgCoOp"),
                                        ("clipfit", "CLIPFit"), ("coop_mergetune", "CoOp+MergeTune")])
def test_match_method_b2n(run, paper):
    assert match_method(run, pd.read_csv(PUBLISHED / "b2n_average.csv")["method"]) == paper


def test_collect_and_leaderboard_average_seeds(tmp_path):
    write_runs(tmp_path, [mtil_run("finetune", 0, 40.0, 50.0, 70.0), mtil_run("finetune", 1, 44.0, 54.0, 80.0),
                          mtil_run("zeroshot", 0, 60.0, 58.0, 58.0), mtil_run("zeroshot", 1, 60.0, 58.0, 58.0)])
    df = collect_results(tmp_path)
    assert len(df) == 4 and set(df["method"]) == {"finetune", "zeroshot"}
    board = leaderboard(df, "mtil").set_index("method")
    assert board.loc["finetune", "n_seeds"] == 2
    assert board.loc["finetune", "transfer"] == pytest.approx(42.0)
    assert board.loc["finetune", "last"] == pytest.approx(75.0)
    assert board.loc["finetune", "transfer_std"] == pytest.approx(math.sqrt(8.0))  # sample std of 40, 44
    assert board.loc["zeroshot", "avg"] == pytest.approx(58.0) and board.loc["zeroshot", "avg_std"] == 0.0


def test_leaderboard_single_seed_has_no_std_and_skips_missing_transfer():
    df = results_frame([mtil_run("finetune", 0, None, 50.0, 70.0)])
    board = leaderboard(df, "mtil")
    assert "transfer_std" not in board and math.isnan(board.loc[0, "transfer"])
    assert board.loc[0, "avg"] == 50.0


def test_b2n_leaderboard_hm_of_seed_averages():
    runs = [{"protocol": "base_to_novel", "method": "coop", "seed": s, "base": b, "novel": n,
             "hm": 2 * b * n / (b + n)} for s, b, n in ((1, 80.0, 60.0), (2, 70.0, 70.0))]
    board = leaderboard(results_frame(runs), "base_to_novel")
    assert board.loc[0, "base"] == pytest.approx(75.0) and board.loc[0, "novel"] == pytest.approx(65.0)
    assert board.loc[0, "hm"] == pytest.approx(2 * 75 * 65 / 140)  # 69.64, not the mean of seed HMs (69.29)


def test_collect_results_errors(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="metrics.json"):
        collect_results(tmp_path)
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"method": "x"}))
    with pytest.raises(ValueError, match="'protocol'"):
        collect_results(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        collect_results(tmp_path / "nope")


def test_paper_table_places_run_after_paper_row():
    df = results_frame([mtil_run("zscl", 0, 68.0, 75.0, 83.0), mtil_run("zscl", 1, 69.0, 76.0, 84.0),
                        mtil_run("my_method", 0, 1.0, 2.0, 3.0)])
    table = paper_table(df, PUBLISHED / "mtil_order1.csv")
    assert list(table.columns) == ["method", "transfer", "avg", "last", "source"]
    published = pd.read_csv(PUBLISHED / "mtil_order1.csv")
    assert len(table) == len(published) + 2
    k = table.index[(table["method"] == "ZSCL") & (table["source"] == "this run")][0]
    assert table.loc[k - 1, "method"] == "ZSCL" and table.loc[k - 1, "source"] == "ZSCL released result files"
    assert table.loc[k, ["transfer", "avg", "last"]].tolist() == pytest.approx([68.5, 75.5, 83.5])
    assert table.iloc[-1].tolist()[0::4] == ["my_method", "this run"]


def test_per_dataset_table_layout_and_seed_average():
    runs = [mtil_run("finetune", 0, 40.0, 50.0, 70.0), mtil_run("finetune", 1, 44.0, 54.0, 80.0),
            mtil_run("zeroshot", 0, 60.0, 58.0, 58.0)]
    table = per_dataset_table(runs, "transfer")
    assert list(table.columns) == ["method", "shapes", "digits", "average"]
    row = table.set_index("method").loc["finetune"]
    assert math.isnan(row["shapes"]) and row["digits"] == pytest.approx(42.0) and row["average"] == pytest.approx(42.0)
    assert table.set_index("method").loc["zeroshot", "digits"] == pytest.approx(60.0)


def test_per_dataset_table_with_published_rows():
    matrix, steps, cols = read_accuracy_matrix(PUBLISHED / "zscl_matrices" / "order1_zscl.csv")
    from condu_bench.metrics import mtil_metrics

    run = {"scenario": "mtil_order1", "protocol": "mtil", "method": "zscl", "seed": 0, "datasets": cols,
           **mtil_metrics(matrix, cols)}
    table = per_dataset_table([run], "last", PUBLISHED / "mtil_order1_per_dataset.csv")
    ours = table[table["source"] == "this run"].iloc[0]
    paper = table[(table["method"] == "ZSCL") & (table["source"] != "this run")].iloc[0]
    assert ours["method"] == "ZSCL"
    for name in cols:
        assert round(ours[name], 1) == pytest.approx(paper[name])
    assert round(ours["average"], 1) == round(paper["average"], 1) == 83.6


def test_build_tables_two_methods_two_seeds(tmp_path):
    S = "mtil_orderI"  # a scenario the papers measured, so a paper table is built
    root, out = tmp_path / "runs", tmp_path / "tables"
    write_runs(root, [mtil_run("finetune", 0, 40.0, 50.0, 70.0, S), mtil_run("finetune", 1, 44.0, 54.0, 80.0, S),
                      mtil_run("zscl", 0, 60.0, 70.0, 80.0, S), mtil_run("zscl", 1, 62.0, 71.0, 82.0, S)])
    written = build_tables(root, out, published_dir=PUBLISHED)
    names = {p.name for p in written}
    assert {"leaderboard_mtil_orderI.md", "leaderboard_mtil_orderI.csv", "leaderboard_mtil_orderI.tex",
            "paper_mtil_orderI.md", "per_dataset_mtil_orderI_last.csv"} <= names
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    board = pd.read_csv(out / "leaderboard_mtil_orderI.csv").set_index("method")
    assert board.loc["finetune", ["transfer", "avg", "last"]].tolist() == pytest.approx([42.0, 52.0, 75.0])
    assert board.loc["zscl", ["transfer", "avg", "last"]].tolist() == pytest.approx([61.0, 70.5, 81.0])
    assert board.loc["zscl", "last_std"] == pytest.approx(math.sqrt(2.0))
    md = (out / "leaderboard_mtil_orderI.md").read_text()
    assert "| mtil_orderI | finetune | synthetic | 2 | 42.0 | 2.8 | 52.0 | 2.8 | 75.0 | 7.1 |" in md
    paper = pd.read_csv(out / "paper_mtil_orderI.csv")
    assert ((paper["method"] == "Continual-FT") & (paper["source"] == "this run")).sum() == 1
    # without published_dir: leaderboard and per-dataset tables only
    only = build_tables(root, tmp_path / "plain", formats=("md",))
    assert len(only) == 4 and not any(p.name.startswith("paper_") for p in only)
    # the synthetic world is never set beside the papers' numbers
    write_runs(tmp_path / "synthetic", [mtil_run("finetune", 0, 40.0, 50.0, 70.0)])
    assert not any(p.name.startswith("paper_") for p in build_tables(tmp_path / "synthetic", tmp_path / "t2", published_dir=PUBLISHED))


def test_build_tables_empty_root(tmp_path):
    with pytest.raises(ValueError, match="no metrics.json"):
        build_tables(tmp_path, tmp_path / "out")


# ---------------------------------------------------------------- plots and reports

def test_plot_accuracy_matrix_png(tmp_path):
    path = plot_accuracy_matrix(np.array([[50.0, 20.0], [40.0, 80.0]]), ["a", "b"], ["a", "b"], tmp_path / "m.png", "t")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 2000


def test_plot_metric_bars_png(tmp_path):
    board = pd.DataFrame({"method": ["a", "b"], "transfer": [40.0, 60.0], "avg": [50.0, 70.0], "last": [70.0, 80.0],
                          "last_std": [1.0, float("nan")]})
    data = plot_metric_bars(board, tmp_path / "bars.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 2000


def test_importing_reporting_does_not_import_pyplot():
    code = "import sys, condu_bench.reporting.plots, condu_bench.reporting.tables; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_write_run_report(tmp_path):
    matrix, steps, cols = read_accuracy_matrix(PUBLISHED / "zscl_matrices" / "order1_zscl.csv")
    from condu_bench.metrics import mtil_metrics

    metrics = {"scenario": "mtil_order1", "protocol": "mtil", "method": "zscl", "seed": 0, "config_hash": "ab12cd34",
               "split_convention": "zscl", **mtil_metrics(matrix, cols)}
    path = write_run_report(tmp_path, metrics, matrix, steps, cols, pd.read_csv(PUBLISHED / "mtil_order1.csv"))
    text = path.read_text()
    assert "`ab12cd34`" in text and "Split convention: `zscl`" in text
    assert "| step | Aircraft | Caltech101 |" in text
    assert "| Aircraft | - | 45.1 | 40.6 |" in text  # per-dataset row: no Transfer for the first dataset
    assert "| average | 68.1 | 75.4 | 83.6 |" in text
    assert "| ZSCL | 68.1 | 75.4 | 83.6 | ZSCL released result files |" in text
    assert "ZSCL*" not in text.split("## Published numbers")[1]
    assert (tmp_path / "accuracy_matrix.png").read_bytes().startswith(PNG_MAGIC)


def test_write_run_report_without_published(tmp_path):
    metrics = mtil_run("my_method", 3, 10.0, 20.0, 30.0)
    text = write_run_report(tmp_path, metrics, [[1.0, 2.0], [3.0, 4.0]], ["shapes", "digits"],
                            ["shapes", "digits"], None).read_text()
    assert "No published numbers for `my_method`." in text


def test_write_leaderboard(tmp_path):
    runs = [mtil_run("finetune", 0, 40.0, 50.0, 70.0), mtil_run("finetune", 1, 44.0, 54.0, 80.0)]
    text = write_leaderboard(tmp_path, runs)
    saved = (tmp_path / "leaderboard.md").read_text()
    assert saved.startswith(text) and saved.rstrip().endswith("![mtil leaderboard](leaderboard.png)")
    assert (tmp_path / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| synthetic_mtil | finetune | synthetic | 2 | 42.0 | 2.8 | 52.0 | 2.8 | 75.0 | 7.1 |" in text
    csv = pd.read_csv(tmp_path / "leaderboard.csv")
    assert csv.loc[0, "protocol"] == "mtil" and csv.loc[0, "last"] == pytest.approx(75.0)


def test_published_tables_only_for_the_protocols_papers_measured(tmp_path):
    from condu_bench.reporting.tables import published_csv_for

    published = Path(__file__).resolve().parents[1] / "results" / "published"
    assert published_csv_for("mtil_orderI", "mtil", published).name == "mtil_order1.csv"
    assert published_csv_for("mtil_orderII", "mtil", published).name == "mtil_order2.csv"
    assert published_csv_for("mtil_orderI_fewshot", "mtil", published).name == "mtil_fewshot.csv"
    assert published_csv_for("base_to_novel", "base_to_novel", published).name == "b2n_average.csv"
    for scenario in ("synthetic_mtil", "mtil_custom", "mtil_orderI_agnostic", "mtil_orderI_coopsplits"):
        assert published_csv_for(scenario, "mtil", published) is None, scenario


@pytest.mark.parametrize("scenario, expected", [
    ("mtil_orderI", "mtil_order1.csv"),
    ("mtil_orderII", "mtil_order2.csv"),
    ("mtil_orderI_fewshot", "mtil_fewshot.csv"),
    ("mtil_orderII_fewshot", None),  # the few-shot table is order I; never the full-data order-II table
    ("mtil_orderII_fewshot_agnostic", None),
    ("mtil_orderI_fewshot_coopsplits", None),
    ("mtil_order2", "mtil_order2.csv"),
])
def test_published_table_of_each_mtil_scenario_name(scenario, expected):
    from condu_bench.reporting.tables import published_csv_for

    published = Path(__file__).resolve().parents[1] / "results" / "published"
    found = published_csv_for(scenario, "mtil", published)
    assert (found.name if found is not None else None) == expected


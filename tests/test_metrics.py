"""Protocol metrics: hand-computed matrices and ZSCL's released 11×11 matrices against the published rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from condu_bench.metrics import base_to_novel_metrics, harmonic_mean, mtil_metrics, target_average

PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "published"
MATRICES = PUBLISHED / "zscl_matrices"
FILE_TO_METHOD = {"continual-ft": "Continual-FT", "icarl": "iCaRL", "lwf": "LwF", "lwf-vr": "LwF-VR",
                  "wise-ft": "WiSE-FT", "zscl": "ZSCL", "zscl-star": "ZSCL*"}
# The order-II Continual-FT matrix has no published row; the README gives its averages.
EXTRA_ROWS = {("order2", "Continual-FT"): (46.6, 56.2, 67.4)}


# ---------------------------------------------------------------- hand-computed

A3 = [[50.0, 20.0, 30.0],
      [40.0, 80.0, 35.0],
      [30.0, 70.0, 90.0]]


def test_mtil_hand_computed_3x3():
    m = mtil_metrics(A3, ["a", "b", "c"])
    pd_ = m["per_dataset"]
    # Transfer: first dataset has none; b = A[0,1] = 20; c = mean(A[0,2], A[1,2]) = (30 + 35) / 2 = 32.5
    assert pd_["a"]["transfer"] is None
    assert pd_["b"]["transfer"] == pytest.approx(20.0)
    assert pd_["c"]["transfer"] == pytest.approx(32.5)
    assert m["transfer"] == pytest.approx((20.0 + 32.5) / 2)  # 26.25
    # The upper triangle pooled (20, 30, 35) would give 28.33: the protocol averages per dataset first.
    assert m["transfer"] != pytest.approx(85.0 / 3)
    # Avg: column means 40, 56.667, 51.667
    assert pd_["a"]["avg"] == pytest.approx(40.0)
    assert pd_["b"]["avg"] == pytest.approx(170.0 / 3)
    assert pd_["c"]["avg"] == pytest.approx(155.0 / 3)
    assert m["avg"] == pytest.approx((40.0 + 170.0 / 3 + 155.0 / 3) / 3)  # 49.444
    # Last: the final row
    assert [pd_[k]["last"] for k in "abc"] == [30.0, 70.0, 90.0]
    assert m["last"] == pytest.approx(190.0 / 3)


def test_zero_shot_rows_all_equal():
    row = [10.0, 40.0, 70.0]
    m = mtil_metrics([row, row, row], ["a", "b", "c"])
    # per dataset i >= 2: transfer = avg = last = the row's value
    for name, value in (("b", 40.0), ("c", 70.0)):
        assert m["per_dataset"][name] == pytest.approx({"transfer": value, "avg": value, "last": value})
    # Transfer averages datasets 2..T only, Avg and Last all T
    assert m["transfer"] == pytest.approx(55.0)
    assert m["avg"] == pytest.approx(40.0)
    assert m["last"] == pytest.approx(40.0)


def test_single_task_has_no_transfer():
    m = mtil_metrics([[42.5]], ["only"])
    assert m["transfer"] is None
    assert m["avg"] == 42.5 and m["last"] == 42.5
    assert m["per_dataset"] == {"only": {"transfer": None, "avg": 42.5, "last": 42.5}}


def test_returns_plain_floats():
    m = mtil_metrics(np.array(A3, dtype=np.float32), ["a", "b", "c"])
    assert type(m["avg"]) is float and type(m["per_dataset"]["b"]["last"]) is float


@pytest.mark.parametrize(
    "matrix, names, message",
    [
        ([[1.0, 2.0]], ["a", "b"], "square"),
        ([1.0, 2.0], ["a", "b"], "square"),
        (A3, ["a", "b"], "3 columns but 2 dataset names"),
        (A3, ["a", "b", "a"], "unique"),
        ([[1.0, np.nan], [1.0, 2.0]], ["a", "b"], "non-finite"),
        (np.zeros((0, 0)), [], "empty"),
    ],
)
def test_mtil_validation(matrix, names, message):
    with pytest.raises(ValueError, match=message):
        mtil_metrics(matrix, names)


# ---------------------------------------------------------------- ZSCL fixture

def _fixture_files():
    files = sorted(MATRICES.glob("*.csv"))
    assert len(files) == 14, files  # 7 methods × 2 orders: a missing file must fail, not skip
    return files


@pytest.mark.parametrize("path", _fixture_files(), ids=lambda p: p.stem)
def test_zscl_matrices_reproduce_published_rows(path):
    order, key = path.stem.split("_", 1)
    method = FILE_TO_METHOD[key]
    table = pd.read_csv(MATRICES / path.name, index_col="step")
    assert list(table.index) == list(table.columns)  # rows and columns in training order
    m = mtil_metrics(table.to_numpy(), list(table.columns))
    got = tuple(round(m[k], 1) for k in ("transfer", "avg", "last"))
    if (order, method) in EXTRA_ROWS:
        expected = EXTRA_ROWS[(order, method)]
        assert method not in set(pd.read_csv(PUBLISHED / f"mtil_{order}.csv")["method"])
    else:
        published = pd.read_csv(PUBLISHED / f"mtil_{order}.csv").set_index("method")
        expected = tuple(float(published.loc[method, k]) for k in ("transfer", "avg", "last"))
    assert got == pytest.approx(expected, abs=1e-9)


def test_zero_shot_published_row_follows_first_dataset_rule():
    # Zero-shot rows are all equal, so its order-I Transfer (69.4) is the mean of datasets 2..11, Avg (65.3) of all 11.
    per = pd.read_csv(PUBLISHED / "mtil_order1_per_dataset.csv")
    row = per[per["method"] == "Zero-shot"].iloc[0]
    names = [c for c in per.columns if c not in ("method", "metric", "source")]
    values = [float(row[n]) for n in names]
    m = mtil_metrics([values] * len(values), names)
    published = pd.read_csv(PUBLISHED / "mtil_order1.csv").set_index("method").loc["Zero-shot"]
    assert round(m["transfer"], 1) == published["transfer"] == 69.4
    assert round(m["avg"], 1) == published["avg"] and round(m["last"], 1) == published["last"]


@pytest.mark.parametrize("method, metric, file", [("ZSCL", "transfer", "order1_zscl.csv"),
                                                  ("ZSCL", "avg", "order1_zscl.csv"),
                                                  ("ZSCL", "last", "order1_zscl.csv"),
                                                  ("Continual-FT", "last", "order1_continual-ft.csv")])
def test_zscl_per_dataset_rows(method, metric, file):
    per = pd.read_csv(PUBLISHED / "mtil_order1_per_dataset.csv")
    row = per[(per["method"] == method) & (per["metric"] == metric)].iloc[0]
    table = pd.read_csv(MATRICES / file, index_col="step")
    m = mtil_metrics(table.to_numpy(), list(table.columns))
    checked = 0
    for name in table.columns:
        value = m["per_dataset"][name][metric]
        if pd.isna(row[name]):  # only the first dataset's Transfer is blank
            assert value is None and metric == "transfer" and name == table.columns[0]
        else:
            assert value == pytest.approx(float(row[name]), abs=0.05 + 1e-9)
            checked += 1
    assert checked == (10 if metric == "transfer" else 11)


# ---------------------------------------------------------------- base-to-novel, targets

@pytest.mark.parametrize("method", ["CLIP", "CoOp"])
def test_published_b2n_hm(method):
    row = pd.read_csv(PUBLISHED / "b2n_average.csv").set_index("method").loc[method]
    assert harmonic_mean(row["base"], row["novel"]) == pytest.approx(row["hm"], abs=0.01)


def test_harmonic_mean_values():
    assert harmonic_mean(0, 0) == 0.0
    assert harmonic_mean(50, 0) == 0.0
    assert harmonic_mean(80, 40) == pytest.approx(160.0 / 3)  # 2·80·40 / 120
    with pytest.raises(ValueError):
        harmonic_mean(-1, 10)


def test_b2n_average_row_is_hm_of_averages():
    m = base_to_novel_metrics({"a": (80.0, 40.0), "b": (60.0, 60.0)})
    assert m["per_dataset"]["a"] == pytest.approx({"base": 80.0, "novel": 40.0, "hm": 160.0 / 3})
    assert m["per_dataset"]["b"]["hm"] == pytest.approx(60.0)
    assert m["base"] == pytest.approx(70.0) and m["novel"] == pytest.approx(50.0)
    assert m["hm"] == pytest.approx(2 * 70 * 50 / 120)  # 58.33, not the mean of HMs (56.67)
    assert m["hm"] != pytest.approx((160.0 / 3 + 60.0) / 2)


def test_b2n_validation():
    with pytest.raises(ValueError):
        base_to_novel_metrics({})
    with pytest.raises(ValueError, match="'x'"):
        base_to_novel_metrics({"x": (1.0,)})


def test_target_average():
    assert target_average({"x": 50.0, "y": 70.0, "z": 90.0}) == pytest.approx(70.0)
    with pytest.raises(ValueError):
        target_average({})


def test_metrics_module_does_not_import_torch():
    code = "import sys, condu_bench.metrics; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split()[0] == "False"


def test_kendall_tau_b():
    from condu_bench.metrics import kendall_tau_b

    assert kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one swapped pair of 6: (C - D) / 6 = (5 - 1) / 6
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # ties: x = [1, 1, 2], y = [1, 2, 3]: C = 2, D = 0, ties only in x: 1 -> 2 / sqrt(2 * 3)
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / np.sqrt(6))
    with pytest.raises(ValueError):
        kendall_tau_b([1, 1], [2, 3])

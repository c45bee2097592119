"""Backward transfer, forgetting and the seen-task area against hand-computed matrices."""

import numpy as np
import pytest

from condu_bench.metrics import backward_transfer, forgetting, matrix_area, matrix_metrics

# rows = after training step j, columns = dataset i
A = np.array([[80.0, 10.0, 20.0],
              [60.0, 90.0, 30.0],
              [50.0, 95.0, 70.0]])
NAMES = ["a", "b", "c"]


def test_backward_transfer_by_hand():
    got = backward_transfer(A, NAMES)
    # a: 50 - 80 = -30; b: 95 - 90 = +5; c is the last dataset: no entry
    assert got["per_dataset"] == {"a": -30.0, "b": 5.0, "c": None}
    assert got["bwt"] == pytest.approx(-12.5)


def test_forgetting_uses_the_best_accuracy_after_learning():
    m = np.array([[70.0, 0, 0, 0], [85.0, 60.0, 0, 0], [75.0, 65.0, 50.0, 0], [72.0, 40.0, 55.0, 90.0]])
    got = forgetting(m, list("wxyz"))
    # w: max(70, 85, 75) - 72 = 13; x: max(60, 65) - 40 = 25; y: 50 - 55 = -5 (improved); z: last, none
    assert got["per_dataset"] == {"w": 13.0, "x": 25.0, "y": -5.0, "z": None}
    assert got["forgetting"] == pytest.approx(11.0)
    # before learning a dataset (above the diagonal) nothing counts: a high zero-shot value there is ignored
    m2 = m.copy()
    m2[0, 1] = 99.0
    assert forgetting(m2, list("wxyz"))["per_dataset"]["x"] == 25.0


def test_area_is_the_seen_task_curve():
    # step 0: 80; step 1: (60 + 90) / 2 = 75; step 2: (50 + 95 + 70) / 3 = 71.666..
    assert matrix_area(A, NAMES) == pytest.approx((80 + 75 + 215 / 3) / 3)
    assert matrix_area(A, NAMES) != pytest.approx(A.mean())  # not a repeat of MTIL Avg


def test_single_task_has_no_bwt_and_matrix_metrics_bundle():
    assert backward_transfer([[40.0]], ["a"]) == {"bwt": None, "per_dataset": {"a": None}}
    got = matrix_metrics(A, NAMES)
    assert got["bwt"] == pytest.approx(-12.5) and got["per_dataset"]["a"] == {"bwt": -30.0, "forgetting": 30.0}
    assert got["forgetting"] == pytest.approx((30 + (90 - 95)) / 2)  # b improved after it was learned: -5
    with pytest.raises(ValueError, match="square"):
        matrix_metrics([[1.0, 2.0]], NAMES[:2])

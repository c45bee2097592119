"""Read/write ``accuracy_matrix.csv``: column ``step`` (task just learned), then one column per evaluated dataset (%).

Plain ``csv`` rather than pandas so that a malformed file yields a precise message (which row, which cell).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from condu_bench.atomic_io import atomic_write_text
from condu_bench.errors import UserError


class MatrixFileError(UserError, ValueError):
    """A malformed accuracy-matrix file (a ValueError; a UserError so the CLI prints it cleanly)."""


def write_accuracy_matrix(path, matrix, step_names: Sequence[str], column_names: Sequence[str]) -> Path:
    a = np.asarray(matrix, dtype=float)
    if a.ndim != 2 or a.shape != (len(step_names), len(column_names)):
        raise ValueError(
            f"matrix shape {a.shape} does not match {len(step_names)} step names × {len(column_names)} column names"
        )
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["step", *column_names])
    for name, row in zip(step_names, a):
        w.writerow([name, *(repr(float(v)) for v in row)])  # repr: exact float round trip
    return atomic_write_text(path, text.getvalue())


def read_accuracy_matrix(path) -> tuple[np.ndarray, list[str], list[str]]:
    path = Path(path)

    def fail(problem: str) -> MatrixFileError:
        return MatrixFileError(f"malformed accuracy matrix {path}: {problem}")

    try:
        with path.open(newline="") as f:
            rows = [r for r in csv.reader(f) if r]  # tolerate blank lines (e.g. a trailing newline)
    except OSError as e:
        raise MatrixFileError(f"cannot read accuracy matrix {path}: {e}") from e
    if not rows:
        raise fail("file is empty")
    header = [h.strip() for h in rows[0]]
    if header[0] != "step":
        raise fail(f"first column must be 'step', got {header[0]!r}")
    columns = header[1:]
    if not columns:
        raise fail("no dataset columns after 'step'")
    if len(rows) == 1:
        raise fail("no data rows")
    steps, values = [], []
    for n, row in enumerate(rows[1:], start=2):  # n = line number in the file
        if len(row) != len(header):
            raise fail(f"line {n} has {len(row)} cells, the header has {len(header)} (ragged rows)")
        steps.append(row[0].strip())
        parsed = []
        for col, cell in zip(columns, row[1:]):
            try:
                v = float(cell)
            except ValueError:
                raise fail(f"line {n}, column {col!r}: non-numeric cell {cell!r}") from None
            if not math.isfinite(v):
                raise fail(f"line {n}, column {col!r}: non-finite value {cell!r}")
            parsed.append(v)
        values.append(parsed)
    return np.array(values, dtype=float), steps, columns

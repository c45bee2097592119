"""Hand-made result directories (metrics.json, config.yaml, accuracy_matrix.csv) as runs write them; no training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from condu_bench.metrics import base_to_novel_metrics, mtil_metrics
from condu_bench.reporting.matrix_io import read_accuracy_matrix, write_accuracy_matrix

REPO = Path(__file__).resolve().parents[1]
MATRICES = REPO / "results" / "published" / "zscl_matrices"


def write_mtil_run(root: Path, scenario: str, method: str, seed: int, matrix, names, extra=None, config=None) -> Path:
    directory = root / method / f"seed{seed}"
    directory.mkdir(parents=True)
    write_accuracy_matrix(directory / "accuracy_matrix.csv", matrix, names, names)
    record = {"scenario": scenario, "protocol": "mtil", "method": method, "seed": seed, **mtil_metrics(matrix, names),
              "datasets": list(names), "config_hash": f"{method}{seed}", "split_convention": "zscl",
              "device": "cpu", "versions": {"condu_bench": "test"}, "wall_time_s": 10.0 + seed,
              "model": {"arch": "ViT-B-16", "weights_sha256": "ab" * 32}, **(extra or {})}
    (directory / "metrics.json").write_text(json.dumps(record))
    cfg = {"name": scenario, "methods": [method], "seeds": [seed], "train": {"lr": 1e-5}, **(config or {})}
    (directory / "config.yaml").write_text(yaml.safe_dump(cfg))
    return directory


def zscl_matrix(method_file: str, order: str = "order1"):
    values, _steps, names = read_accuracy_matrix(MATRICES / f"{order}_{method_file}.csv")
    return values, names


def write_b2n_run(root: Path, method: str, seed: int, pairs: dict) -> Path:
    directory = root / method / f"seed{seed}"
    directory.mkdir(parents=True)
    record = {"scenario": "base_to_novel", "protocol": "base_to_novel", "method": method, "seed": seed,
              **base_to_novel_metrics(pairs), "datasets": list(pairs), "split_convention": "coop", "wall_time_s": 5.0}
    (directory / "metrics.json").write_text(json.dumps(record))
    (directory / "config.yaml").write_text(yaml.safe_dump({"name": "b2n", "methods": [method], "seeds": [seed]}))
    return directory


def small_matrix(offset: float = 0.0):
    return np.array([[80.0, 10.0, 20.0], [60.0, 90.0, 30.0], [50.0, 95.0, 70.0]]) + offset

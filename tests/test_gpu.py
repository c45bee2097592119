"""The CUDA path (bf16 autocast, pinned memory). Skipped without a GPU; CI never has one."""

import pytest
from helpers import micro_overrides

from condu_bench.config import load_config
from condu_bench.experiment import run_experiment


@pytest.mark.gpu
def test_cuda_bf16_run_matches_cpu_closely(tmp_path):
    records = {}
    for device, precision in (("cpu", "fp32"), ("cuda", "bf16")):
        config = load_config(None, micro_overrides("zeroshot,finetune") + [f"device={device}", f"train.precision={precision}"])
        records[device] = {r["method"]: r for r in run_experiment(config, tmp_path / device, log=lambda *_: None)}
    assert records["cuda"]["zeroshot"]["device"].startswith("cuda")
    # bf16 changes rounding, not results: zero-shot accuracy agrees within a few test images.
    assert records["cuda"]["zeroshot"]["last"] == pytest.approx(records["cpu"]["zeroshot"]["last"], abs=10.0)

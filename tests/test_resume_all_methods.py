"""A run interrupted between tasks and resumed ends with the same weights, bit for bit, for every method."""

import pytest
import torch
from helpers import micro_overrides

from condu_bench.config import load_config
from condu_bench.experiment import run_experiment
from condu_bench.registries import METHODS

# Small knobs so that each method's own machinery (reference streams, random texts, ensembles) runs in seconds.
OPTIONS = {
    "zscl": ["method_options.zscl.reference_pairs=16", "method_options.zscl.ref_batch_size=4",
             "method_options.zscl.ensemble_every=2"],
    "lwf_vr": ["method_options.lwf_vr.sequences=32"],
    "condu_lora": ["method_options.condu_lora.rank=4"],
}


class Interrupt(Exception):
    pass


def final_weights(tmp_path, method, interrupt_before=None):
    """Run ``method`` over two tasks; optionally stop as task ``interrupt_before`` starts, then resume."""
    base = METHODS.get(method)
    out = {}
    armed = [interrupt_before is not None]

    class Probe(base):
        def before_task(self, task, ctx):
            if armed[0] and task.index == interrupt_before:
                armed[0] = False
                raise Interrupt
            super().before_task(task, ctx)

        def after_task(self, task, ctx):
            super().after_task(task, ctx)
            out["state"] = {k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()}

    original = METHODS._entries[method].target
    METHODS._entries[method].target = Probe
    try:
        config = load_config(None, micro_overrides(method, iterations=3) + ["scenario.options.order=shapes,colours"]
                             + OPTIONS.get(method, []))
        if interrupt_before is not None:
            with pytest.raises(Interrupt):
                run_experiment(config, tmp_path, log=lambda *_: None)
        record = run_experiment(config, tmp_path, log=lambda *_: None)[0]
    finally:
        METHODS._entries[method].target = original
    return out.get("state"), record


@pytest.mark.parametrize("method", [m for m in METHODS.names() if not m.startswith("test_")])
def test_resume_is_exact_for_every_method(tmp_path, method):
    if not METHODS.get(method).trains:
        pytest.skip(f"{method} never trains")
    whole, whole_record = final_weights(tmp_path / "whole", method)
    resumed, resumed_record = final_weights(tmp_path / "resumed", method, interrupt_before=1)
    assert whole is not None and resumed is not None
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), f"{method}: {key} differs after resuming"
    assert resumed_record["per_dataset"] == whole_record["per_dataset"]

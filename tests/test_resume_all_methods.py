"""A run interrupted between tasks and resumed ends with the same weights, bit for bit, for every method."""

import pytest
import torch
from helpers import micro_overrides, run_probed

from condu_bench.registries import METHODS

# Small knobs so that each method's own machinery (reference streams, random texts, ensembles) runs in seconds.
OPTIONS = {
    "zscl": ["method_options.zscl.reference_pairs=16", "method_options.zscl.ref_batch_size=4",
             "method_options.zscl.ensemble_every=2"],
    "lwf_vr": ["method_options.lwf_vr.sequences=32"],
    "condu_lora": ["method_options.condu_lora.rank=4"],
    # Methods with a reference recipe in epochs: a budget of a few steps of their own.
    **{m: [f"recipes.{m}.iterations=3", f"recipes.{m}.batch_size=4"] for m in ("coop", "cocoop", "kgcoop", "clipfit")},
    "mergetune": ["recipes.mergetune.iterations=3", "recipes.mergetune.batch_size=4", "recipes.mergetune.select=last",
                  "method_options.mergetune.base_recipe.iterations=2", "method_options.mergetune.base_recipe.batch_size=4"],
    "mergetune_clipfit": ["recipes.mergetune_clipfit.iterations=3", "recipes.mergetune_clipfit.batch_size=4",
                          "recipes.mergetune_clipfit.select=last", "method_options.mergetune_clipfit.base_recipe.iterations=2",
                          "method_options.mergetune_clipfit.base_recipe.batch_size=4"],
    "moe_adapters": ["method_options.moe_adapters.selector_iterations=4", "method_options.moe_adapters.num_experts=4"],
}


def final_weights(tmp_path, method, interrupt_before=None):
    """Run ``method`` over two tasks; optionally stop as task ``interrupt_before`` starts, then resume."""
    out = {}

    def keep(_, task, ctx):
        out["state"] = {k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()}

    overrides = micro_overrides(method, iterations=3) + ["scenario.options.order=shapes,colours"] + OPTIONS.get(method, [])
    record = run_probed(tmp_path, method, overrides, interrupt_before=interrupt_before, after_task=keep)
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

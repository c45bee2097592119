"""Every registered method satisfies the Method interface, and its state survives a state_dict round trip."""

import dataclasses

import pytest
import torch
from helpers import micro_overrides, run_probed

from condu_bench.config import load_config
from condu_bench.errors import UserError
from condu_bench.experiment import run_experiment
from condu_bench.method import BaseMethod, check_method_class
from condu_bench.registries import METHODS

REAL_METHODS = [m for m in METHODS.names() if not m.startswith("test_")]


@pytest.mark.parametrize("method", REAL_METHODS)
def test_every_registered_method_has_the_interface(method):
    assert check_method_class(method, METHODS.get(method)) is METHODS.get(method)


def test_a_plugin_without_the_hooks_is_refused_before_anything_runs(tmp_path):
    class Partial:  # a plugin written from scratch that forgot most hooks
        name, trains = "partial", True

        @dataclasses.dataclass(frozen=True)
        class Config:
            pass

        def setup(self, ctx):
            pass

    with pytest.raises(UserError, match=r"method 'finetune' .*Partial\) lacks trainable_parameters, before_task, .*report"):
        check_method_class("finetune", Partial)
    original = METHODS._entries["finetune"].target
    METHODS._entries["finetune"].target = Partial
    try:
        with pytest.raises(UserError, match="subclass condu_bench.method.BaseMethod"):
            run_experiment(load_config(None, micro_overrides("finetune")), tmp_path, log=lambda *_: None)
    finally:
        METHODS._entries["finetune"].target = original
    assert not (tmp_path / "finetune").exists()

    class NoDataclass(BaseMethod):
        class Config:
            pass

    with pytest.raises(UserError, match=r"lacks Config \(a dataclass\)"):
        check_method_class("x", NoDataclass)


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


OPTIONS = {
    "zscl": ["method_options.zscl.reference_pairs=16", "method_options.zscl.ref_batch_size=4"],
    "lwf_vr": ["method_options.lwf_vr.sequences=32"],
    "condu_lora": ["method_options.condu_lora.rank=4"],
    # MergeTune selects on a val split the synthetic world lacks, and trains its base prompt first: a tiny one.
    "mergetune": ["recipes.mergetune.select=last", "recipes.mergetune.iterations=1", "recipes.mergetune.batch_size=4",
                  "method_options.mergetune.base_recipe.iterations=1", "method_options.mergetune.base_recipe.batch_size=4"],
    "mergetune_clipfit": ["recipes.mergetune_clipfit.select=last", "recipes.mergetune_clipfit.iterations=1",
                          "recipes.mergetune_clipfit.batch_size=4", "method_options.mergetune_clipfit.base_recipe.iterations=1",
                          "method_options.mergetune_clipfit.base_recipe.batch_size=4"],
}


@pytest.mark.parametrize("method", REAL_METHODS)
def test_method_state_round_trips(tmp_path, method):
    """After each task, the state written as a checkpoint (safetensors + JSON) and loaded into a fresh instance set
    up on the plain model gives back the same state: what resuming relies on."""
    import copy
    import json

    from safetensors.torch import load, save

    from condu_bench.training.runner import join_method_state, split_method_state

    base = METHODS.get(method)
    if not base.trains or base.state_dict is BaseMethod.state_dict:
        pytest.skip(f"{method} keeps no state of its own")
    checked = []

    class KeepsPlainModel(base):
        def setup(self, ctx):
            self.plain_model = copy.deepcopy(ctx.model)  # as the runner hands it to setup
            super().setup(ctx)

    def round_trip(instance, task, ctx):
        state = instance.state_dict()
        tensors, plain = split_method_state(state)
        stored = join_method_state(load(save(tensors)) if tensors else {}, json.loads(json.dumps(plain)))
        fresh_ctx = copy.copy(ctx)
        fresh_ctx.model = copy.deepcopy(instance.plain_model)
        fresh = type(instance)(instance.config)
        fresh.setup(fresh_ctx)
        fresh.load_state_dict(stored)
        checked.append(same(state, fresh.state_dict()))

    overrides = micro_overrides(method, iterations=1) + ["scenario.options.order=shapes"] + OPTIONS.get(method, [])
    run_probed(tmp_path, method, overrides, base=KeepsPlainModel, after_task=round_trip)
    assert checked == [True]

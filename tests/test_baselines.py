"""Per-method behaviour on the micro CLIP: what each plugin must compute, beyond running."""

import pytest
import torch
from helpers import micro_overrides

from condu_bench.config import load_config
from condu_bench.experiment import run_experiment
from condu_bench.registries import METHODS


def states_after_each_task(tmp_path, method, *extra):
    """Run ``method`` on the micro scenario and capture the model's weights after every task."""
    captured = []
    base = METHODS.get(method)

    class Probe(base):
        def after_task(self, task, ctx):
            super().after_task(task, ctx)
            captured.append({k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()})

    METHODS._entries[method].target = Probe
    try:
        config = load_config(None, micro_overrides(method) + list(extra))
        record = run_experiment(config, tmp_path / method, log=lambda *_: None)[0]
    finally:
        METHODS._entries[method].target = base
    return captured, record


def test_wise_ft_interpolates_with_theta0(tmp_path):
    from condu_bench.models.loading import load_model

    theta0 = load_model(load_config(None, micro_overrides("wise_ft")).model).model.state_dict()
    ft, _ = states_after_each_task(tmp_path, "finetune", "scenario.options.order=shapes")
    wise, _ = states_after_each_task(tmp_path, "wise_ft", "scenario.options.order=shapes", "method_options.wise_ft.alpha=0.25")
    key = "visual.conv1.weight"
    expected = theta0[key] + 0.25 * (ft[0][key] - theta0[key])
    assert torch.allclose(wise[0][key], expected, atol=1e-6)
    assert not torch.allclose(ft[0][key], theta0[key])


def test_wise_ft_rejects_alpha_outside_unit_interval(tmp_path):
    with pytest.raises(ValueError, match="alpha must lie in"):
        states_after_each_task(tmp_path, "wise_ft", "method_options.wise_ft.alpha=1.5")


def test_lwf_equals_finetune_on_first_task_then_differs(tmp_path):
    ft, _ = states_after_each_task(tmp_path, "finetune", "scenario.options.order=shapes,counts")
    lwf, _ = states_after_each_task(tmp_path, "lwf", "scenario.options.order=shapes,counts")
    key = "visual.conv1.weight"
    assert torch.equal(ft[0][key], lwf[0][key])  # no earlier datasets: plain fine-tuning
    assert not torch.equal(ft[1][key], lwf[1][key])  # distillation changes the second task's updates

"""Per-method behaviour on the micro CLIP: what each plugin must compute, beyond running."""

import pytest
import torch
from helpers import micro_overrides

from condu_bench.config import load_config
from condu_bench.experiment import run_experiment
from condu_bench.registries import METHODS


def states_after_each_task(tmp_path, method, *extra):
    """Run ``method`` on the micro scenario and capture the model's weights after every task."""
    return run_with_probe(tmp_path, method, METHODS.get(method), *extra)


def run_with_probe(tmp_path, method, base, *extra):
    captured = []

    class Probe(base):
        def after_task(self, task, ctx):
            super().after_task(task, ctx)
            captured.append({k: v.detach().cpu().clone() for k, v in ctx.model.state_dict().items()})

    original = METHODS.get(method)
    METHODS._entries[method].target = Probe
    try:
        config = load_config(None, micro_overrides(method) + list(extra))
        record = run_experiment(config, tmp_path / method, log=lambda *_: None)[0]
    finally:
        METHODS._entries[method].target = original
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


def test_zscl_keeps_the_running_weight_ensemble(tmp_path):
    """With ensemble_every=1 the kept model is the mean of theta_start and the weights after every step."""
    after_steps = []
    base = METHODS.get("zscl")

    class Probe(base):
        def after_iteration(self, step, task, ctx):
            after_steps.append(ctx.model.state_dict()["visual.conv1.weight"].detach().clone())
            super().after_iteration(step, task, ctx)

    kept, _ = run_with_probe(tmp_path, "zscl", Probe, "scenario.options.order=shapes",
                                                 "method_options.zscl.ensemble_every=1", "method_options.zscl.ref_images=16",
                                                 "method_options.zscl.ref_sentences=16", "method_options.zscl.ref_batch_size=4")
    from condu_bench.models.loading import load_model

    start = load_model(load_config(None, micro_overrides("zscl")).model).model.state_dict()["visual.conv1.weight"]
    expected = (start + sum(after_steps)) / (1 + len(after_steps))
    assert len(after_steps) == 3
    assert torch.allclose(kept[0]["visual.conv1.weight"], expected, atol=1e-6)
    assert not torch.allclose(kept[0]["visual.conv1.weight"], after_steps[-1])


def test_zscl_l2_term_holds_weights_near_the_task_start(tmp_path):
    common = ["scenario.options.order=shapes", "train.lr=1e-2", "method_options.zscl.ensemble_every=0",
              "method_options.zscl.distill_weight=0", "method_options.zscl.ref_images=8", "method_options.zscl.ref_sentences=8"]
    free, _ = states_after_each_task(tmp_path / "free", "zscl", *common, "method_options.zscl.l2_weight=0")
    held, _ = states_after_each_task(tmp_path / "held", "zscl", *common, "method_options.zscl.l2_weight=1000")
    from condu_bench.models.loading import load_model

    theta0 = load_model(load_config(None, micro_overrides("zscl")).model).model.state_dict()
    drift = lambda state: sum((state[k] - theta0[k]).norm() ** 2 for k in theta0 if k != "logit_scale")
    assert drift(held[0]) < drift(free[0])


def test_zscl_reference_files_are_checked(tmp_path):
    from condu_bench.errors import UserError

    with pytest.raises(UserError, match="ref_images_dir and ref_sentences_file"):
        states_after_each_task(tmp_path, "zscl", "method_options.zscl.reference=files")
    with pytest.raises(UserError, match="does not exist"):
        states_after_each_task(tmp_path, "zscl", "method_options.zscl.reference=files",
                               f"method_options.zscl.ref_images_dir={tmp_path / 'none'}",
                               f"method_options.zscl.ref_sentences_file={tmp_path / 'none.txt'}")


def test_lwf_vr_distils_from_the_first_task_on_real_words(tmp_path):
    from condu_bench.baselines.lwf_vr import vocabulary_words
    from condu_bench.models.loading import load_model

    words = vocabulary_words(load_model(load_config(None, micro_overrides("lwf_vr")).model).tokenizer)
    assert len(words) > 10000 and all(w.isalpha() and len(w) >= 3 for w in words)
    assert {"photo", "dog", "circle"} <= set(words)
    ft, _ = states_after_each_task(tmp_path, "finetune", "scenario.options.order=shapes")
    vr, _ = states_after_each_task(tmp_path, "lwf_vr", "scenario.options.order=shapes", "method_options.lwf_vr.words_per_step=16")
    # Unlike LwF, vocabulary replay already distils on the first task, so the updates differ from fine-tuning.
    assert not torch.equal(ft[0]["visual.conv1.weight"], vr[0]["visual.conv1.weight"])

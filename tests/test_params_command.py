"""condu-bench params: trainable parameters per method on an architecture, without weights."""

import pytest

from condu_bench.cli import main
from condu_bench.errors import UnknownNameError
from condu_bench.param_count import parameter_table


def test_counts_on_the_micro_model_match_hand_counts():
    from condu_bench.models.loading import new_open_clip

    model = new_open_clip("condu-micro-vit")
    width = model.token_embedding.weight.shape[1]
    everything = sum(p.numel() for n, p in model.named_parameters() if n != "logit_scale")
    counts = dict(parameter_table("condu-micro-vit", ["zeroshot", "finetune", "coop", "clipfit", "moe_adapters"]))
    assert counts["zeroshot"] == 0
    assert counts["finetune"] == everything
    assert counts["coop"] == 4 * width  # 4 context vectors of the text width
    from condu_bench.baselines.clipfit import clipfit_parameter_names

    params = dict(model.named_parameters())
    assert counts["clipfit"] == sum(params[n].numel() for n in clipfit_parameter_names(model))
    assert isinstance(counts["moe_adapters"], str) and counts["moe_adapters"].startswith("depends on the task")


def test_cli_prints_the_table_and_unknown_methods_are_errors(capsys):
    assert main(["params", "--model", "condu-micro-vit", "--methods", "zeroshot,coop"]) == 0
    out = capsys.readouterr().out
    assert "condu-micro-vit" in out and "zeroshot" in out and "coop" in out
    with pytest.raises(UnknownNameError, match="did you mean"):
        parameter_table("condu-micro-vit", ["cop"])

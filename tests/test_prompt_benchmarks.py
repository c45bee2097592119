"""The base-to-novel, cross-dataset and domain-generalisation benchmark files run CoOp, CoCoOp and KgCoOp end to end
on generated CoOp-layout trees with a micro CLIP."""

import json

import fake_trees as ft
import pytest
import yaml

from condu_bench.cli import main

PROMPT_METHODS = ("coop", "cocoop", "kgcoop", "clipfit")
MICRO = ["model.arch=condu-micro-vit", "model.pretrained=none", "num_workers=0", "eval.batch_size=16",
         "eval.max_per_dataset=6", "seeds=1", "--no-progress", f"methods={','.join(PROMPT_METHODS)}",
         *[f"recipes.{m}.{k}" for m in PROMPT_METHODS for k in ("iterations=2", "batch_size=4")]]


@pytest.fixture(scope="module")
def coop_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coop-prompt")
    for name in ("EuroSAT", "DTD", "ImageNet", "ImageNet-V2"):
        ft.build(root, name, "coop")
    return root


@pytest.mark.parametrize("benchmark_file, options", [
    ("base_to_novel", ["scenario.options.datasets=EuroSAT,DTD", "scenario.options.shots=2"]),
    ("cross_dataset", ["scenario.options.targets=EuroSAT,DTD", "scenario.options.shots=1"]),
    ("domain_generalisation", ["scenario.options.targets=ImageNet-V2", "scenario.options.shots=1"]),
])
def test_prompt_methods_run_each_transfer_benchmark(coop_root, tmp_path, benchmark_file, options):
    from condu_bench.config import load_config
    from condu_bench.resources import benchmark_files

    listed = load_config(next(p for p in benchmark_files() if p.stem == benchmark_file)).methods
    assert set(PROMPT_METHODS) <= set(listed)
    out = tmp_path / "out"
    argv = ["run", benchmark_file, f"data_root={coop_root}", f"scenario.options.fewshot_cache={tmp_path / 'shots'}",
            "--out", str(out), *options, *MICRO]
    assert main(argv) == 0
    for method in PROMPT_METHODS:
        directory = out / method / "seed1"
        metrics = json.loads((directory / "metrics.json").read_text())
        assert metrics["protocol"] == benchmark_file and metrics["method"] == method
        train = yaml.safe_load((directory / "config.yaml").read_text())["train"]
        # The reference recipe, with the budget and batch of this quick run.
        assert (train["optimizer"], train["lr"], train["schedule"], train["warmup_epochs"]) == ("sgd", 0.002, "epoch_cosine", 1)
        assert (train["iterations"], train["epochs"], train["batch_size"]) == (2, None, 4)
        assert train["augment"] == "coop"  # CoOp/Dassl's RandomResizedCrop(0.08-1) + flip
        assert {i.get("fewshot_draw") for i in metrics["dataset_info"].values() if i.get("shots")} == {"dassl"}
        if benchmark_file == "base_to_novel":
            assert set(metrics["per_dataset"]) == {"EuroSAT", "DTD"}
        else:
            assert metrics["source"] is not None and metrics["average"] is not None

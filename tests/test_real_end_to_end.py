"""Benchmark files on generated dataset trees run end to end through `condu-bench run` with a micro CLIP."""

import json

import fake_trees as ft
import pytest

from condu_bench.cli import main

MICRO = ["model.arch=condu-micro-vit", "model.pretrained=none", "train.iterations=2", "train.batch_size=4",
         "train.warmup_steps=1", "num_workers=0", "eval.batch_size=16", "methods=zeroshot,finetune"]


def test_mtil_benchmark_on_a_fake_zscl_tree(tmp_path, capsys):
    root = tmp_path / "data"
    for build in (ft.zscl_mnist, ft.zscl_eurosat, ft.zscl_dtd):
        build(root)
    out = tmp_path / "out"
    argv = ["run", "mtil_order1", f"data_root={root}", "scenario.options.order=MNIST,EuroSAT,DTD", "--out", str(out), "--no-progress", *MICRO]
    assert main(argv) == 0
    metrics = json.loads((out / "finetune" / "seed0" / "metrics.json").read_text())
    assert metrics["protocol"] == "mtil" and metrics["split_convention"] == "zscl"
    assert metrics["datasets"] == ["MNIST", "EuroSAT", "DTD"]
    assert metrics["per_dataset"]["MNIST"]["transfer"] is None
    assert "| finetune |" in capsys.readouterr().out
    # The same command again skips the finished runs.
    assert main(argv) == 0
    assert "[skip] finetune" in capsys.readouterr().out


def test_missing_data_root_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "mtil_order1", *MICRO, "--out", str(tmp_path)]) == 2
    assert "data_root" in capsys.readouterr().err


def test_base_to_novel_benchmark_on_a_fake_coop_tree(tmp_path):
    root = tmp_path / "data"
    ft.build(root, "EuroSAT", "coop")
    ft.build(root, "DTD", "coop")
    out = tmp_path / "out"
    argv = ["run", "base_to_novel", f"data_root={root}", "scenario.options.datasets=EuroSAT,DTD", "scenario.options.shots=2",
            f"scenario.options.fewshot_cache={tmp_path / 'shots'}", "seeds=1", "--out", str(out), "--no-progress", *MICRO]
    assert main(argv) == 0
    metrics = json.loads((out / "zeroshot" / "seed1" / "metrics.json").read_text())
    assert metrics["protocol"] == "base_to_novel" and metrics["split_convention"] == "coop"
    assert set(metrics["per_dataset"]) == {"EuroSAT", "DTD"}
    for row in metrics["per_dataset"].values():
        b, n = row["base"], row["novel"]
        assert row["hm"] == pytest.approx(0 if b + n == 0 else 2 * b * n / (b + n))
    assert (out / "finetune" / "seed1" / "accuracy_matrix_EuroSAT.csv").is_file()
    # zero-shot rows with CoOp's zero-shot prompt (DTD "{} texture."), the other methods with the hand-crafted ones
    finetune = json.loads((out / "finetune" / "seed1" / "metrics.json").read_text())
    assert metrics["dataset_info"]["DTD/base"]["templates"] == metrics["scenario_info"]["templates"] == "coop_zeroshot"
    assert finetune["dataset_info"]["DTD/base"]["templates"] == finetune["scenario_info"]["templates"] == "handcrafted"


def test_data_check_command(tmp_path, capsys):
    ft.zscl_mnist(tmp_path)
    assert main(["data", "check", "--root", str(tmp_path), "--layout", "zscl", "--datasets", "MNIST"]) == 0
    assert "[ok] MNIST" in capsys.readouterr().out
    assert main(["data", "check", "--root", str(tmp_path), "--layout", "zscl", "--datasets", "MNIST,DTD"]) == 1
    out = capsys.readouterr().out
    assert "[missing] DTD: missing" in out and "dtd-r1.0.1.tar.gz" in out


def test_corrupt_image_is_an_error_or_skipped_and_recorded(tmp_path, capsys):
    root = tmp_path / "data"
    ft.zscl_eurosat(root)
    bad = sorted((root / "eurosat" / "2750").rglob("*.jpg"))[0]
    ft.truncate_image(bad)
    base = ["run", "mtil_order1", f"data_root={root}", "scenario.options.order=EuroSAT", "--no-progress", *MICRO]
    assert main([*base, "--out", str(tmp_path / "strict")]) == 2
    assert bad.name in capsys.readouterr().err
    assert main([*base, "scenario.options.skip_corrupt=true", "--out", str(tmp_path / "lenient")]) == 0
    metrics = json.loads((tmp_path / "lenient" / "finetune" / "seed0" / "metrics.json").read_text())
    skipped = metrics["dataset_info"]["EuroSAT"]["skipped"]
    assert sum(split["count"] for split in skipped.values()) == 1
    assert any(bad.name in f for split in skipped.values() for f in split["files"])


@pytest.mark.parametrize("variant", [[], ["scenario.options.task_agnostic=true"], ["scenario.options.shots=2"]],
                         ids=["task-known", "task-agnostic", "few-shot"])
def test_condu_on_a_fake_zscl_tree(tmp_path, variant):
    root = tmp_path / "data"
    for build in (ft.zscl_mnist, ft.zscl_eurosat):
        build(root)
    out = tmp_path / "out"
    argv = ["run", "mtil_order1", f"data_root={root}", "scenario.options.order=MNIST,EuroSAT", "--out", str(out),
            "--no-progress", *MICRO, "methods=condu,condu_lora", "method_options.condu_lora.rank=4", *variant]
    assert main(argv) == 0
    for method in ("condu", "condu_lora"):
        metrics = json.loads((out / method / "seed0" / "metrics.json").read_text())
        assert metrics["datasets"] == ["MNIST", "EuroSAT"]
        assert metrics["method_report"]["tasks"] == ["MNIST", "EuroSAT"]
        assert len(metrics["method_report"]["storage_bytes"]["masks_per_task"]) == 2


def test_every_benchmark_file_names_known_datasets_in_its_per_task_keys():
    from condu_bench.config import load_config
    from condu_bench.experiment import known_dataset_names
    from condu_bench.resources import benchmark_files

    known = set(known_dataset_names())
    files = list(benchmark_files())
    assert len(files) >= 10
    for path in files:
        config = load_config(path)
        for option in ("lr_per_task", "iterations_per_task"):
            unknown = set(getattr(config.train, option)) - known
            assert not unknown, (path.name, option, unknown)


@pytest.mark.parametrize(("benchmark_file", "source", "targets", "build"), [
    ("cross_dataset", "EuroSAT", ["DTD"], lambda root: [ft.build(root, n, "coop") for n in ("EuroSAT", "DTD")]),
    ("domain_generalisation", "ImageNet", ["ImageNet-V2", "ImageNet-A"],
     lambda root: [ft.coop_imagenet(root), ft.coop_imagenet_v2(root), ft.coop_imagenet_a(root)]),
])
def test_transfer_benchmarks_on_a_fake_coop_tree(tmp_path, benchmark_file, source, targets, build):
    """Train on the source's shots, evaluate the source and every target; the average is over the targets only."""
    root = tmp_path / "data"
    build(root)
    out = tmp_path / "out"
    argv = ["run", benchmark_file, f"data_root={root}", f"scenario.options.source={source}",
            f"scenario.options.targets={','.join(targets)}", "scenario.options.shots=1",
            f"scenario.options.fewshot_cache={tmp_path / 'shots'}", "seeds=1", "--out", str(out), "--no-progress", *MICRO]
    assert main(argv) == 0
    records = {m: json.loads((out / m / "seed1" / "metrics.json").read_text()) for m in ("zeroshot", "finetune")}
    for method, metrics in records.items():
        assert metrics["protocol"] == benchmark_file and metrics["datasets"] == [source, *targets]
        per = {name: row["accuracy"] for name, row in metrics["per_dataset"].items()}
        assert metrics["source"] == per[source]
        assert metrics["average"] == pytest.approx(sum(per[t] for t in targets) / len(targets))
        info = metrics["dataset_info"]
        assert info[source]["n_train"] == info[source]["num_classes"] and info[source]["role"] == "source"  # 1 shot
        assert [info[t]["role"] for t in targets] == ["target"] * len(targets)


def test_task_agnostic_mtil_on_a_fake_zscl_tree(tmp_path):
    """Task-agnostic as ConDU's release evaluates it: the task is withheld, each dataset is scored over its own classes
    (zero-shot CLIP, which never uses the task, scores exactly as task-known); ``label_space=union`` scores over every
    class of the order (never better than over its own)."""
    root = tmp_path / "data"
    for build in (ft.zscl_mnist, ft.zscl_eurosat):
        build(root)
    out = tmp_path / "out"
    runs = {"known": ("mtil_order1", []), "agnostic": ("mtil_order1_task_agnostic", []),
            "union": ("mtil_order1_task_agnostic", ["scenario.options.label_space=union"])}
    for key, (benchmark_file, extra) in runs.items():
        argv = ["run", benchmark_file, f"data_root={root}", "scenario.options.order=MNIST,EuroSAT", "methods=zeroshot,finetune",
                "--out", str(out / key), "--no-progress", *MICRO, *extra]
        assert main(argv) == 0
    metrics = {(key, method): json.loads((out / key / method / "seed0" / "metrics.json").read_text())
               for key in runs for method in ("zeroshot", "finetune")}
    for method in ("zeroshot", "finetune"):
        assert metrics["agnostic", method]["task_agnostic"] is True and metrics["agnostic", method]["datasets"] == ["MNIST", "EuroSAT"]
        assert metrics["agnostic", method]["scenario_info"]["label_space"] == "dataset"
        assert metrics["union", method]["scenario_info"]["label_space"] == "union"
        assert metrics["known", method].get("task_agnostic") in (False, None)
    assert metrics["agnostic", "zeroshot"]["scenario"] == "mtil_custom_agnostic"
    assert metrics["union", "zeroshot"]["scenario"] == "mtil_custom_agnostic_union"
    for name in ("MNIST", "EuroSAT"):
        known = metrics["known", "zeroshot"]["per_dataset"][name]["last"]
        assert metrics["agnostic", "zeroshot"]["per_dataset"][name]["last"] == known
        assert metrics["union", "zeroshot"]["per_dataset"][name]["last"] <= known


@pytest.mark.parametrize("benchmark_file", ["mtil_order1", "mtil_fewshot"])
def test_every_method_of_a_real_mtil_file_runs_with_its_reference_options(tmp_path, benchmark_file):
    """The file's own method list and method options (ZSCL's reference folder and caption file, MoE-Adapters' AlexNet
    selector, iCaRL's memory, WiSE-FT's alpha...), only the budget shrunk to a micro model on a fake tree."""
    import torch
    import yaml
    from PIL import Image
    from torchvision.models import alexnet

    from condu_bench.cli import resolve_benchmark
    from condu_bench.config import load_config

    root = tmp_path / "data"
    for build in (ft.zscl_mnist, ft.zscl_eurosat):
        build(root)
    for wnid in ("n01440764", "n01443537"):  # ZSCL's reference images: an ImageNet train folder
        (root / "imagenet" / "train" / wnid).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30), ft.label_colour(i)).save(root / "imagenet" / "train" / wnid / f"{wnid}_{i}.JPEG")
    captions = root / "conceptual_captions" / "Validation_GCC-1.1.0-Validation.tsv"
    captions.parent.mkdir(parents=True)
    captions.write_text("".join(f"caption number {i}\thttp://example.org/{i}.jpg\n" for i in range(12)))
    weights = tmp_path / "alexnet-features.pth"
    torch.save({f"features.{k}": v for k, v in alexnet(weights=None).features.state_dict().items()}, weights)

    declared = load_config(resolve_benchmark(benchmark_file), [])
    out = tmp_path / "out"
    argv = ["run", benchmark_file, f"data_root={root}", "scenario.options.order=MNIST,EuroSAT", "--out", str(out),
            "--no-progress", "model.arch=condu-micro-vit", "model.pretrained=none", "train.iterations=2",
            "train.batch_size=4", "train.warmup_steps=1", "num_workers=0", "eval.batch_size=16",
            f"method_options.moe_adapters.selector_weights={weights}", "method_options.moe_adapters.selector_iterations=2",
            "method_options.zscl.ref_batch_size=4"]
    if benchmark_file == "mtil_fewshot":
        argv.append("scenario.options.shots=2")
    assert main(argv) == 0
    assert set(declared.methods) >= {"zeroshot", "finetune", "lwf", "lwf_vr", "icarl", "wise_ft", "zscl", "moe_adapters", "condu"}
    for method in declared.methods:
        metrics = json.loads((out / method / "seed0" / "metrics.json").read_text())
        assert metrics["datasets"] == ["MNIST", "EuroSAT"], method
        recorded = yaml.safe_load((out / method / "seed0" / "config.yaml").read_text())["method_options"][method]
        for key, value in declared.method_options.get(method, {}).items():  # the reference options, as run
            assert recorded[key] == value, (method, key)

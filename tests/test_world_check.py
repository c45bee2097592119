"""The world's property checks on hand-made records, and the pretraining-seed tags of the tiny CLIP."""

import numpy as np
import pytest

from condu_bench.config import ModelConfig
from condu_bench.errors import UserError


def record(per_domain_last, transfer, last):
    return {"datasets": list(per_domain_last), "per_dataset": {d: {"last": v} for d, v in per_domain_last.items()},
            "transfer": transfer, "last": last}


def test_gates_and_margins_on_a_hand_made_world():
    from condu_bench.synthetic.world_check import GATES, facts_of, failures, margin_table

    domains = ["shapes", "colours", "digits"]  # chance 16.7, 12.5, 10
    zs = record(dict(zip(domains, [30.0, 60.0, 60.0])), transfer=60.0, last=50.0)
    ft_matrix = np.array([[80.0, 50.0, 40.0], [50.0, 90.0, 45.0], [45.0, 70.0, 85.0]])
    ft = record(dict(zip(domains, ft_matrix[-1])), transfer=45.0, last=ft_matrix[-1].mean())
    facts = facts_of(zs, ft, ft_matrix)
    assert facts["diagonal"].tolist() == [80.0, 90.0, 85.0]
    assert facts["forgetting"].tolist() == [35.0, 20.0]
    assert failures(facts) == []
    by_name = {p.describe(): p.margin(facts) for p in GATES}
    assert by_name["zero-shot mean >= 45"] == pytest.approx(5.0)
    assert by_name["zero-shot min over chance >= 3"] == pytest.approx(30.0 - 100 / 6 - 3)
    assert by_name["FT Last - zero-shot Last >= 8"] == pytest.approx(ft_matrix[-1].mean() - 50.0 - 8)
    assert by_name["FT diagonal mean >= 85"] == pytest.approx(0.0) and by_name["FT diagonal min >= 65"] == pytest.approx(15.0)
    table = margin_table([("a", facts), ("b", facts)])
    assert "| zero-shot Transfer - FT Transfer >= 5 | 15.0 | 15.0 | +10.0 | +10.0 | 2 of 2 | gate |" in table
    assert "| zero-shot Transfer - FT Transfer >= 8 | 15.0 | 15.0 | +7.0 | +7.0 | 2 of 2 | target |" in table

    worse = dict(facts, ft_transfer=56.0)  # fine-tuning keeps too much transfer: the world does not discriminate
    assert failures(worse) == ["zero-shot Transfer - FT Transfer >= 5: 4.0"]
    unlearnt = dict(facts, diagonal=np.array([80.0, 90.0, 60.0]))  # a domain fine-tuning does not learn
    assert failures(unlearnt) == ["FT diagonal mean >= 85: 76.7", "FT diagonal min >= 65: 60.0"]


def test_ranking_targets_from_records_against_the_published_table():
    from condu_bench.resources import published_dir
    from condu_bench.synthetic.world_check import RANKING, facts_of, margin_table, ranking_tau

    def run(transfer, avg, last):
        return {"transfer": transfer, "avg": avg, "last": last}

    # published order I: Transfer zs 69.4 > lwf 56.9 > ft 44.6; Avg 65.3 > 64.7 > 55.9; Last 65.3 < 74.6 < 77.3
    records = {"zeroshot": run(60, 56, 56), "lwf": run(55, 60, 70), "finetune": run(45, 65, 72), "mine": run(0, 0, 0)}
    tau = ranking_tau(records, published_dir() / "mtil_order1.csv")
    assert tau == pytest.approx({"transfer": 1.0, "avg": -1.0, "last": 1.0})  # "mine" has no published row
    domains = ["shapes", "colours"]
    zs = record(dict(zip(domains, [30.0, 60.0])), transfer=60.0, last=45.0)
    ft = record(dict(zip(domains, [70.0, 90.0])), transfer=45.0, last=80.0)
    facts = dict(facts_of(zs, ft, np.array([[90.0, 50.0], [70.0, 90.0]])), tau=tau)
    assert [p.margin(facts) for p in RANKING] == pytest.approx([0.4, -1.6, 0.4])
    table = margin_table([("a", facts)])
    assert "| ranking tau-b Avg >= 0.6 | -1.0 | -1.6 | -1.6 | 0 of 1 | target |" in table
    assert "ranking" not in margin_table([("a", facts_of(zs, ft, np.array([[90.0, 50.0], [70.0, 90.0]])))])


def test_synthetic_tags_name_pretraining_seeds():
    from condu_bench.models.loading import synthetic_pretrain_config

    assert synthetic_pretrain_config(ModelConfig()).seed == 0
    assert synthetic_pretrain_config(ModelConfig(pretrained="synthetic-seed3")).seed == 3
    assert synthetic_pretrain_config(ModelConfig(pretrained="openai")) is None
    assert synthetic_pretrain_config(ModelConfig(checkpoint="/x.safetensors")) is None
    with pytest.raises(UserError, match="synthetic-seedN"):
        synthetic_pretrain_config(ModelConfig(pretrained="synthetic-seedx"))
    a = synthetic_pretrain_config(ModelConfig()).fingerprint()
    assert a != synthetic_pretrain_config(ModelConfig(pretrained="synthetic-seed1")).fingerprint()


def b2n_record(base, novel):
    return {"base": base, "novel": novel, "hm": 2 * base * novel / (base + novel)}


def test_base_to_novel_properties_on_hand_made_records():
    from condu_bench.synthetic.b2n_check import B2N_TARGETS, b2n_facts
    from condu_bench.synthetic.world_check import failures, margin_table

    records = {"zeroshot": b2n_record(70, 74), "coop": b2n_record(83, 63), "kgcoop": b2n_record(81, 73),
               "clipfit": b2n_record(83, 72), "mergetune": b2n_record(81, 74)}  # the published averages, rounded
    facts = b2n_facts(records)
    assert failures(facts, B2N_TARGETS) == []
    margins = {p.describe(): p.margin(facts) for p in B2N_TARGETS}
    assert margins["CoOp Base - zero-shot Base >= 0"] == pytest.approx(13.0)
    assert margins["zero-shot Novel - CoOp Novel >= 0"] == pytest.approx(11.0)
    assert margins["MergeTune HM - CoOp HM >= 0"] == pytest.approx(records["mergetune"]["hm"] - records["coop"]["hm"])
    # the embedded world today (seed 1): MergeTune under CoOp on HM
    today = dict(records, coop=b2n_record(82.7, 69.7), mergetune=b2n_record(82.2, 68.7))
    assert failures(b2n_facts(today), B2N_TARGETS) == [f"MergeTune HM - CoOp HM >= 0: {today['mergetune']['hm'] - today['coop']['hm']:.1f}"]
    table = margin_table([("a", facts), ("b", b2n_facts(today))], sections=(("target", B2N_TARGETS),))
    assert "| KgCoOp Novel - CoOp Novel >= 0 | 10.0 | 3.3 | +3.3 | +6.6 | 2 of 2 | target |" in table
    # one run above CoOp and one under: the worst margin is the second run's, the mean theirs together
    assert "| MergeTune HM - CoOp HM >= 0 | 5.7 | -0.8 | -0.8 | +2.5 | 1 of 2 | target |" in table
    with pytest.raises(ValueError, match="needs runs of mergetune"):
        b2n_facts({k: v for k, v in records.items() if k != "mergetune"})


def test_per_domain_margins_show_which_domain_breaks_a_property():
    from condu_bench.synthetic.b2n_check import b2n_facts, per_domain_table

    def run(coop_novel_a, coop_novel_b):
        rows = {"zeroshot": (70, 74), "coop": None, "kgcoop": (81, 73), "clipfit": (83, 72), "mergetune": (81, 74)}
        records = {}
        for method, pair in rows.items():
            a = b = pair
            if method == "coop":
                a, b = (83, coop_novel_a), (83, coop_novel_b)
            records[method] = {**b2n_record(*a), "per_dataset": {"a": b2n_record(*a), "b": b2n_record(*b)}}
        return records

    runs = [run(63, 76), run(65, 75)]  # domain b: CoOp keeps more Novel than zero-shot, KgCoOp and CLIPFit
    facts = {d: [b2n_facts(r, d) for r in runs] for d in ("a", "b")}
    assert facts["b"][0]["coop"]["novel"] == 76.0 and facts["a"][1]["coop"]["novel"] == 65.0
    table = per_domain_table(facts).splitlines()
    assert table[0].startswith("| domain | CoOp Base - zero-shot Base >= 0 | zero-shot Novel - CoOp Novel >= 0 |")
    # MergeTune HM 77.34 against CoOp's 71.63 and 72.91
    assert table[2] == "| a | +13.0 (2 of 2) | +10.0 (2 of 2) | +9.0 (2 of 2) | +8.0 (2 of 2) | +5.1 (2 of 2) |"
    assert table[3].startswith("| b | +13.0 (2 of 2) | -1.5 (0 of 2) | -2.5 (0 of 2) | -3.5 (0 of 2) |")


def test_world_check_b2n_runs_the_synthetic_b2n_methods(tmp_path):
    """The command end to end on the micro CLIP (a few steps per method): one column per seed, every property."""
    from condu_bench.synthetic.b2n_check import B2N_TARGETS, run_b2n_check

    tiny = ["model.arch=condu-micro-vit", "model.pretrained=none", "scenario.options.domains=[shapes,colours]",
            "scenario.options.shots=2", "scenario.options.n_pool_per_class=8", "scenario.options.n_test_per_class=4",
            "train.iterations=1", "progress=false",
            *[f"recipes.{m}.{k}" for m in ("coop", "kgcoop", "clipfit", "mergetune") for k in ("iterations=1", "batch_size=4")],
            "method_options.mergetune.base_recipe.iterations=1", "method_options.mergetune.base_recipe.batch_size=4"]
    table, ok = run_b2n_check([0], [1, 2], tiny, tmp_path, log=lambda *a: None)
    assert table.splitlines()[0].startswith("| property | synthetic/seed1 | synthetic/seed2 | worst margin | mean margin | runs that hold |")
    assert all(p.describe() in table for p in B2N_TARGETS)
    assert isinstance(ok, bool)
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir() if p.is_dir()) == ["clipfit", "coop", "kgcoop",
                                                                                       "mergetune", "zeroshot"]
    # one selection per domain (one step each here, so epoch 1 of 1), shown under the table per run
    assert ("MergeTune's kept epoch (best val; median / latest over the domains): "
            "synthetic/seed1 1 / 1, synthetic/seed2 1 / 1") in table.splitlines()
    # then each domain's margins over the two runs
    domain_rows = [line.split(" | ")[0] for line in table.splitlines()[-2:]]
    assert domain_rows == ["| shapes", "| colours"] and all(line.count(" of 2)") == len(B2N_TARGETS)
                                                          for line in table.splitlines()[-2:])


def test_kept_epochs_come_from_the_runs_selection_record():
    from condu_bench.synthetic.b2n_check import kept_epochs, kept_epochs_line

    record = {"method_report": {"model_selection": {"a/base": {"selected_epoch": 1}, "b/base": {"selected_epoch": 24},
                                                    "c/base": {"selected_epoch": 3}}}}
    assert kept_epochs(record) == [1, 24, 3]
    assert kept_epochs({"method_report": {}}) == []
    assert kept_epochs_line([("m/seed1", [1, 24, 3]), ("m/seed2", [2, 5])]) == (
        "MergeTune's kept epoch (best val; median / latest over the domains): m/seed1 3 / 24, m/seed2 3.5 / 5")
    assert kept_epochs_line([("m/seed1", [])]) == ""


def test_world_check_refuses_ranking_with_b2n(capsys):
    from condu_bench.cli import main

    assert main(["world-check", "--b2n", "--ranking"]) == 2
    assert "does not combine with --b2n" in capsys.readouterr().err


def test_what_each_method_learns_and_keeps_next_to_the_released_matrices():
    from condu_bench.resources import published_dir
    from condu_bench.synthetic.world_check import learning_of, learning_table, published_learning

    ft = np.array([[90.0, 50.0, 40.0], [60.0, 80.0, 45.0], [50.0, 70.0, 85.0]])
    restrained = np.array([[70.0, 50.0, 40.0], [68.0, 66.0, 45.0], [66.0, 64.0, 60.0]])
    assert learning_of(ft) == pytest.approx({"diagonal": 85.0, "forgetting": (40.0 + 10.0) / 2})
    assert learning_of(restrained) == pytest.approx({"diagonal": 196 / 3, "forgetting": (4.0 + 2.0) / 2})

    published = published_learning(published_dir() / "zscl_matrices")
    # the released order-I matrices: ZSCL and iCaRL learn each dataset 1.1 points under Continual-FT, LwF 3.0
    for name, gap in (("ZSCL", -1.1), ("iCaRL", -1.1), ("LwF", -3.0)):
        assert published[name]["diagonal"] - published["Continual-FT"]["diagonal"] == pytest.approx(gap, abs=0.06)
    assert published["Continual-FT"]["forgetting"] > published["ZSCL"]["forgetting"] > 0

    # two runs; "moe_adapters" has no released matrix; a method missing from one run is left out
    runs = [{"finetune": learning_of(ft), "zscl": learning_of(restrained), "moe_adapters": learning_of(ft)},
            {"finetune": learning_of(ft), "zscl": learning_of(ft), "moe_adapters": learning_of(ft), "lwf": learning_of(ft)}]
    table = learning_table(runs, published)
    zscl_gap = published["ZSCL"]["diagonal"] - published["Continual-FT"]["diagonal"]
    assert (f"| zscl | {(196 / 3 + 85) / 2:.1f} | {(196 / 3 - 85) / 2:+.1f} | {zscl_gap:+.1f} | 14.0 | "
            f"{published['ZSCL']['forgetting']:.1f} |") in table
    assert "| finetune | 85.0 | +0.0 | +0.0 | 25.0 |" in table
    assert "| moe_adapters | 85.0 | +0.0 | - | 25.0 | - |" in table
    assert "| lwf |" not in table


def test_the_ranking_check_prints_what_each_method_learns_from_its_run_directory(tmp_path, monkeypatch):
    """``run_world_check(ranking=True)`` reads each method's accuracy matrix from ``<out>/<tag>/<method>/seed<S>``:
    the experiment is replaced by one that writes hand-made matrices and records there."""
    import condu_bench.experiment as experiment
    from condu_bench.reporting.matrix_io import write_accuracy_matrix
    from condu_bench.synthetic import world_check

    domains = ["shapes", "colours", "digits"]
    zs = np.array([[40.0, 60.0, 60.0]] * 3)
    ft = np.array([[95.0, 50.0, 40.0], [60.0, 90.0, 45.0], [50.0, 70.0, 85.0]])
    restrained = ft - np.eye(3) * 10.0  # learns each domain 10 points less, keeps the rest

    def fake_run(config, directory, log=print):
        records = []
        for rank, method in enumerate(config.methods):
            matrix = zs if method == "zeroshot" else restrained if method != "finetune" else ft
            write_accuracy_matrix(directory / method / "seed0" / "accuracy_matrix.csv", matrix, domains, domains)
            records.append({"method": method, "seed": 0, "datasets": domains, "transfer": 50.0 + rank, "avg": 60.0 - rank,
                            "last": float(matrix[-1].mean()),
                            "per_dataset": {d: {"last": float(v)} for d, v in zip(domains, matrix[-1])}})
        return records

    monkeypatch.setattr(experiment, "run_experiment", fake_run)
    table, _ = world_check.run_world_check([0], [0], [], tmp_path, log=lambda *a: None, ranking=True)
    assert "| finetune | 90.0 | +0.0 | +0.0 | 32.5 | 12.0 |" in table  # forgetting (95 - 50 + 90 - 70) / 2
    assert "| zscl | 80.0 | -10.0 | -1.1 | 22.5 | 3.8 |" in table  # (85 - 50 + 80 - 70) / 2
    assert "| zeroshot |" not in table


def test_an_undefined_ranking_is_shown_as_such_and_does_not_hold():
    from condu_bench.synthetic.world_check import RANKING, failures, facts_of, margin_stats, margin_table

    domains = ["shapes", "colours"]
    zs = record(dict(zip(domains, [30.0, 60.0])), transfer=60.0, last=45.0)
    ft = record(dict(zip(domains, [70.0, 90.0])), transfer=45.0, last=80.0)
    base = facts_of(zs, ft, np.array([[90.0, 50.0], [70.0, 90.0]]))
    tied = dict(base, tau={"transfer": None, "avg": 0.7, "last": 0.5})  # every method tied on Transfer
    ranked = dict(base, tau={"transfer": 0.8, "avg": 0.7, "last": 0.5})
    assert failures(tied, RANKING) == ["ranking tau-b Transfer >= 0.6: undefined", "ranking tau-b Last >= 0.6: 0.5"]
    # the worst and mean margins are over the runs where the value is defined; the undefined run does not hold
    assert margin_stats(RANKING[0], [tied, ranked]) == (pytest.approx(0.2), pytest.approx(0.2), 1)
    assert margin_stats(RANKING[0], [tied]) == (None, None, 0)
    table = margin_table([("a", tied), ("b", ranked)])
    assert "| ranking tau-b Transfer >= 0.6 | - | 0.8 | +0.2 | +0.2 | 1 of 2 | target |" in table
    assert "| ranking tau-b Transfer >= 0.6 | - | - | - | 0 of 1 | target |" in margin_table([("a", tied)])

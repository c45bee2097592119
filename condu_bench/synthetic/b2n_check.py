"""Issue 8's base-to-novel properties of the embedded world, per run, with margins.

On real data (CoOp's protocol, ViT-B/16) prompt tuning gains on the base classes and loses on the novel ones, the
methods that keep the text features near zero-shot CLIP's (KgCoOp, CLIPFit) lose less on Novel, and MergeTune on a
finished CoOp prompt raises the harmonic mean. ``condu-bench world-check --b2n`` runs ``benchmarks/synthetic_b2n.yaml``
for these methods on every (pretrained tiny CLIP, seed) and prints each property's value per run, its worst and mean
margin and the runs that hold; every property must hold on every run (a margin of at least 0).
"""

from __future__ import annotations

from typing import Any

from condu_bench.synthetic.world_check import Property, failures, margin_stats, margin_table, number, pretrained_tag

B2N_METHODS = ("zeroshot", "coop", "kgcoop", "clipfit", "mergetune")


def _gap(method: str, other: str, metric: str):
    return lambda facts: facts[method][metric] - facts[other][metric]


B2N_TARGETS = (
    Property("CoOp Base - zero-shot Base", _gap("coop", "zeroshot", "base"), 0.0),
    Property("zero-shot Novel - CoOp Novel", _gap("zeroshot", "coop", "novel"), 0.0),
    Property("KgCoOp Novel - CoOp Novel", _gap("kgcoop", "coop", "novel"), 0.0),
    Property("CLIPFit Novel - CoOp Novel", _gap("clipfit", "coop", "novel"), 0.0),
    Property("MergeTune HM - CoOp HM", _gap("mergetune", "coop", "hm"), 0.0),
)


def b2n_facts(records: dict[str, dict[str, Any]], domain: str | None = None) -> dict[str, dict[str, float]]:
    """Base / Novel / HM of each method's record of one seed: the averaged rows, or ``domain``'s."""
    missing = [m for m in B2N_METHODS if m not in records]
    if missing:
        raise ValueError(f"the base-to-novel check needs runs of {', '.join(missing)}")
    rows = {m: records[m] if domain is None else records[m]["per_dataset"][domain] for m in B2N_METHODS}
    return {m: {k: float(row[k]) for k in ("base", "novel", "hm")} for m, row in rows.items()}


def per_domain_table(facts: dict[str, list[dict[str, dict[str, float]]]]) -> str:
    """Per domain (``facts``: its facts of every run), each property's mean margin over the runs and the runs that
    hold: which domains carry a property and which break it."""
    lines = ["| domain | " + " | ".join(p.describe() for p in B2N_TARGETS) + " |",
             "|:---|" + "---:|" * len(B2N_TARGETS)]
    for domain, runs in facts.items():
        stats = [margin_stats(prop, runs) for prop in B2N_TARGETS]
        lines.append(f"| {domain} | " + " | ".join(f"{number(mean, '+.1f')} ({held} of {len(runs)})" for _, mean, held in stats) + " |")
    return "\n".join(lines)


def kept_epochs(record: dict[str, Any]) -> list[int]:
    """The epochs best-val selection kept in a run, one per trained task (empty when the run selected nothing)."""
    chosen = record.get("method_report", {}).get("model_selection", {})
    return [int(v["selected_epoch"]) for v in chosen.values() if v.get("selected_epoch") is not None]


def kept_epochs_line(rows: list[tuple[str, list[int]]]) -> str:
    """One line under the margin table: per run, the median and the latest epoch MergeTune's selection kept. On the
    embedded world's 12-20-image val splits it is mostly the first, so the MergeTune row is its CoOp base."""
    import statistics

    cells = [f"{name} {statistics.median(epochs):g} / {max(epochs)}" for name, epochs in rows if epochs]
    return "MergeTune's kept epoch (best val; median / latest over the domains): " + ", ".join(cells) if cells else ""


def run_b2n_check(pretrain_seeds: list[int], seeds: list[int], overrides: list[str], out, log=print) -> tuple[str, bool]:
    """Run the synthetic base-to-novel benchmark's methods on every (pretrained model, seed); the margin table and
    whether every property holds."""
    from pathlib import Path

    from condu_bench.cli import resolve_benchmark
    from condu_bench.config import load_config
    from condu_bench.experiment import run_experiment

    rows, kept, by_domain = [], [], {}
    for pseed in pretrain_seeds:
        tag = pretrained_tag(pseed)
        config = load_config(resolve_benchmark("synthetic_b2n"), [f"model.pretrained={tag}", f"methods={','.join(B2N_METHODS)}",
                                                                  f"seeds={','.join(map(str, seeds))}", *overrides])
        records = run_experiment(config, Path(out) / tag, log=log)
        for seed in seeds:
            by_method = {r["method"]: r for r in records if r["seed"] == seed}
            rows.append((f"{tag}/seed{seed}", b2n_facts(by_method)))
            kept.append((f"{tag}/seed{seed}", kept_epochs(by_method["mergetune"])))
            for domain in by_method["coop"]["datasets"]:
                by_domain.setdefault(domain, []).append(b2n_facts(by_method, domain))
    table = margin_table(rows, sections=(("target", B2N_TARGETS),))
    line = kept_epochs_line(kept)
    table += ("\n" + line if line else "") + "\n\nPer domain (mean margin over the runs, runs that hold):\n\n"
    return table + per_domain_table(by_domain), all(not failures(f, B2N_TARGETS) for _, f in rows)

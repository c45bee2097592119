"""Which rows of a synthetic MTIL leaderboard would have to move for it to rank the methods as order I does.

Reads the runs under a directory (as ``condu-bench report`` does), takes each method's seed means, replaces the
values given on the command line and prints Kendall tau-b per metric against ``results/published/mtil_order1.csv``
(the same computation as the report's ranking table), first as measured, then with the replacements:

    python docs/experiments/ranking_counterfactuals.py results/runs/synthetic_mtil \
        zscl.avg=69.4 zscl.last=75.6 moe_adapters.avg=73.5

Session 17 (from the README's seed means over seeds 0-2, first kind of machine): tau-b 0.54 / 0.33 / 0.47
(Transfer / Avg / Last). ZSCL's "distillation alone" row in its place (57.8 / 69.4 / 75.6, measured on the second
kind of machine, see the README) lifts Last to 0.60 but Avg only to 0.42; with MoE-Adapters' Avg also under ConDU-LoRA's, Avg is 0.47; it
reaches 0.6 only when Continual-FT's and WiSE-FT's Avg are also the two lowest (as published: 55.9 and 60.7
against zero-shot's 65.3), i.e. when fine-tuning forgets the untrained domains' zero-shot accuracy far more than
it does here (Transfer 12 points under zero-shot's, against 25 on CLIP).
"""

import sys
from pathlib import Path

from condu_bench.reporting.collect import collect_runs, group_runs
from condu_bench.reporting.paper_tables import MTIL_METRICS, load_published
from condu_bench.reporting.rank_agreement import agreements

PUBLISHED = Path(__file__).resolve().parents[2] / "results" / "published" / "mtil_order1.csv"


def seed_means(directory: Path) -> dict[str, dict[str, float | None]]:
    groups = [g for g in group_runs(collect_runs([directory])) if g.scenario == "synthetic_mtil"]
    methods = [g.method for g in groups]
    repeated = sorted({m for m in methods if methods.count(m) > 1})
    if repeated:
        raise SystemExit(f"{directory}: several configurations of {', '.join(repeated)}; give a directory with one each")
    return {g.method: {key: g.headline(key).mean for key, _title in MTIL_METRICS} for g in groups}


def replaced(means: dict[str, dict[str, float | None]], assignments: list[str]) -> dict[str, dict[str, float | None]]:
    out = {method: dict(values) for method, values in means.items()}
    keys = [key for key, _title in MTIL_METRICS]
    for assignment in assignments:
        target, _, value = assignment.partition("=")
        method, _, key = target.partition(".")
        if method not in out or key not in keys or not value:
            raise SystemExit(f"{assignment!r}: expected METHOD.METRIC=VALUE with METHOD one of {sorted(out)} and "
                             f"METRIC one of {keys}")
        out[method][key] = float(value)
    return out


def taus(values: dict[str, dict[str, float | None]]) -> str:
    found = agreements(values, load_published(PUBLISHED))
    return " / ".join("-" if a.tau is None else f"{a.tau:.2f}" for a in found)


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    means = seed_means(Path(argv[0]))
    if not means:
        raise SystemExit(f"{argv[0]}: no synthetic_mtil runs found")
    print("tau-b (" + " / ".join(title for _key, title in MTIL_METRICS) + ")")
    print(f"  as measured: {taus(means)}")
    if argv[1:]:
        print(f"  with {' '.join(argv[1:])}: {taus(replaced(means, argv[1:]))}")


if __name__ == "__main__":
    main(sys.argv[1:])

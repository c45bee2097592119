"""The properties that make the embedded world a miniature of CLIP + MTIL, checked with margins.

One definition serves the test suite (``tests/test_embedded_default.py``, on the cached tiny CLIP) and the
``condu-bench world-check`` command, which runs the default benchmark for several training seeds on tiny CLIPs
pretrained with several seeds (``model.pretrained=synthetic-seedN``: another CPU's floating-point results
amount to another pretrained model) and reports every property's worst margin.

``GATES`` must hold everywhere (CI fails otherwise); ``TARGETS`` are issue 6's figures, which some gates enforce
with a looser bound so that another machine's pretrained model does not fail CI on a fraction of a point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Property:
    name: str
    measure: Callable[[dict[str, Any]], float]  # of the facts below
    bound: float
    at_least: bool = True  # value >= bound, else value <= bound

    def margin(self, facts: dict[str, Any]) -> float | None:
        """How far the value clears the bound (negative: it fails); None where the value is undefined (a tau-b over
        tied scores only), which counts as not holding."""
        value = self.measure(facts)
        if value is None:
            return None
        return value - self.bound if self.at_least else self.bound - value

    def describe(self) -> str:
        return f"{self.name} {'>=' if self.at_least else '<='} {self.bound:g}"


def facts_of(zeroshot: dict[str, Any], finetune: dict[str, Any], finetune_matrix: np.ndarray) -> dict[str, Any]:
    """What the properties are computed from: the zero-shot and Continual-FT records and the FT matrix."""
    from condu_bench.synthetic.domains import domain_classnames

    datasets = finetune["datasets"]
    zs = np.array([zeroshot["per_dataset"][d]["last"] for d in datasets])
    chance = np.array([100.0 / len(domain_classnames(d)) for d in datasets])
    diagonal = np.diag(finetune_matrix)
    return {
        "zs": zs, "chance": chance, "diagonal": diagonal,
        "forgetting": diagonal[:-1] - finetune_matrix[-1, :-1],
        "zs_last": zeroshot["last"], "ft_last": finetune["last"],
        "zs_transfer": zeroshot["transfer"], "ft_transfer": finetune["transfer"],
    }


# CI enforces GATES on whatever machine it gets, so each keeps a margin below the worst value measured over tiny CLIPs
# pretrained with seeds 0-2 and training seeds 0-2 (world version 6; the README's world table); TARGETS are issue 6's
# figures, reported by `world-check` with their margins.
GATES = (
    Property("zero-shot mean", lambda f: f["zs"].mean(), 45.0),
    Property("zero-shot mean", lambda f: f["zs"].mean(), 70.0, at_least=False),
    Property("zero-shot max", lambda f: f["zs"].max(), 85.0, at_least=False),
    Property("zero-shot min over chance", lambda f: (f["zs"] - f["chance"]).min(), 3.0),
    Property("FT diagonal mean", lambda f: f["diagonal"].mean(), 85.0),
    Property("FT diagonal min", lambda f: f["diagonal"].min(), 65.0),
    Property("FT Last - zero-shot Last", lambda f: f["ft_last"] - f["zs_last"], 8.0),
    Property("zero-shot Transfer - FT Transfer", lambda f: f["zs_transfer"] - f["ft_transfer"], 5.0),
    Property("FT largest forgetting", lambda f: f["forgetting"].max(), 10.0),
)

TARGETS = (
    Property("FT diagonal mean", lambda f: f["diagonal"].mean(), 85.0),
    Property("FT diagonal min", lambda f: f["diagonal"].min(), 70.0),
    Property("FT Last - zero-shot Last", lambda f: f["ft_last"] - f["zs_last"], 8.0),
    Property("zero-shot Transfer - FT Transfer", lambda f: f["zs_transfer"] - f["ft_transfer"], 8.0),
)


#: the MTIL methods of the published order-I table, run by ``world-check --ranking``
RANKED_METHODS = ("zeroshot", "finetune", "lwf", "lwf_vr", "icarl", "wise_ft", "zscl", "condu", "condu_lora",
                  "moe_adapters")
# issue 6: with every MTIL method, the leaderboard orders the methods as the published order-I table does
RANKING = tuple(Property(f"ranking tau-b {title}", (lambda key: lambda f: f["tau"][key])(key), 0.6)
                for key, title in (("transfer", "Transfer"), ("avg", "Avg"), ("last", "Last")))


def ranking_tau(records: dict[str, dict[str, Any]], published_csv) -> dict[str, float | None]:
    """Kendall tau-b per MTIL metric between these runs (method -> record) and a published table's headline rows,
    over the methods both have."""
    from condu_bench.reporting.paper_tables import load_published
    from condu_bench.reporting.rank_agreement import agreements

    return {a.metric: a.tau for a in agreements(records, load_published(published_csv))}


def learning_of(matrix: np.ndarray) -> dict[str, float]:
    """How much a run learns and keeps: the mean of the diagonal (each task right after its own training) and the
    mean forgetting (diagonal minus the last row, over every task but the last: minus the backward transfer)."""
    from condu_bench.metrics import backward_transfer

    names = [str(i) for i in range(len(matrix))]
    return {"diagonal": float(np.diag(matrix).mean()), "forgetting": -backward_transfer(matrix, names)["bwt"]}


def published_learning(matrices_dir, order: str = "order1") -> dict[str, dict[str, float]]:
    """:func:`learning_of` each of ZSCL's released accuracy matrices of ``order``, by published method name."""
    from pathlib import Path

    from condu_bench.reporting.matrix_io import read_accuracy_matrix
    from condu_bench.reporting.paper_tables import PUBLISHED_NAMES_OF_MATRIX_FILES

    out = {}
    for path in sorted(Path(matrices_dir).glob(f"{order}_*.csv")):
        name = path.stem[len(order) + 1:]
        out[PUBLISHED_NAMES_OF_MATRIX_FILES.get(name, name)] = learning_of(read_accuracy_matrix(path)[0])
    return out


def learning_table(runs: list[dict[str, dict[str, float]]], published: dict[str, dict[str, float]]) -> str:
    """Markdown, one row per trained method (``runs``: per run, method -> :func:`learning_of`, Continual-FT as
    ``finetune`` in each): its diagonal minus Continual-FT's and its forgetting, mean over the runs, next to the
    same from the released matrices (``published``). A method that restrains learning ranks as published only if
    it still learns each task about as well as fine-tuning (released order I: ZSCL and iCaRL 1.1 under it)."""
    from condu_bench.reporting.tables import match_method

    ft_published = published.get("Continual-FT")
    lines = ["| method | diagonal | diagonal - Continual-FT's | published | forgetting | published |",
             "|:---|---:|---:|---:|---:|---:|"]
    methods = [m for m in runs[0] if all(m in run for run in runs)]
    for method in methods:
        diagonal = float(np.mean([run[method]["diagonal"] for run in runs]))
        gap = float(np.mean([run[method]["diagonal"] - run["finetune"]["diagonal"] for run in runs]))
        forgetting = float(np.mean([run[method]["forgetting"] for run in runs]))
        paper = published.get(match_method(method, published) or "")
        paper_gap = "-" if paper is None or ft_published is None else f"{paper['diagonal'] - ft_published['diagonal']:+.1f}"
        paper_forgetting = "-" if paper is None else f"{paper['forgetting']:.1f}"
        lines.append(f"| {method} | {diagonal:.1f} | {gap:+.1f} | {paper_gap} | {forgetting:.1f} | {paper_forgetting} |")
    return "\n".join(lines)


def number(value: float | None, spec: str = ".1f") -> str:
    """A table cell: ``value`` formatted, or "-" where it is undefined."""
    return "-" if value is None else format(value, spec)


def failures(facts: dict[str, Any], properties=GATES) -> list[str]:
    out = []
    for p in properties:
        margin = p.margin(facts)
        if margin is None:
            out.append(f"{p.describe()}: undefined")
        elif margin < 0:
            out.append(f"{p.describe()}: {p.measure(facts):.1f}")
    return out


def margin_stats(prop: Property, runs: list[dict[str, Any]]) -> tuple[float | None, float | None, int]:
    """``prop``'s worst and mean margin over the runs where it is defined (None: defined on none), and how many runs
    hold."""
    margins = [m for m in (prop.margin(f) for f in runs) if m is not None]
    if not margins:
        return None, None, 0
    return min(margins), sum(margins) / len(margins), sum(m >= 0 for m in margins)


def margin_table(rows: list[tuple[str, dict[str, Any]]], sections=None) -> str:
    """Markdown: one column per (model, seed) run, one row per property, its value; then the worst and the mean
    margin and how many runs hold (the mean tells a systematic shortfall from noise around the bound).
    ``sections``: (kind, properties) pairs, by default the MTIL gates and targets, with the ranking targets when the
    runs measured them (``world-check --ranking``)."""
    header = "| property | " + " | ".join(name for name, _ in rows) + " | worst margin | mean margin | runs that hold | kind |"
    lines = [header, "|" + "---|" * (len(rows) + 5)]
    if sections is None:
        ranked = all("tau" in f for _, f in rows)
        sections = (("gate", GATES), ("target", TARGETS + (RANKING if ranked else ())))
    for kind, props in sections:
        for p in props:
            values = " | ".join(number(p.measure(f)) for _, f in rows)
            worst, mean, held = margin_stats(p, [f for _, f in rows])
            lines.append(f"| {p.describe()} | {values} | {number(worst, '+.1f')} | {number(mean, '+.1f')} | "
                         f"{held} of {len(rows)} | {kind} |")
    return "\n".join(lines)


def pretrained_tag(pretrain_seed: int) -> str:
    """``model.pretrained`` of the tiny CLIP pretrained with this seed."""
    return "synthetic" if pretrain_seed == 0 else f"synthetic-seed{pretrain_seed}"


def run_world_check(pretrain_seeds: list[int], seeds: list[int], overrides: list[str], out, log=print,
                    ranking: bool = False) -> tuple[str, bool]:
    """Run zero-shot and Continual-FT of the default benchmark on every (pretrained model, seed); the margin table
    and whether every gate holds. ``ranking``: every method of :data:`RANKED_METHODS` too, the leaderboard's
    Kendall tau-b against the published order-I table per run (a target, with the others), and under the table
    what each method learns and keeps next to ZSCL's released matrices (:func:`learning_table`)."""
    from pathlib import Path

    from condu_bench.cli import resolve_benchmark
    from condu_bench.config import load_config
    from condu_bench.resources import published_dir
    from condu_bench.experiment import run_experiment
    from condu_bench.reporting.matrix_io import read_accuracy_matrix

    rows, learning = [], []
    for pseed in pretrain_seeds:
        tag = pretrained_tag(pseed)
        methods = RANKED_METHODS if ranking else ("zeroshot", "finetune")
        config = load_config(resolve_benchmark(None), [f"model.pretrained={tag}", f"methods={','.join(methods)}",
                                                       f"seeds={','.join(map(str, seeds))}", *overrides])
        directory = Path(out) / tag
        records = run_experiment(config, directory, log=log)
        for seed in seeds:
            by_method = {r["method"]: r for r in records if r["seed"] == seed}
            matrices = {m: read_accuracy_matrix(directory / m / f"seed{seed}" / "accuracy_matrix.csv")[0]
                        for m in methods if m != "zeroshot"}
            facts = facts_of(by_method["zeroshot"], by_method["finetune"], matrices["finetune"])
            if ranking:
                facts["tau"] = ranking_tau(by_method, published_dir() / "mtil_order1.csv")
                learning.append({m: learning_of(matrix) for m, matrix in matrices.items()})
            rows.append((f"{tag}/seed{seed}", facts))
    table = margin_table(rows)
    if learning:
        table += ("\n\nWhat each method learns and keeps (mean over the runs; published: ZSCL's released order-I "
                  "matrices):\n\n" + learning_table(learning, published_learning(published_dir() / "zscl_matrices")))
    return table, all(not failures(f) for _, f in rows)

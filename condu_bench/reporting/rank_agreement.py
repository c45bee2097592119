"""Whether a leaderboard orders its methods as a paper's table does: Kendall tau-b per metric over the methods that
both have (seed means against the published headline numbers).

This is how the embedded synthetic world is judged (issue 6): its numbers cannot match a paper's, but a world that
behaves like CLIP + MTIL in miniature ranks the methods as the published order-I table does. Runs of synthetic MTIL
are compared with order I, synthetic few-shot MTIL with the few-shot table; task-agnostic runs have no published
ranking to compare with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from condu_bench.metrics import kendall_tau_b
from condu_bench.reporting.collect import EMPTY, Group, Stat
from condu_bench.reporting.paper_tables import MTIL_METRICS, RUN, Published, Row, Table, load_published
from condu_bench.reporting.tables import _slug, match_method

#: synthetic MTIL scenario -> the published table whose ranking it should reproduce
RANKING_REFERENCES = {"synthetic_mtil": "mtil_order1.csv", "synthetic_mtil_fewshot": "mtil_fewshot.csv"}


@dataclass
class Agreement:
    metric: str
    tau: float | None  # None when fewer than two methods (or a constant column) leave nothing to rank
    pairs: list[tuple[str, str, float, float]]  # (run method, paper method, harness mean, published value)


def ranking_reference(scenario: str, published_dir) -> tuple[str, Published] | None:
    """The published table a synthetic MTIL scenario's ranking is compared with, or None."""
    filename = RANKING_REFERENCES.get(scenario)
    if filename is None or published_dir is None or not (Path(published_dir) / filename).is_file():
        return None
    return filename, load_published(Path(published_dir) / filename)


def agreements(values: dict[str, dict[str, float | None]], published: Published, metrics=MTIL_METRICS) -> list[Agreement]:
    """Per metric, tau-b between ``values`` (run method -> metric -> value) and the published headline values, over
    the methods that have a published row (matched by the report's aliases) and a value on both sides."""
    matched = [(method, paper) for method in values if (paper := match_method(method, published.methods()))]
    out = []
    for key, _title in metrics:
        pairs = [(method, paper, values[method].get(key), published.headline[paper].get(key)) for method, paper in matched]
        pairs = [p for p in pairs if p[2] is not None and p[3] is not None]
        try:
            tau = kendall_tau_b([p[2] for p in pairs], [p[3] for p in pairs]) if len(pairs) >= 2 else None
        except ValueError:  # a constant column: no order to compare
            tau = None
        out.append(Agreement(key, tau, pairs))
    return out


def rank_agreement(groups: list[Group], published: Published, metrics=MTIL_METRICS) -> tuple[list[Agreement], list[str]]:
    """:func:`agreements` of the groups' seed means; and the methods left out (no published row, or several
    configurations of one method: which one would count?)."""
    by_method: dict[str, list[Group]] = {}
    for group in groups:
        by_method.setdefault(group.method, []).append(group)
    left_out, means = [], {}
    for method, method_groups in by_method.items():
        if match_method(method, published.methods()) is None:
            left_out.append(f"{method} (no published row)")
        elif len(method_groups) > 1:
            left_out.append(f"{method} ({len(method_groups)} configurations)")
        else:
            means[method] = {key: method_groups[0].headline(key).mean for key, _title in metrics}
    return agreements(means, published, metrics), left_out


def rank_agreement_table(scenario: str, groups: list[Group], reference: tuple[str, Published]) -> Table:
    """One row of tau-b per MTIL metric, with the compared methods in the notes."""
    filename, published = reference
    agreements, left_out = rank_agreement(groups, published)
    cells = {title: (Stat(a.tau, None, 1) if a.tau is not None else EMPTY)
             for a, (_key, title) in zip(agreements, MTIL_METRICS)}
    table = Table(f"ranking_{_slug(scenario)}", f"{scenario}: ranking against {filename} (Kendall tau-b)",
                  [title for _key, title in MTIL_METRICS], [Row("Kendall tau-b", RUN, cells, "this harness")],
                  decimals=2, higher_is_better=None)
    compared = sorted({f"{method} ~ {paper}" for a in agreements for method, paper, _h, _p in a.pairs})
    table.notes.append(f"Compared over {len(compared)} methods (seed means against the published headline): "
                       + ", ".join(compared) + ".")
    if left_out:
        table.notes.append("Left out: " + ", ".join(left_out) + ".")
    return table

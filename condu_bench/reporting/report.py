"""``condu-bench report``: every run below some directories -> paper-layout tables (md / tex / csv), figures (png / pdf)
and one self-contained ``report.html`` under OUT. Works from result files only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from condu_bench.atomic_io import atomic_write_text
from condu_bench.errors import UserError
from condu_bench.reporting.collect import Group, collect_runs, group_runs
from condu_bench.reporting.paper_tables import (
    Published,
    Table,
    base_to_novel_table,
    beyond_table,
    cost_table,
    load_published,
    mtil_tables,
    target_average_table,
)
from condu_bench.reporting.rank_agreement import rank_agreement_table, ranking_reference
from condu_bench.reporting.report_html import render_report
from condu_bench.reporting.report_plots import plot_base_novel, plot_headline_bars, plot_stream
from condu_bench.reporting.table_writers import write_table_files
from condu_bench.reporting.tables import PUBLISHED_PER_DATASET, _slug, published_csv_for

MATRIX_ORDERS = {"mtil_order1.csv": "order1", "mtil_order2.csv": "order2"}  # published file -> ZSCL matrix prefix


def published_for(scenario: str, protocol: str, published_dir) -> Published | None:
    """The published table a scenario is compared with (see tables.PUBLISHED_TABLES), with its per-dataset numbers."""
    if published_dir is None:
        return None
    csv_path = published_csv_for(scenario, protocol, published_dir)
    if csv_path is None:
        return None
    per = csv_path.with_name(PUBLISHED_PER_DATASET[csv_path.name]) if csv_path.name in PUBLISHED_PER_DATASET else None
    order = MATRIX_ORDERS.get(csv_path.name)
    return load_published(csv_path, csv_path.parent / "zscl_matrices" if order else None, order, per)


@dataclass
class Section:
    title: str
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[Path, str]] = field(default_factory=list)


def scenario_section(scenario: str, protocol: str, groups: list[Group], published: Published | None,
                     figures_dir: Path, ranking: tuple[str, Published] | None = None) -> Section:
    """``ranking``: a published table whose order of methods this scenario's leaderboard is compared with."""
    section = Section(f"{scenario} ({protocol.replace('_', ' ')})")
    stem = figures_dir / _slug(scenario)
    if protocol == "mtil":
        section.tables += mtil_tables(scenario, groups, published)
        if ranking is not None:
            section.tables.append(rank_agreement_table(scenario, groups, ranking))
        beyond = beyond_table(scenario, groups)
        if beyond is not None:
            section.tables.append(beyond)
        section.figures.append((plot_headline_bars(groups, f"{stem}_bars")[0], "Transfer / Avg. / Last, error bars = std over seeds"))
        if any(r.matrix is not None for g in groups for r in g.runs):
            section.figures.append((plot_stream(groups, f"{stem}_stream")[0], "each dataset's accuracy along the stream"))
    elif protocol == "base_to_novel":
        section.tables.append(base_to_novel_table(scenario, groups, published))
        points = {m: (v["base"], v["novel"]) for m, v in (published.headline.items() if published else [])
                  if v.get("base") is not None and v.get("novel") is not None}
        section.figures.append((plot_base_novel(groups, f"{stem}_base_novel", points)[0],
                                "average Base vs Novel (hollow: published), grey: iso-HM curves"))
    else:
        section.tables.append(target_average_table(scenario, protocol, groups))
    section.tables.append(cost_table(scenario, groups))
    return section


def build_report(directories, out, published_dir=None, title: str = "condu-bench report") -> Path:
    """Write ``tables/``, ``figures/`` and ``report.html`` under ``out``; returns the path of report.html."""
    runs = collect_runs(directories)
    if not runs:
        raise UserError(f"no finished runs (metrics.json) below {', '.join(map(str, directories))}")
    groups = group_runs(runs)
    out = Path(out)
    tables_dir, figures_dir = out / "tables", out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for scenario, protocol in dict.fromkeys((g.scenario, g.protocol) for g in groups):
        sub = [g for g in groups if (g.scenario, g.protocol) == (scenario, protocol)]
        section = scenario_section(scenario, protocol, sub, published_for(scenario, protocol, published_dir), figures_dir,
                                   ranking_reference(scenario, published_dir) if protocol == "mtil" else None)
        for table in section.tables:
            write_table_files(table, tables_dir)
        sections.append(section)
    anchor_of = {str(r.path): f"g{k}" for k, g in enumerate(groups) for r in g.runs}
    page = render_report(title, [s.__dict__ for s in sections], groups, anchor_of, out)
    return atomic_write_text(out / "report.html", page)

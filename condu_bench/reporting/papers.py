"""``condu-bench tables --paper NAME``: one paper's main table regenerated from the runs present. Every row the paper
has is shown; a row with no run stays visibly empty, and the ``condu-bench run`` command that fills it is listed
(also for methods not registered in this installation yet: the command is what to run once they are)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from condu_bench.errors import UserError, unknown_name_message
from condu_bench.reporting.collect import collect_runs, group_runs
from condu_bench.reporting.paper_tables import Table, Wanted, base_to_novel_table, mtil_tables
from condu_bench.reporting.report import published_for
from condu_bench.reporting.tables import published_csv_for


@dataclass(frozen=True)
class Paper:
    title: str
    protocol: str
    published_csv: str  # the file in results/published/ whose rows the table shows
    benchmark: str  # benchmarks/ file the fill-in commands run
    rows: tuple[Wanted, ...]
    benchmark_of: tuple[tuple[str, str], ...] = ()  # (method, benchmark) where a method has its own file

    def command(self, row: Wanted, out: Path) -> str:
        benchmark = dict(self.benchmark_of).get(row.method, self.benchmark)
        extra = "".join(f" {o}" for o in row.overrides)
        return f"condu-bench run {benchmark} data_root=DATA methods={row.method}{extra} --out {out / benchmark}"


_MTIL_ROWS = (Wanted("zeroshot", "zeroshot"), Wanted("finetune", "finetune"), Wanted("lwf", "lwf"), Wanted("icarl", "icarl"),
              Wanted("lwf_vr", "lwf_vr"), Wanted("wise_ft", "wise_ft"))
PAPERS: dict[str, Paper] = {
    "zscl": Paper("ZSCL (ICCV 2023) Table 1, MTIL order I", "mtil", "mtil_order1.csv", "mtil_order1",
                  (*_MTIL_ROWS, Wanted("zscl", "zscl"))),
    "condu": Paper("ConDU (ICLR 2026) Table 1, MTIL order I", "mtil", "mtil_order1.csv", "mtil_order1",
                   (*_MTIL_ROWS, Wanted("zscl", "zscl"), Wanted("moe_adapters", "moe_adapters"),
                    Wanted("condu_lora", "condu_lora"), Wanted("condu", "condu", paper="ConDU (FT)")),
                   benchmark_of=(("condu_lora", "mtil_order1_lora"),)),
    "coop": Paper("CoOp / CoCoOp base-to-novel, average over 11 datasets", "base_to_novel", "b2n_average.csv", "base_to_novel",
                  (Wanted("zeroshot", "zeroshot", paper="CLIP"), Wanted("coop", "coop"), Wanted("cocoop", "cocoop"))),
    "clipfit": Paper("CLIPFit (EMNLP 2024) base-to-novel", "base_to_novel", "b2n_average.csv", "base_to_novel",
                     (Wanted("zeroshot", "zeroshot", paper="CLIP"), Wanted("coop", "coop"), Wanted("cocoop", "cocoop"),
                      Wanted("kgcoop", "kgcoop"), Wanted("clipfit", "clipfit"))),
    "mergetune": Paper("MergeTune Table 1, base-to-novel", "base_to_novel", "b2n_average.csv", "base_to_novel",
                       (Wanted("zeroshot", "zeroshot", paper="CLIP"), Wanted("coop", "coop"), Wanted("kgcoop", "kgcoop"),
                        Wanted("coop+mergetune", "mergetune", ("method_options.mergetune.base=coop",), "CoOp+MergeTune"),
                        Wanted("kgcoop+mergetune", "mergetune", ("method_options.mergetune.base=kgcoop",), "KgCoOp+MergeTune"))),
}


def paper_spec(name: str) -> Paper:
    if name not in PAPERS:
        raise UserError(unknown_name_message("paper", name, list(PAPERS)))
    return PAPERS[name]


def paper_tables(name: str, directories, published_dir) -> tuple[list[Table], list[str]]:
    """The paper's table(s) from the runs below ``directories`` whose scenario is the one the paper measured, and the
    commands for the rows that have no run (``data_root=DATA``: put the data root there)."""
    from condu_bench.registries import METHODS

    paper = paper_spec(name)
    runs = collect_runs(directories)
    groups = [g for g in group_runs(runs) if g.protocol == paper.protocol
              and (found := published_csv_for(g.scenario, g.protocol, published_dir)) is not None
              and found.name == paper.published_csv]
    scenarios = list(dict.fromkeys(g.scenario for g in groups)) or [paper.benchmark]
    scenario = scenarios[0] if len(scenarios) == 1 else " + ".join(scenarios)
    published = published_for(scenario if groups else _scenario_name_of(paper), paper.protocol, published_dir)
    if paper.protocol == "mtil":
        tables = mtil_tables(scenario, groups, published, list(paper.rows), placeholders=True)
    else:
        tables = [base_to_novel_table(scenario, groups, published, list(paper.rows), placeholders=True)]
    out = Path(directories[0]) if directories else Path("results/runs")
    commands = []
    for row in paper.rows:
        if not any(row.selects(g) for g in groups):
            note = "" if row.method in METHODS else "   # method not registered in this installation yet"
            commands.append(paper.command(row, out) + note)
    for table in tables:
        table.title = f"{paper.title}: {table.title}"
    return tables, commands


def _scenario_name_of(paper: Paper) -> str:
    """A scenario name that selects the paper's published file when no run exists yet."""
    return {"mtil_order1.csv": "mtil_orderI", "mtil_order2.csv": "mtil_orderII"}.get(paper.published_csv, paper.protocol)

"""The ``report`` and ``tables`` commands of the ``condu-bench`` command line (registered by :func:`add_commands`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from condu_bench import resources


def cmd_report(args: argparse.Namespace) -> int:
    from condu_bench.reporting.report import build_report

    published = None if args.no_published else resources.published_dir()
    out = Path(args.out) if args.out else Path(args.dirs[0]) / "report"
    page = build_report(args.dirs, out, published)
    print(f"tables:  {out / 'tables'}\nfigures: {out / 'figures'}\nreport:  {page}")
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from condu_bench.reporting.papers import paper_tables
    from condu_bench.reporting.table_writers import to_markdown, write_table_files

    tables, commands = paper_tables(args.paper, args.dirs, resources.published_dir())
    out = Path(args.out) if args.out else Path(args.dirs[0]) / f"tables_{args.paper}"
    for table in tables:
        write_table_files(table, out)
        print(to_markdown(table))
    print(f"written: {out} (md, tex, csv)")
    if commands:
        print("\nRows without a run (— above); these commands fill them (DATA = your data root):")
        print("\n".join(f"  {c}" for c in commands))
    return 0


def add_commands(sub) -> None:
    report = sub.add_parser("report", help="tables, figures and a self-contained report.html from run directories",
                            description="Collect every finished run below DIR... (run or sweep directories), aggregate "
                                        "seeds per scenario / method / resolved config, and write paper-layout tables "
                                        "(md, tex, csv), figures (png, pdf) and report.html under OUT.")
    report.add_argument("dirs", nargs="+", metavar="DIR")
    report.add_argument("--out", help="output directory (default DIR/report for the first DIR)")
    report.add_argument("--no-published", action="store_true", help="leave the published numbers out")
    report.set_defaults(func=cmd_report)

    tables = sub.add_parser("tables", help="regenerate one paper's main table from the runs present",
                            description="Empty rows/cells are runs that do not exist yet; the commands that would run them "
                                        "are printed after the table.")
    tables.add_argument("--paper", required=True, help="zscl, condu, coop, clipfit or mergetune")
    tables.add_argument("dirs", nargs="+", metavar="DIR")
    tables.add_argument("--out", help="where to write the md/tex/csv files (default DIR/tables_<paper>)")
    tables.set_defaults(func=cmd_tables)

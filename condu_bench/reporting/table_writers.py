"""Markdown, LaTeX (booktabs; best per column bold, second underlined) and CSV renderings of a paper-layout
:class:`~condu_bench.reporting.paper_tables.Table`. Empty cells print as ``—`` (``--`` in LaTeX)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from condu_bench.atomic_io import atomic_write_text
from condu_bench.reporting.collect import Stat
from condu_bench.reporting.paper_tables import DIFF, EMPTY_MARK, Table
from condu_bench.reporting.tables import latex_escape


def format_stat(stat: Stat, decimals: int, signed: bool = False, pm: str = " ± ") -> str:
    if stat.mean is None:
        return EMPTY_MARK
    text = f"{stat.mean:+.{decimals}f}" if signed else f"{stat.mean:.{decimals}f}"
    if stat.std is not None:
        text += f"{pm}{stat.std:.{decimals}f}"
    return text


def to_markdown(table: Table) -> str:
    header = ["Method", "seeds", *table.columns]
    lines = [f"**{table.title}**", "", "| " + " | ".join(header) + " |", "|:---|---:|" + "---:|" * len(table.columns)]
    for k, row in enumerate(table.rows):
        cells = []
        for column in table.columns:
            text = format_stat(row.cells.get(column, Stat(None)), table.decimals, signed=row.kind == DIFF)
            rank = table.ranks(column).get(k)
            cells.append(f"**{text}**" if rank == 1 else f"<u>{text}</u>" if rank == 2 else text)
        seeds = str(row.seeds) if row.seeds else ""
        lines.append("| " + " | ".join([row.label.replace("|", r"\|"), seeds, *cells]) + " |")
    lines += [""] + [f"- {note}" for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"


_TEX_UNICODE = {"Δ": r"$\Delta$", "−": "$-$", "—": "--", "±": r"$\pm$", "–": "--"}


def tex(text: str) -> str:
    """LaTeX-escaped text with the few non-ASCII symbols the tables use spelled as TeX (pdflatex has no Δ)."""
    escaped = latex_escape(text)
    for symbol, replacement in _TEX_UNICODE.items():
        escaped = escaped.replace(symbol, replacement)
    return escaped


def to_latex(table: Table) -> str:
    """A ``table`` float around a booktabs ``tabular`` (needs only ``\\usepackage{booktabs}``; underlining is
    ``\\underline``). Published and difference rows are labelled in italics."""
    cols = "l" + "r" * (1 + len(table.columns))
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             f"\\caption{{{tex(table.title)}}}", f"\\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(["Method", "seeds", *(tex(c) for c in table.columns)]) + r" \\", r"\midrule"]
    for k, row in enumerate(table.rows):
        cells = []
        for column in table.columns:
            stat = row.cells.get(column, Stat(None))
            text = "--" if stat.mean is None else format_stat(stat, table.decimals, signed=row.kind == DIFF, pm=r"$\pm$")
            rank = table.ranks(column).get(k)
            cells.append(f"\\textbf{{{text}}}" if rank == 1 else f"\\underline{{{text}}}" if rank == 2 else text)
        label = tex(row.label)
        if row.kind != "run":
            label = f"\\textit{{{label}}}"
        lines.append(" & ".join([label, str(row.seeds) if row.seeds else "", *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    for note in table.notes:
        lines.append(f"\\par\\smallskip\\footnotesize {tex(note)}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Long form at full precision: one line per (row, column) cell, including empty ones (blank mean)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["table", "row", "kind", "source", "column", "mean", "std", "n", "runs"])
    for row in table.rows:
        for column in table.columns:
            stat = row.cells.get(column, Stat(None))
            writer.writerow([table.name, row.label, row.kind, row.source, column,
                             "" if stat.mean is None else repr(stat.mean), "" if stat.std is None else repr(stat.std),
                             stat.n, ";".join(stat.runs)])
    return buffer.getvalue()


def write_table_files(table: Table, out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [atomic_write_text(out_dir / f"{table.name}.md", to_markdown(table)),
            atomic_write_text(out_dir / f"{table.name}.tex", to_latex(table)),
            atomic_write_text(out_dir / f"{table.name}.csv", to_csv(table))]

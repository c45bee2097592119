"""``report.html``: one self-contained page (figures inlined as base64, no script, no network) with the tables, the
figures and, per group of seeds, every run's directory, resolved config, versions, device, split convention and
weight hash. Every harness number links to the runs behind it."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

from condu_bench.reporting.collect import Group, Stat
from condu_bench.reporting.paper_tables import DIFF, Table
from condu_bench.reporting.table_writers import format_stat

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1400px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{font-size:1.05em}
.scroll{overflow-x:auto}
table.results{border-collapse:collapse;font-size:.82em;margin:.4em 0 .2em}
table.results th,table.results td{padding:.2em .5em;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
table.results th:first-child,table.results td:first-child{text-align:left}
table.results thead th{border-bottom:2px solid #444}
tr.published td{color:#555;font-style:italic;background:#fafafa}tr.diff td{color:#777;font-size:.92em}
td.best{font-weight:bold}td.second{text-decoration:underline}td.empty{color:#bbb}
a{color:#1a5fb4}table.results a{color:inherit;text-decoration:none}table.results a:hover{color:#1a5fb4}
.notes{font-size:.8em;color:#555;margin:0 0 1em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
details{margin:.3em 0 .6em 1em}pre{background:#f6f6f6;padding:.6em;font-size:.78em;overflow-x:auto}
table.runs td{text-align:left}table.runs a{color:#1a5fb4}
"""


def _cell(stat: Stat, decimals: int, kind: str, rank: int | None, anchor_of: dict[str, str], source: str) -> str:
    text = html.escape(format_stat(stat, decimals, signed=kind == DIFF))
    classes = ["empty"] if stat.mean is None else []
    classes += ["best"] if rank == 1 else ["second"] if rank == 2 else []
    attr = f' class="{" ".join(classes)}"' if classes else ""
    if stat.mean is not None and stat.runs and stat.runs[0] in anchor_of:
        title = html.escape(f"n={stat.n}: " + ", ".join(stat.runs), quote=True)
        text = f'<a href="#{anchor_of[stat.runs[0]]}" title="{title}">{text}</a>'
    elif stat.mean is not None and source:
        text = f'<span title="{html.escape(source, quote=True)}">{text}</span>'
    return f"<td{attr}>{text}</td>"


def table_html(table: Table, anchor_of: dict[str, str]) -> str:
    ranks = {c: table.ranks(c) for c in table.columns}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["Method", "seeds", *table.columns])
    body = []
    for k, row in enumerate(table.rows):
        label = html.escape(row.label)
        if row.source and row.kind != "run":
            label += f' <small>({html.escape(row.source)})</small>'
        cells = "".join(_cell(row.cells.get(c, Stat(None)), table.decimals, row.kind, ranks[c].get(k), anchor_of, row.source)
                        for c in table.columns)
        body.append(f'<tr class="{row.kind}"><td>{label}</td><td>{row.seeds or ""}</td>{cells}</tr>')
    notes = "".join(f"<div>{html.escape(n)}</div>" for n in table.notes)
    return (f'<h3 id="t-{html.escape(table.name)}">{html.escape(table.title)}</h3><div class="scroll">'
            f'<table class="results" data-table="{html.escape(table.name)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div><div class="notes">{notes}</div>')


def figure_html(png: Path, caption: str) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption, quote=True)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _weight_hash(model: dict) -> str:
    if model.get("weights_sha256"):
        digest = str(model["weights_sha256"])
        return f'<span title="{html.escape(digest, quote=True)}">{html.escape(digest[:16])}…</span>'
    return "none (random init)" if model.get("pretrained") == "none" else "not recorded"


def _group_runs_html(group: Group, out_dir: Path) -> str:
    """One line per seed (directory link, seed, config hash, split convention, device, model, weight hash, wall time),
    the versions once when all seeds agree, and each run's resolved config folded."""
    head = ["directory", "seed", "config hash", "split convention", "device", "model", "weight sha256", "wall time (s)"]
    lines = []
    for run in group.runs:
        m, model = run.metrics, run.metrics.get("model") or {}
        link = Path(os.path.relpath(run.path, out_dir)).as_posix()
        cells = [f'<a href="{html.escape(link, quote=True)}/">{html.escape(str(run.path))}</a>',
                 *(html.escape(str(m.get(k, ""))) for k in ("seed", "config_hash", "split_convention", "device")),
                 html.escape(str(model.get("arch") or "")), _weight_hash(model), html.escape(str(m.get("wall_time_s", "")))]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = (f'<table class="results runs"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>'
             f'<tbody>{"".join(lines)}</tbody></table>')
    versions = {json.dumps(r.metrics.get("versions") or {}, sort_keys=True) for r in group.runs}
    version_text = "; ".join(
        ", ".join(f"{k} {v}" for k, v in json.loads(v).items()) or "not recorded" for v in sorted(versions))
    configs = "".join(
        f"<details><summary>resolved config, seed {html.escape(str(r.metrics.get('seed')))}</summary><pre>"
        f"{html.escape(json.dumps(r.config, indent=1, default=str) if r.config is not None else 'no config.yaml in this run')}"
        "</pre></details>" for r in group.runs)
    return f'<div class="scroll">{table}</div><div class="notes">versions: {html.escape(version_text)}</div>{configs}'


def render_report(title: str, sections: list[dict], groups: list[Group], anchor_of: dict[str, str], out_dir: Path) -> str:
    """``sections``: dicts with ``title``, ``tables`` (Table list) and ``figures`` ((png path, caption) list)."""
    toc = "".join(f'<li><a href="#s{k}">{html.escape(s["title"])}</a></li>' for k, s in enumerate(sections))
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             "<p>Harness numbers are means over seeds (± sample standard deviation when there is more than one seed); "
             "each links to its runs below. Published rows are italic, with their source; Δ = harness − paper. "
             "Bold = best in the column, underlined = second. — = no result.</p>",
             f"<ul>{toc}<li><a href=\"#runs\">Runs</a></li></ul>"]
    for k, section in enumerate(sections):
        parts.append(f'<h2 id="s{k}">{html.escape(section["title"])}</h2>')
        parts += [table_html(t, anchor_of) for t in section["tables"]]
        parts += [figure_html(png, caption) for png, caption in section["figures"]]
    parts.append('<h2 id="runs">Runs</h2>')
    for g in groups:
        anchor = anchor_of[str(g.runs[0].path)]
        parts.append(f'<h3 id="{anchor}">{html.escape(g.method)} on {html.escape(g.scenario)} '
                     f"<small>(config {html.escape(g.config_key or 'unknown')}, {len(g.runs)} seed(s))</small></h3>")
        parts.append(_group_runs_html(g, out_dir))
    parts.append("</body></html>")
    return "\n".join(parts)

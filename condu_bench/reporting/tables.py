"""Result tables built from ``metrics.json`` files only: leaderboards (mean ± std over seeds), per-dataset tables
in the papers' layout, "this run" next to published rows, and Markdown / LaTeX / CSV writers.

The writers are hand-rolled on purpose: ``tabulate`` is not a dependency and pandas' LaTeX output needs jinja2.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd

from condu_bench.atomic_io import atomic_write_text
from condu_bench.errors import UserError
from condu_bench.metrics import harmonic_mean

# Headline metrics of each protocol, in the order the papers print them.
PROTOCOL_METRICS: dict[str, tuple[str, ...]] = {
    "mtil": ("transfer", "avg", "last"),
    "base_to_novel": ("base", "novel", "hm"),
    "cross_dataset": ("source", "average"),
    "domain_generalisation": ("source", "average"),
}
# Per-dataset metric keys (``per_dataset[name][key]``) of each protocol.
PER_DATASET_METRICS: dict[str, tuple[str, ...]] = {
    "mtil": ("transfer", "avg", "last"),
    "base_to_novel": ("base", "novel", "hm"),
    "cross_dataset": ("accuracy",),
    "domain_generalisation": ("accuracy",),
}

# Run method (registry name) -> the names the published tables use for it, first match wins.
# Names that already agree after normalisation (lower case, punctuation dropped, "*" -> "star") need no entry,
# but listing them keeps the table readable as documentation.
METHOD_ALIASES: dict[str, tuple[str, ...]] = {
    "zeroshot": ("Zero-shot", "CLIP"),
    "finetune": ("Continual-FT",),
    "lwf": ("LwF",),
    "lwf_vr": ("LwF-VR",),
    "icarl": ("iCaRL",),
    "wise_ft": ("WiSE-FT",),
    "zscl": ("ZSCL",),
    "zscl_star": ("ZSCL*",),
    "moe_adapters": ("MoE-Adapters",),
    "diki": ("DIKI",),
    "condu": ("ConDU (FT)",),
    "condu_ft": ("ConDU (FT)",),
    "condu_lora": ("ConDU (LoRA)",),
    "coop": ("CoOp",),
    "cocoop": ("CoCoOp",),
    "kgcoop": ("KgCoOp",),
    "maple": ("MaPLe",),
    "clipfit": ("CLIPFit",),
    "coop_mergetune": ("CoOp+MergeTune",),
    "kgcoop_mergetune": ("KgCoOp+MergeTune",),
}

# Scenario names are matched word by word (``mtil_orderII_fewshot`` -> mtil, orderii, fewshot), never by substring:
# "orderi" is part of "orderii". A name with any NOT_PUBLISHED word has no published table.
NOT_PUBLISHED: tuple[str, ...] = ("synthetic", "custom", "agnostic", "coopsplits")
WORD_ALIASES: dict[str, str] = {"order1": "orderi", "order2": "orderii"}
# (protocol, words the scenario name must all contain, published file or None); first match wins.
PUBLISHED_TABLES: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("mtil", ("fewshot", "orderi"), "mtil_fewshot.csv"),  # few-shot MTIL was published for order I only,
    ("mtil", ("fewshot",), None),  # so few-shot order II is never shown beside a full-data table
    ("mtil", ("orderii",), "mtil_order2.csv"),
    ("mtil", ("orderi",), "mtil_order1.csv"),
    ("base_to_novel", (), "b2n_average.csv"),
)
PUBLISHED_PER_DATASET: dict[str, str] = {"mtil_order1.csv": "mtil_order1_per_dataset.csv",
                                         "b2n_average.csv": "b2n_hm_per_dataset.csv"}

THIS_RUN = "this run"


class ResultsError(UserError, ValueError):
    """A missing or malformed result file (ValueError; UserError so the CLI prints the message)."""


def normalise_name(name: str) -> str:
    """Case/punctuation-insensitive key: ``ZSCL*`` -> ``zsclstar``, ``ConDU (FT)`` -> ``conduft``."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower().replace("*", "star"))


def match_method(run_method: str, paper_methods: Iterable[str]) -> str | None:
    """The published method name that a run's method corresponds to, or None."""
    by_key = {normalise_name(p): p for p in paper_methods}
    aliases = {normalise_name(k): v for k, v in METHOD_ALIASES.items()}
    key = normalise_name(run_method)
    for candidate in (*aliases.get(key, ()), run_method):
        if normalise_name(candidate) in by_key:
            return by_key[normalise_name(candidate)]
    return None


# ---------------------------------------------------------------- collecting results

def results_frame(metrics_dicts: Sequence[Mapping], paths: Sequence | None = None) -> pd.DataFrame:
    """One row per run from parsed ``metrics.json`` dicts; nested values (per_dataset, datasets) stay objects."""
    rows = []
    for k, d in enumerate(metrics_dicts):
        where = f" ({paths[k]})" if paths is not None else ""
        for key in ("protocol", "method"):
            if key not in d:
                raise ResultsError(f"metrics{where} has no {key!r} key")
        if d["protocol"] not in PROTOCOL_METRICS:
            raise ResultsError(f"metrics{where}: unknown protocol {d['protocol']!r} (known: {', '.join(PROTOCOL_METRICS)})")
        row = {"scenario": "", "seed": None, **d}
        if paths is not None:
            row["path"] = str(paths[k])
        rows.append(row)
    df = pd.DataFrame(rows)
    for metric in {m for ms in PROTOCOL_METRICS.values() for m in ms} & set(df.columns):
        df[metric] = pd.to_numeric(df[metric], errors="coerce")  # None (e.g. transfer with T = 1) -> NaN
    return df


def collect_results(root) -> pd.DataFrame:
    """Every ``metrics.json`` under ``root`` (recursively), one row per run, sorted by path for stable output."""
    root = Path(root)
    if not root.is_dir():
        raise ResultsError(f"results directory {root} does not exist")
    paths = sorted(root.rglob("metrics.json"))
    dicts = []
    for p in paths:
        try:
            dicts.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ResultsError(f"cannot read result file {p}: {e}") from e
    if not dicts:
        return pd.DataFrame(columns=["scenario", "protocol", "method", "seed", "path"])
    return results_frame(dicts, paths)


def leaderboard(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Mean over seeds per (scenario, method, split convention); ``<metric>_std`` columns (sample std, ddof=1)
    when some method has more than one seed. Base-to-novel HM is the HM of the seed-averaged base and novel
    (the papers' rule), its std the std of per-seed HMs."""
    if protocol not in PROTOCOL_METRICS:
        raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOL_METRICS)})")
    metrics = PROTOCOL_METRICS[protocol]
    sub = df[df["protocol"] == protocol] if "protocol" in df else df.iloc[0:0]
    keys = [k for k in ("scenario", "method", "split_convention") if k in sub.columns]
    sub = sub.assign(**{k: sub[k].fillna("") for k in keys})
    rows = []
    for group_key, g in sub.groupby(keys, sort=False):  # keep the order runs were given in
        row = dict(zip(keys, group_key))
        row["n_seeds"] = len(g)
        for m in metrics:
            values = g[m].astype(float) if m in g else pd.Series([np.nan] * len(g))
            row[m] = values.mean()  # skips NaN (a T = 1 MTIL run has no transfer)
            row[f"{m}_std"] = values.std(ddof=1) if len(g) > 1 else np.nan
        if protocol == "base_to_novel" and not (math.isnan(row["base"]) or math.isnan(row["novel"])):
            row["hm"] = harmonic_mean(row["base"], row["novel"])
        rows.append(row)
    out = pd.DataFrame(rows, columns=[*keys, "n_seeds", *(c for m in metrics for c in (m, f"{m}_std"))])
    if out.empty or out["n_seeds"].max() <= 1:
        out = out.drop(columns=[f"{m}_std" for m in metrics])
    if "split_convention" in out and (out["split_convention"] == "").all():
        out = out.drop(columns=["split_convention"])
    return out.reset_index(drop=True)


# ---------------------------------------------------------------- paper layouts

def _protocol_of_columns(columns: Iterable[str]) -> str:
    cols = set(columns)
    for protocol, metrics in PROTOCOL_METRICS.items():
        if set(metrics) <= cols:
            return protocol
    raise ValueError(f"cannot tell the protocol from columns {sorted(cols)}")


def paper_table(df: pd.DataFrame, published_csv) -> pd.DataFrame:
    """Published rows (file order) with each matching "this run" row right after its paper row.

    ``df`` is a leaderboard or raw collected results (then averaged over seeds here). Matched runs take the
    paper's method name; unmatched runs are appended under their own name. Column ``source`` tells them apart.
    """
    published = pd.read_csv(published_csv)
    protocol = _protocol_of_columns(published.columns)
    metrics = list(PROTOCOL_METRICS[protocol])
    if "seed" in df.columns:
        df = leaderboard(df, protocol)
    ours = {}
    for _, r in df.iterrows():
        ours.setdefault(match_method(r["method"], published["method"]) or r["method"], []).append(r)
    rows = []
    for _, p in published.iterrows():
        rows.append({"method": p["method"], **{m: p[m] for m in metrics}, "source": p.get("source", "published")})
        for r in ours.pop(p["method"], []):
            rows.append({"method": p["method"], **{m: r.get(m, np.nan) for m in metrics}, "source": THIS_RUN})
    for name, runs in ours.items():
        rows.extend({"method": name, **{m: r.get(m, np.nan) for m in metrics}, "source": THIS_RUN} for r in runs)
    return pd.DataFrame(rows, columns=["method", *metrics, "source"])


def per_dataset_table(metrics_json_dicts: Sequence[Mapping], metric: str, published_csv=None) -> pd.DataFrame:
    """Rows = methods (seeds averaged), columns = datasets in training order + ``average``.

    ``average`` is the run's headline number (e.g. MTIL Transfer excludes the first dataset; B2N HM is the HM
    of averaged base/novel), not a re-average of the cells. With ``published_csv`` (a per-dataset file from
    results/published) the published rows for this metric are appended, columns matched by normalised name.
    """
    datasets: list[str] = []
    by_method: dict[str, list[Mapping]] = {}
    for d in metrics_json_dicts:
        for name in list(d.get("datasets") or []) + list(d.get("per_dataset", {})):
            if name not in datasets:
                datasets.append(name)
        by_method.setdefault(d["method"], []).append(d)

    def cell(runs, name, key):
        vals = [r.get("per_dataset", {}).get(name, {}).get(key) for r in runs]
        vals = [float(v) for v in vals if v is not None]
        return float(np.mean(vals)) if vals else np.nan

    rows = []
    for method, runs in by_method.items():
        row = {"method": method}
        for name in datasets:
            if metric == "hm" and not math.isnan(cell(runs, name, "base")):
                row[name] = harmonic_mean(cell(runs, name, "base"), cell(runs, name, "novel"))
            else:
                row[name] = cell(runs, name, metric)
        top = "average" if metric == "accuracy" else metric
        tops = [float(r[top]) for r in runs if r.get(top) is not None]
        if metric == "hm" and all(r.get("base") is not None for r in runs):
            row["average"] = harmonic_mean(np.mean([r["base"] for r in runs]), np.mean([r["novel"] for r in runs]))
        else:
            row["average"] = float(np.mean(tops)) if tops else float(np.nanmean([row[n] for n in datasets] or [np.nan]))
        rows.append(row)
    out = pd.DataFrame(rows, columns=["method", *datasets, "average"])
    if published_csv is not None:
        out = _with_published_per_dataset(out, datasets, metric, published_csv)
    return out


def _with_published_per_dataset(out: pd.DataFrame, datasets: list[str], metric: str, published_csv) -> pd.DataFrame:
    pub = pd.read_csv(published_csv)
    if "metric" in pub:  # MTIL file: one row per (method, metric); "all" = zero-shot, every metric equal
        pub = pub[pub["metric"].isin([metric, "all"])]
    elif metric != "hm":  # the B2N per-dataset file holds HM only
        return out
    col_of = {normalise_name(c): c for c in pub.columns}
    mapping = {name: col_of.get(normalise_name(name)) for name in datasets}
    if not any(mapping.values()):
        return out  # no dataset in common (e.g. a synthetic scenario): nothing to compare
    # run rows take the paper's method name so that "this run" and published rows line up
    out = out.assign(method=[match_method(m, pub["method"]) or m for m in out["method"]], source=THIS_RUN)
    rows = []
    for _, p in pub.iterrows():
        row = {"method": p["method"], "source": p.get("source", "published")}
        row.update({name: (p[c] if c else np.nan) for name, c in mapping.items()})
        if "average" in pub:  # the paper's own average (over all its datasets, even if the run has fewer)
            row["average"] = p["average"]
        else:  # unweighted mean of the cells; MTIL Transfer has no entry for the first dataset
            cells = [row[n] for n in (datasets[1:] if metric == "transfer" else datasets)]
            row["average"] = float(np.nanmean(cells)) if not all(pd.isna(cells)) else np.nan
        rows.append(row)
    return pd.concat([pd.DataFrame(rows, columns=out.columns), out], ignore_index=True)


def published_csv_for(scenario: str, protocol: str, published_dir) -> Path | None:
    """The published table a scenario should be shown next to (see PUBLISHED_TABLES), if any."""
    words = {WORD_ALIASES.get(w, w) for w in re.split(r"[^0-9a-z]+", str(scenario).lower()) if w}
    if words & set(NOT_PUBLISHED):
        return None  # the synthetic world, custom orders, other splits: no paper measured these
    for proto, required, filename in PUBLISHED_TABLES:
        if proto == protocol and words.issuperset(required):
            path = Path(published_dir) / filename if filename else None
            return path if path is not None and path.is_file() else None
    return None


# ---------------------------------------------------------------- writers

def _fmt(value, decimals: int) -> str:
    if value is None or (not isinstance(value, (str, list, dict, tuple)) and pd.isna(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, Real):
        return str(value)
    if isinstance(value, Integral):
        return str(int(value))
    return f"{float(value):.{decimals}f}"


def _cells(df: pd.DataFrame, decimals: int) -> list[list[str]]:
    return [[_fmt(v, decimals) for v in row] for row in df.itertuples(index=False, name=None)]


def to_markdown(df: pd.DataFrame, decimals: int = 2) -> str:
    """GitHub Markdown table; numeric columns right-aligned, missing values as ``-``."""
    def esc(s: str) -> str:
        return s.replace("|", r"\|")

    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    lines = ["| " + " | ".join(esc(str(c)) for c in df.columns) + " |",
             "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in _cells(df, decimals)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(df: pd.DataFrame, decimals: int = 2) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``); numeric columns right-aligned."""
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns)
    lines = [f"\\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in _cells(df, decimals)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(df: pd.DataFrame, path) -> Path:
    """Full-precision CSV (no rounding: CSV is for machines; rounding happens in the Markdown/LaTeX views)."""
    return atomic_write_text(path, df.to_csv(index=False))


def write_table(df: pd.DataFrame, stem, formats: Sequence[str], decimals: int = 2) -> list[Path]:
    """Write ``stem.<fmt>`` for each of md / csv / tex; returns the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        if fmt == "md":
            atomic_write_text(path, to_markdown(df, decimals))
        elif fmt == "tex":
            atomic_write_text(path, to_latex(df, decimals))
        elif fmt == "csv":
            to_csv(df, path)
        else:
            raise ValueError(f"unknown table format {fmt!r} (known: md, csv, tex)")
        written.append(path)
    return written


def protocol_decimals(protocol: str) -> int:
    return 1 if protocol == "mtil" else 2  # as the published MTIL (1 dp) and B2N (2 dp) tables print them


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(text)).strip("_") or "results"


def build_tables(results_root, out_dir, formats: Sequence[str] = ("md", "csv", "tex"), published_dir=None) -> list[Path]:
    """Per (scenario, protocol): ``leaderboard_<scenario>``, ``per_dataset_<scenario>_<metric>`` and, with
    ``published_dir``, ``paper_<scenario>`` (+ published per-dataset rows) in each format. Returns the paths."""
    df = collect_results(results_root)
    if df.empty:
        raise ResultsError(f"no metrics.json files under {results_root}")
    out_dir = Path(out_dir)
    written: list[Path] = []
    for (scenario, protocol), sub in df.groupby(["scenario", "protocol"], sort=True):
        stem, dec = _slug(scenario), protocol_decimals(protocol)
        written += write_table(leaderboard(sub, protocol), out_dir / f"leaderboard_{stem}", formats, dec)
        published = published_csv_for(scenario, protocol, published_dir) if published_dir else None
        per_pub = None
        if published is not None:
            written += write_table(paper_table(sub, published), out_dir / f"paper_{stem}", formats, dec)
            candidate = published.with_name(PUBLISHED_PER_DATASET.get(published.name, ""))
            per_pub = candidate if candidate.is_file() and candidate != published else None
        dicts = [json.loads(Path(p).read_text()) for p in sub["path"]]
        for metric in PER_DATASET_METRICS[protocol]:
            table = per_dataset_table(dicts, metric, per_pub)
            written += write_table(table, out_dir / f"per_dataset_{stem}_{metric}", formats, dec)
    return written

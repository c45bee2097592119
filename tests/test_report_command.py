"""`condu-bench report` and `condu-bench tables --paper` from hand-made result directories (no training): the files,
the self-contained report.html (also rendered by a real headless Chromium), the LaTeX, the fill-in commands."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_fixtures import small_matrix, write_b2n_run, write_mtil_run, zscl_matrix

from condu_bench.cli import main
from condu_bench.reporting.report_plots import method_colour

PDF_MAGIC, PNG_MAGIC = b"%PDF", b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for file, method in (("zscl", "zscl"), ("lwf", "lwf")):
        values, names = zscl_matrix(file)
        for seed, offset in ((0, -0.5), (1, 0.5)):
            write_mtil_run(root / "order1", "mtil_orderI", method, seed, values + offset, names)
    for seed in (0, 1, 2):
        write_mtil_run(root / "synthetic", "synthetic_mtil", "finetune", seed, small_matrix(seed - 1.0), ["a", "b", "c"])
    write_b2n_run(root / "b2n", "coop", 1, {"DTD": (80.0, 40.0), "EuroSAT": (90.0, 60.0)})
    write_b2n_run(root / "b2n", "coop", 2, {"DTD": (82.0, 42.0), "EuroSAT": (92.0, 62.0)})
    return root


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(runs / "order1"), str(runs / "synthetic"), str(runs / "b2n"), "--out", str(out)]) == 0
    return out


def test_report_writes_tables_figures_and_html(report):
    tables = {p.name for p in (report / "tables").iterdir()}
    for stem in ("mtil_mtil_orderI_transfer", "mtil_synthetic_mtil_last", "b2n_base_to_novel", "cost_mtil_orderI",
                 "beyond_synthetic_mtil", "ranking_synthetic_mtil"):
        assert {f"{stem}.md", f"{stem}.tex", f"{stem}.csv"} <= tables
    for stem in ("mtil_orderI_stream", "mtil_orderI_bars", "synthetic_mtil_bars", "base_to_novel_base_novel"):
        assert (report / "figures" / f"{stem}.png").read_bytes().startswith(PNG_MAGIC)
        assert (report / "figures" / f"{stem}.pdf").read_bytes().startswith(PDF_MAGIC)
    last = (report / "tables" / "mtil_mtil_orderI_last.md").read_text()
    zscl = next(line for line in last.splitlines() if line.startswith("| zscl | 2 |"))
    assert "**83.6 ± 0.7**" in zscl  # released matrices ± 0.5 over two seeds: mean = published, std = 0.71
    assert "| ZSCL (published) |  |" in last


def test_report_html_is_self_contained_and_links_numbers_to_runs(report, runs):
    page = (report / "report.html").read_text()
    assert not re.search(r"(src|href)=\"https?:", page)  # nothing fetched from the network
    assert page.count("data:image/png;base64,") == 5
    assert page.count('<table class="results"') == 13  # 12 + the synthetic leaderboard's ranking against order I
    # a harness number links to its group of runs, whose section names every run directory with its record
    anchor = re.search(r'<td class="best"><a href="#(g\d+)" title="n=2: ([^"]+)">83.6 ± 0.7</a>', page)
    assert anchor is not None
    group = page[page.index(f'id="{anchor.group(1)}"'):]
    assert str(runs / "order1" / "zscl" / "seed0") in group[:4000] and "ab" * 32 in group[:4000]
    for field in ("split convention", "device", "versions", "resolved config"):
        assert field in group[:4000]


def test_method_colour_is_fixed():
    assert method_colour("zscl") == method_colour("zscl") != method_colour("lwf")
    assert method_colour("someone_elses_method") == method_colour("someone_elses_method")


def test_report_renders_in_a_headless_browser(report, tmp_path):
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless browser: the `chromium` binary is not on PATH (apt-get install chromium)")
    url = (report / "report.html").resolve().as_uri()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    assert dom.count('<table class="results"') == 13 and "ZSCL (published)" in dom and "83.6 ± 0.7" in dom
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1400,2000", f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 50_000  # a page, not a blank image


def test_tables_paper_leaves_empty_rows_and_prints_commands(runs, tmp_path, capsys):
    assert main(["tables", "--paper", "zscl", str(runs), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| icarl |  | — | — |" in out  # no iCaRL run: an empty row, shown
    assert "| iCaRL (published) |" in out
    assert f"condu-bench run mtil_order1 data_root=DATA methods=icarl --out {runs / 'mtil_order1'}" in out
    assert "methods=zscl " not in out  # zscl has runs: no command for it
    assert (tmp_path / "mtil_mtil_orderI_avg.tex").is_file()
    assert main(["tables", "--paper", "mergetune", str(runs), "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "methods=mergetune method_options.mergetune.base=kgcoop" in out
    assert main(["tables", "--paper", "zcsl", str(runs)]) == 2
    assert "did you mean 'zscl'" in capsys.readouterr().err


def _latex_environments_balanced(text: str) -> None:
    stack = []
    for kind, name in re.findall(r"\\(begin|end)\{([^}]*)\}", text):
        if kind == "begin":
            stack.append(name)
        else:
            assert stack and stack.pop() == name, f"\\end{{{name}}} without its \\begin"
    assert not stack, f"unclosed environments {stack}"
    body = re.sub(r"\\[{}]", "", text)
    assert body.count("{") == body.count("}")


def test_latex_is_balanced_and_compiles(report, tmp_path):
    tex_files = sorted((report / "tables").glob("*.tex"))
    for path in tex_files:
        _latex_environments_balanced(path.read_text())
    assert r"\textbf{83.6$\pm$0.7}" in (report / "tables" / "mtil_mtil_orderI_last.tex").read_text()
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended); parsed only")
    doc = tmp_path / "all.tex"
    inputs = "\n".join(f"\\input{{{p.as_posix()}}}\\clearpage" for p in tex_files)
    doc.write_text("\\documentclass{article}\n\\usepackage[utf8]{inputenc}\n\\usepackage{booktabs}\n"
                   "\\usepackage[margin=1cm,landscape]{geometry}\n\\begin{document}\n" + inputs + "\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "all.pdf").read_bytes().startswith(PDF_MAGIC)


def test_report_without_runs_or_published(tmp_path, runs, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no finished runs (metrics.json) below" in capsys.readouterr().err
    assert main(["report", str(runs / "b2n"), "--out", str(tmp_path / "r"), "--no-published"]) == 0
    table = (tmp_path / "r" / "tables" / "b2n_base_to_novel.md").read_text()
    assert "(published)" not in table and "| coop | 2 |" in table

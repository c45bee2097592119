"""A regular (non-editable) install carries everything a benchmark run needs.

The wheel is built from a copy of the checkout, installed into a fresh virtual environment (which sees the
system's torch etc. but whose own site-packages wins over any editable install of the checkout), and its
``condu-bench`` command runs from a directory outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_listed_in_pyproject():
    """``packages`` is an explicit list (find cannot see the mapped folders): a folder holding .py files under
    any package-dir mapping must be listed, or the wheel silently lacks it."""
    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools_cfg["packages"])
    mapping = setuptools_cfg["package-dir"]
    found = set()
    for name, folder in mapping.items():
        base = ROOT / folder
        assert (base / "__init__.py").is_file(), f"{folder}/ (mapped to {name}) needs an __init__.py"
        for directory in [base, *(p for p in base.rglob("*") if p.is_dir())]:
            if "__pycache__" in directory.parts or not any(directory.glob("*.py")):
                continue
            relative = directory.relative_to(base).parts
            if relative and ".".join([name, relative[0]]) in mapping:
                continue  # a mapped subpackage is installed from its own folder
            found.add(".".join([name, *relative]))
    assert found - listed == set(), "add these to `packages` in pyproject.toml"
    assert listed - found == set(), "listed in `packages` but not found in the source tree"
    assert set(mapping) <= listed


def _copy_ignore(directory: str, names: list[str]) -> set[str]:
    skip = set(shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache", "build", "dist",
                                      ".venv")(directory, names))
    if Path(directory) == ROOT / "results":
        skip |= {n for n in names if n != "published"}  # run outputs
    return skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the checkout (building in place would write build/ and *.egg-info there)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=_copy_ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(tmp / "dist"), str(source)], check=True, env=_clean_env(), timeout=300)
    (built,) = (tmp / "dist").glob("condu_bench-*.whl")
    return built


def _clean_env() -> dict[str, str]:
    """The environment without anything that would put the checkout on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def test_wheel_contains_benchmarks_published_numbers_and_baselines(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"condu_bench/benchmarks/{p.name}" for p in (ROOT / "benchmarks").glob("*.yaml")}
    expected |= {f"condu_bench/benchmarks/sweeps/{p.name}" for p in (ROOT / "benchmarks" / "sweeps").glob("*.yaml")}
    published = ROOT / "results" / "published"
    expected |= {f"condu_bench/published/{p.relative_to(published).as_posix()}"
                 for p in published.rglob("*") if p.suffix in (".csv", ".md")}
    expected |= {f"condu_bench/baselines/{p.name}" for p in (ROOT / "baselines").glob("*.py")}
    assert any(n.endswith("zscl_matrices/order1_zscl.csv") for n in expected)  # the walk found the subfolder
    assert expected - names == set(), "missing from the wheel"
    assert not [n for n in names if n.split("/")[0] in ("benchmarks", "baselines", "results")], "top-level folders"


def test_wheel_install_runs_a_benchmark_outside_the_checkout(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    # --system-site-packages: torch and the other dependencies (and pip) come from the system
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env_dir)], check=True)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    env = _clean_env()
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args, timeout=120):
        return subprocess.run([*map(str, args)], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)

    # --ignore-installed: an editable install of condu-bench in the system site-packages stays as it is
    done = run(python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel)
    assert done.returncode == 0, done.stderr

    listed = run(bindir / "condu-bench", "ls", "benchmarks")
    assert listed.returncode == 0, listed.stderr
    names = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    assert {p.stem for p in (ROOT / "benchmarks").glob("*.yaml")} <= names

    where = run(python, "-c",
                "import sysconfig, condu_bench, condu_bench.baselines, condu_bench.resources as r\n"
                "print(sysconfig.get_paths()['purelib'])\n"
                "for f in (condu_bench.__file__, condu_bench.baselines.__file__, r.benchmarks_dir(), r.published_dir()):\n"
                "    print(f)\n"
                "assert (r.published_dir() / 'zscl_matrices' / 'order1_zscl.csv').is_file()\n")
    assert where.returncode == 0, where.stderr
    site, *paths = where.stdout.split("\n")[:5]
    site = Path(site).resolve()
    for path in paths:  # the wheel's copy, not the checkout nor an editable install of it
        assert Path(path).resolve().is_relative_to(site), (path, site)

    out = tmp_path / "out"
    ran = run(bindir / "condu-bench", "run", "methods=zeroshot", "model.arch=condu-micro-vit", "model.pretrained=none",
              "scenario.options.order=shapes,colours", "scenario.options.n_train_per_class=4",
              "scenario.options.n_test_per_class=4", "progress=false", "--out", out, timeout=300)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    metrics = json.loads((out / "zeroshot" / "seed0" / "metrics.json").read_text())
    assert metrics["method"] == "zeroshot" and metrics["scenario"] == "synthetic_mtil"

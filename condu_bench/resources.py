"""The data files shipped with the package: benchmark YAML files and the published numbers.

In the repository they live in the top-level ``benchmarks/`` and ``results/published/`` folders; an install maps
them to the packages ``condu_bench.benchmarks`` and ``condu_bench.published`` (``package-dir`` in pyproject.toml),
so an installed package reads them through ``importlib.resources`` and the files exist only once in git.
A source checkout (``pyproject.toml`` next to the package, e.g. ``PYTHONPATH=checkout``) reads its own folders,
never those of another checkout that an editable install points to.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from condu_bench.errors import UserError

_SOURCE_ROOT = Path(__file__).resolve().parents[1]
_FOLDERS = {"condu_bench.benchmarks": "benchmarks", "condu_bench.published": "results/published"}


def _data_dir(package: str) -> Path:
    source = _SOURCE_ROOT / _FOLDERS[package]
    if (_SOURCE_ROOT / "pyproject.toml").is_file() and source.is_dir():
        return source
    try:
        found = resources.files(package)
    except ModuleNotFoundError:
        raise UserError(f"the package data {package} is not installed (and {source} does not exist); "
                        f"reinstall condu-bench") from None
    if not isinstance(found, Path):  # setuptools installs regular files; a zipped install would land here
        raise UserError(f"{package} is not a folder on disk ({found}); install condu-bench unzipped")
    return found


def benchmarks_dir() -> Path:
    """The folder of the benchmark YAML files (``benchmarks/`` in the repository)."""
    return _data_dir("condu_bench.benchmarks")


def benchmark_files() -> list[Path]:
    """Every benchmark file, sorted by name."""
    return sorted(benchmarks_dir().glob("*.yaml"))


def benchmark_path(name: str) -> Path | None:
    """The benchmark file called ``name`` (``mtil_order1`` -> .../mtil_order1.yaml), or None."""
    path = benchmarks_dir() / f"{name}.yaml"
    return path if path.is_file() else None


def published_dir() -> Path:
    """The folder of the published numbers (``results/published/`` in the repository)."""
    return _data_dir("condu_bench.published")

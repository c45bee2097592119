"""CI runs every test, the slow embedded-world ones included."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_whole_suite_including_slow_tests():
    commands = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines() if line.strip().startswith("python")]
    assert commands == ["python -m pytest -q"]  # no -m / -k selection that would drop the slow tests
    pytest_options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "slow" not in str(pytest_options.get("addopts", ""))
    assert any(m.startswith("slow:") for m in pytest_options["markers"])


def test_the_embedded_default_tests_are_marked_slow():
    import test_embedded_default

    assert test_embedded_default.pytestmark.name == "slow"

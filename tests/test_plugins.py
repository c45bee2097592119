"""Plugins from the command line (--plugin, repeatable) and from benchmark files (plugins:), imported before the
registry is read; a plugin that fails to import is one clear error naming it."""

from __future__ import annotations

import sys

import pytest

from condu_bench.cli import main
from condu_bench.config import load_config
from condu_bench.errors import UserError
from condu_bench.plugins import import_plugin
from condu_bench.registries import METHODS

PLUGIN = '''
from condu_bench.method import BaseMethod
from condu_bench.registries import METHODS


@METHODS.register("{name}", "a test plugin")
class Plugged(BaseMethod):
    name = "{name}"
'''


@pytest.fixture
def plugin_file(tmp_path):
    names = []

    def make(name: str, folder=tmp_path):
        path = folder / f"{name}.py"
        path.write_text(PLUGIN.format(name=name))
        names.append(name)
        return path

    yield make
    for name in names:
        METHODS._entries.pop(name, None)
        sys.modules.pop(f"condu_bench_plugin_{name}", None)
        sys.modules.pop(name, None)


def test_run_plugin_flags_are_imported_before_the_config(plugin_file, tmp_path, monkeypatch, capsys):
    first, second = plugin_file("plug_one"), plugin_file("plug_two")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = {}

    def fake_run(config, out, force=False):
        seen["methods"] = config.methods
        return []

    monkeypatch.setattr("condu_bench.experiment.run_experiment", fake_run)
    # one plugin as a .py path, one as a module name; the run names both methods
    code = main(["run", "--plugin", str(first), "--plugin", "plug_two", "methods=plug_one,plug_two", "--out", str(tmp_path / "o")])
    assert code == 0 and seen["methods"] == ["plug_one", "plug_two"]
    assert METHODS.get("plug_one").__name__ == "Plugged"


def test_benchmark_file_plugins_key(plugin_file, tmp_path):
    plugin_file("plug_three")
    bench = tmp_path / "bench.yaml"
    bench.write_text("plugins: [plug_three.py]\nmethods: [zeroshot, plug_three]\n")
    config = load_config(bench)
    assert config.methods == ["zeroshot", "plug_three"] and "plug_three" in METHODS
    assert not hasattr(config, "plugins")  # imported, not part of the resolved config (config hashes stay as they were)


def test_a_broken_plugin_is_one_error_naming_it(tmp_path, capsys):
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("import not_a_module_anywhere\n")
    assert main(["run", "--plugin", str(broken), "methods=zeroshot"]) == 2
    err = capsys.readouterr().err
    assert f"plugin {str(broken)!r} could not be imported" in err and "not_a_module_anywhere" in err
    assert err.count("\n") == 1  # one line, no traceback
    with pytest.raises(UserError, match="plugin 'no_such_plugin_pkg.mod' could not be imported: ModuleNotFoundError"):
        import_plugin("no_such_plugin_pkg.mod")
    bench = tmp_path / "b.yaml"
    bench.write_text("plugins: [missing.py]\n")
    with pytest.raises(UserError, match="plugin 'missing.py' could not be imported: FileNotFoundError"):
        load_config(bench)
    bench.write_text("plugins: one.py\n")
    with pytest.raises(UserError, match="`plugins` must be a list"):
        load_config(bench)


def test_readme_plugin_command_runs(tmp_path, monkeypatch):
    """The README's `condu-bench run --plugin ...` line, with the README's own plugin file, reaches the experiment."""
    import re
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = re.search(r"`(condu-bench run --plugin my_methods\.l2_anchor [^`]*)`", readme).group(1)
    source = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if b.startswith("# my_methods/l2_anchor.py"))
    (tmp_path / "my_methods").mkdir()
    (tmp_path / "my_methods" / "__init__.py").write_text("")
    (tmp_path / "my_methods" / "l2_anchor.py").write_text(source)
    monkeypatch.chdir(tmp_path)  # "from the folder that holds my_methods/"
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    seen = {}
    monkeypatch.setattr("condu_bench.experiment.run_experiment", lambda config, out, force=False: seen.setdefault("m", config.methods) and [])
    try:
        assert main([*shlex.split(command)[1:], "--out", str(tmp_path / "out")]) == 0
        assert seen["m"] == ["zeroshot", "l2_anchor"]
    finally:
        METHODS._entries.pop("l2_anchor", None)
        for name in ("my_methods.l2_anchor", "my_methods"):
            sys.modules.pop(name, None)

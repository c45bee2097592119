import sys
from types import SimpleNamespace

import pytest

from condu_bench.errors import UnknownNameError, UserError
from condu_bench.registry import Registry


def test_lazy_entry_is_imported_only_on_get():
    reg = Registry("thing")
    reg.register_lazy("ordered", "collections:OrderedDict", "an ordered dict")
    assert reg.describe() == [("ordered", "an ordered dict")]
    assert not reg._entries["ordered"].loaded
    from collections import OrderedDict

    assert reg.get("ordered") is OrderedDict
    assert reg._entries["ordered"].loaded


def test_unknown_name_suggests_closest():
    reg = Registry("method")
    for name in ("finetune", "zeroshot", "wise_ft"):
        reg.register_lazy(name, "collections:OrderedDict")
    with pytest.raises(UnknownNameError) as info:
        reg.get("fintune")
    assert "did you mean 'finetune'" in str(info.value)
    assert "known methods: finetune, wise_ft, zeroshot" in str(info.value)
    assert isinstance(info.value, UserError)


def test_decorator_registration_and_duplicates():
    reg = Registry("method")

    @reg.register("mine", "my method")
    class Mine:
        pass

    assert reg.get("mine") is Mine
    with pytest.raises(ValueError, match="already registered"):

        @reg.register("mine")
        class Other:
            pass


def test_decorator_may_fill_its_own_lazy_entry():
    # Importing a lazily registered module runs its @register for the same name.
    reg = Registry("method")
    reg.register_lazy("x", "somewhere:X", "from the lazy table")

    @reg.register("x")
    class X:
        pass

    assert reg.get("x") is X
    assert reg.describe() == [("x", "from the lazy table")]


def test_unimportable_target_is_a_user_error():
    reg = Registry("method")
    reg.register_lazy("ghost", "no_such_module_xyz:Thing")
    with pytest.raises(UserError, match="cannot be imported"):
        reg.get("ghost")


def test_entry_points_extend_the_registry(monkeypatch):
    from importlib import metadata

    ep = SimpleNamespace(name="external", value="collections:Counter", dist=SimpleNamespace(name="plugin-pkg"))

    def fake_entry_points(group):
        return [ep] if group == "condu_bench.methods" else []

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    reg = Registry("method", "condu_bench.methods")
    assert "external" in reg.names()
    from collections import Counter

    assert reg.get("external") is Counter


def test_builtin_registries_list_without_importing_torch():
    import subprocess

    code = (
        "import sys; from condu_bench.registries import METHODS, SCENARIOS;"
        "names = METHODS.names() + SCENARIOS.names(); METHODS.describe();"
        "assert 'torch' not in sys.modules and 'avalanche' not in sys.modules, sorted(sys.modules);"
        "print(','.join(names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert {"zeroshot", "finetune", "wise_ft", "synthetic_mtil"} <= set(out.strip().split(","))


def imported_modules(path):
    """Every module a file imports, at the top or inside functions."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_dataset_catalog_does_not_import_the_registries_module():
    """registries -> catalog only: the catalog owns DATASETS, so it needs nothing from registries."""
    import subprocess
    from pathlib import Path

    import condu_bench.datasets.catalog as catalog
    import condu_bench.registries as registries

    assert "condu_bench.registries" not in imported_modules(Path(catalog.__file__))
    assert "condu_bench.datasets.catalog" in imported_modules(Path(registries.__file__))
    assert registries.DATASETS is catalog.DATASETS
    code = ("import sys, condu_bench.datasets.catalog as c; print(len(c.DATASETS.names()), c.get_spec('flowers').name, "
            "'condu_bench.registries' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["17", "Flowers102", "False"]


def test_get_spec_still_sees_datasets_registered_by_plugins():
    from condu_bench.datasets.catalog import get_spec
    from condu_bench.registries import DATASETS

    plugin_spec = SimpleNamespace(name="my_plugin_dataset")
    DATASETS.register("my_plugin_dataset", "a plugin's dataset")(plugin_spec)
    try:
        assert get_spec("my_plugin_dataset") is plugin_spec
    finally:
        DATASETS._entries.pop("my_plugin_dataset")

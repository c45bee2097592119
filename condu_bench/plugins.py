"""Plugins named on the command line (``condu-bench run --plugin my_methods.l2_anchor``) or in a benchmark file
(``plugins: [my_methods.l2_anchor, ./extra_method.py]``), imported before any name is looked up in the registries,
so that the methods they register with ``@METHODS.register`` can be used right away.

A plugin is a module name (found on ``sys.path`` or under the current directory) or a path to a ``.py`` file
(relative paths in a benchmark file are read from the file's directory)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from condu_bench.errors import UserError


def import_plugin(spec: str, base_dir: Path | None = None):
    """Import one plugin; any failure is one UserError naming the plugin and the cause."""
    spec = str(spec).strip()
    if not spec:
        raise UserError("empty plugin name: give a module name (my_methods.l2_anchor) or a path to a .py file")
    try:
        if spec.endswith(".py"):
            return _import_file(Path(spec) if base_dir is None or Path(spec).is_absolute() else base_dir / spec)
        if os.getcwd() not in sys.path:  # the console script's sys.path lacks the current directory, `python -m` has it
            sys.path.append(os.getcwd())
        return importlib.import_module(spec)
    except UserError:
        raise
    except Exception as exc:  # whatever the plugin's own code raises while it is imported
        raise UserError(f"plugin {spec!r} could not be imported: {type(exc).__name__}: {exc}. Give an importable module "
                        "name (its folder on PYTHONPATH or the current directory) or a path to a .py file") from exc


def _import_file(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"no such file {path}")
    name = f"condu_bench_plugin_{path.stem}"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path.resolve()):
        return sys.modules[name]  # imported already (a benchmark file and --plugin naming the same file)
    module_spec = importlib.util.spec_from_file_location(name, path.resolve())
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def import_plugins(specs: Iterable[str], base_dir: Path | None = None) -> list:
    return [import_plugin(s, base_dir) for s in specs]

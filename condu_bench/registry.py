"""Name -> object registries, shared by methods, scenarios and datasets.

Entries are registered as lazy ``"module:attr"`` strings so that listing them imports nothing heavy;
the object is imported on first :meth:`Registry.get`. Outside packages add entries through the
entry-point group ``condu_bench.<kind>s`` (e.g. ``condu_bench.methods``), whose values use the same
``"module:attr"`` form.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

from condu_bench.errors import UnknownNameError, UserError

T = TypeVar("T")


@dataclass
class Entry:
    name: str
    target: str | Any  # "module:attr" until loaded, then the object itself
    description: str = ""

    @property
    def loaded(self) -> bool:
        return not isinstance(self.target, str)


def import_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"registry target {target!r} is not of the form 'module:attr'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._entry_points_loaded = entry_point_group is None

    def register_lazy(self, name: str, target: str, description: str = "") -> None:
        self._add(Entry(name, target, description))

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator form: ``@METHODS.register("my-method", "one line")``."""

        def decorator(obj: T) -> T:
            self._add(Entry(name, obj, description or _first_doc_line(obj)), replace_lazy=True)
            return obj

        return decorator

    def _add(self, entry: Entry, replace_lazy: bool = False) -> None:
        existing = self._entries.get(entry.name)
        if existing is not None:
            # Importing a lazily registered module runs its decorator for the same name: that is fine.
            same_lazy_target = replace_lazy and isinstance(existing.target, str)
            if not same_lazy_target and existing.target is not entry.target:
                raise ValueError(f"{self.kind} {entry.name!r} is already registered")
            entry.description = entry.description or existing.description
        self._entries[entry.name] = entry

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name not in self._entries:
                self._entries[ep.name] = Entry(ep.name, ep.value, f"(from package {ep.dist.name if ep.dist else '?'})")

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def describe(self) -> list[tuple[str, str]]:
        """(name, one-line description) for every entry, without importing anything."""
        self._load_entry_points()
        return [(name, self._entries[name].description) for name in sorted(self._entries)]

    def get(self, name: str) -> T:
        self._load_entry_points()
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownNameError(self.kind, name, self._entries)
        if isinstance(entry.target, str):
            try:
                obj = import_target(entry.target)
            except (ImportError, AttributeError) as exc:
                raise UserError(f"{self.kind} {name!r} is registered as {entry.target!r}, which cannot be imported: {exc}") from exc
            entry.target = obj
            entry.description = entry.description or _first_doc_line(obj)
        return entry.target  # type: ignore[return-value]


def _first_doc_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""

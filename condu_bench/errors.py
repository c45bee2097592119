"""Errors a user can fix: the CLI prints their message and exits with status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input (unknown name, invalid config, missing data or weights) with a message saying how to fix it."""

    exit_code = 2


class UnknownNameError(UserError, KeyError):
    """A name that is not registered; the message suggests the closest registered names."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(unknown_name_message(kind, name, self.known))

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return self.args[0]


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; raised with the method, task and step that produced it."""


def closest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    known = list(known)
    lowered = {k.lower(): k for k in known}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'a' or 'b'?"`` for the known names closest to ``name``, or ``""`` when none is close."""
    suggestions = closest(name, known)
    return f"; did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    return f"unknown {kind} {name!r}{did_you_mean(name, known)} (known {kind}s: {', '.join(known) if known else 'none'})"

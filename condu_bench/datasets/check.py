"""``condu-bench data check``: is every dataset of a layout usable under a data root, and if not, why.

One :class:`CheckResult` per dataset: ``found`` (classes and images per split), ``missing`` (the exact path
expected and the official archive providing it), ``malformed`` (split files naming missing images, labels that
disagree, a class count other than the registry's, undecodable images when ``decode=True``) or
``unsupported`` (the dataset has no such layout). Only ``found`` is ``ok``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

EXAMPLES = 5


@dataclass
class CheckResult:
    dataset: str
    layout: str
    status: str  # found | missing | malformed | unsupported
    message: str
    path: str | None = None
    num_classes: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "found"


def check_datasets(root: str | Path, layout: str, names: list[str] | None = None, decode: bool = False) -> list[CheckResult]:
    """Check ``names`` (default: every built-in dataset that has ``layout``) under ``root``."""
    from condu_bench.datasets.catalog import SPECS, get_spec
    from condu_bench.datasets.spec import LAYOUTS

    from condu_bench.errors import UserError

    if layout not in LAYOUTS:
        raise UserError(f"unknown data layout {layout!r} (valid: {', '.join(LAYOUTS)})")
    specs = [get_spec(n) for n in names] if names else [s for s in SPECS if layout in s.layouts]
    return [check_one(spec, Path(root), layout, decode) for spec in specs]


def check_one(spec, root: Path, layout: str, decode: bool = False) -> CheckResult:
    from condu_bench.datasets.loading import load_listing
    from condu_bench.datasets.spec import DataLayoutError

    try:
        listing = load_listing(spec, root, layout)
    except DataLayoutError as exc:
        return CheckResult(spec.name, layout, exc.kind, str(exc), exc.path, problems=exc.problems)
    except PermissionError:
        raise  # the data root is not readable by this user: not a property of the dataset, so not a check result
    except (OSError, ValueError, KeyError) as exc:  # unreadable .mat / pickle / json contents
        return CheckResult(spec.name, layout, "malformed", f"{spec.name}: cannot read the files under {root}: {exc}")
    problems, where = [], []
    for split, ds in listing.splits.items():
        if not hasattr(ds, "missing_files"):
            continue  # in-memory arrays (CIFAR, MNIST)
        missing = ds.missing_files()
        if missing:
            source = listing.files.get(split, str(listing.folder))
            where.append(f"{len(missing)} {split} images named in {source} do not exist")
            problems += [str(ds.path(i)) for i in missing[:EXAMPLES]]
        if decode:
            bad = ds.unreadable()
            if bad:
                where.append(f"{len(bad)} {split} images cannot be decoded")
                problems += [reason for _, reason in bad[:EXAMPLES]]
    counts = listing.counts()
    if where:
        return CheckResult(spec.name, layout, "malformed", f"{spec.name}: {'; '.join(where)}, e.g. {', '.join(problems[:EXAMPLES])}",
                           str(listing.folder), len(listing.classnames), counts, problems[:2 * EXAMPLES], listing.notes)
    per_split = ", ".join(f"{k} {v}" for k, v in counts.items())
    return CheckResult(spec.name, layout, "found",
                       f"{spec.name}: found {listing.folder} — {len(listing.classnames)} classes; {per_split} images "
                       f"({listing.split_description})",
                       str(listing.folder), len(listing.classnames), counts, notes=listing.notes)


def format_check(results: list[CheckResult]) -> str:
    """One line per dataset (status first), then notes indented; a last line sums up."""
    lines = []
    for r in results:
        lines.append(f"[{'ok' if r.ok else r.status}] {r.message}")
        lines.extend(f"    note: {n}" for n in r.notes)
    usable = sum(r.ok for r in results)
    lines.append(f"{usable} of {len(results)} datasets usable")
    return "\n".join(lines)

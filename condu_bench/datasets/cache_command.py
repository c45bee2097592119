"""``condu-bench cache``: what the decoded-image cache holds and how much disk it takes; ``--clear`` empties it."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def format_entries(entries: list[dict], root: Path) -> str:
    if not entries:
        return f"decoded-image cache {root}: empty"
    lines = [f"decoded-image cache {root}", "", "| dataset | images | MiB | entry |", "|:--|--:|--:|:--|"]
    for entry in sorted(entries, key=lambda e: (e["dataset"], e["path"])):
        lines.append(f"| {entry['dataset']} | {entry['images']} | {entry['bytes'] / 2**20:.1f} | {Path(entry['path']).name} |")
    total = sum(e["bytes"] for e in entries)
    lines += ["", f"{len(entries)} entries, {total / 2**20:.1f} MiB"]
    return "\n".join(lines)


def cmd_cache(args: argparse.Namespace) -> int:
    from condu_bench.datasets.decoded_cache import cache_entries, default_cache_root, unfinished_builds
    from condu_bench.training.evaluate import FEATURES_DIR

    root = Path(args.dir).expanduser() if args.dir else default_cache_root()
    features_root = root / FEATURES_DIR  # image features of frozen image towers, computed from these splits
    entries, unfinished = cache_entries(root), unfinished_builds(root)
    features, unfinished_features = cache_entries(features_root), unfinished_builds(features_root)
    print(format_entries(entries, root))
    if features:
        total = sum(e["bytes"] for e in features)
        print(f"image features (frozen image towers) {features_root}: {len(features)} entries, {total / 2**20:.1f} MiB")
    if unfinished or unfinished_features:
        print(f"{len(unfinished) + len(unfinished_features)} unfinished builds (a killed run's; --clear removes them)")
    if args.clear:
        removed = [Path(e["path"]) for e in entries + features] + unfinished + unfinished_features
        for path in removed:
            shutil.rmtree(path)
        if features_root.is_dir() and not any(features_root.iterdir()):
            features_root.rmdir()
        print(f"removed {len(entries)} entries, {len(features)} feature entries and "
              f"{len(unfinished) + len(unfinished_features)} unfinished builds")
    return 0


def add_command(sub) -> None:
    cache = sub.add_parser("cache", help="the decoded-image cache of evaluation sets: entries and sizes",
                           description="Every evaluated split of a dataset on disk is decoded once into this cache "
                                       "(eval.cache_dir; default $CONDU_BENCH_CACHE/decoded) and shared by all runs.")
    cache.add_argument("--dir", help="cache directory (default $CONDU_BENCH_CACHE/decoded, as eval.cache_dir)")
    cache.add_argument("--clear", action="store_true", help="delete every entry (they are rebuilt when needed)")
    cache.set_defaults(func=cmd_cache)

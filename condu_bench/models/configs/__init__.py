"""open_clip model configs (JSON) shipped with condu-bench, e.g. the tiny CLIP of the synthetic world."""
from __future__ import annotations

from pathlib import Path

CONFIG_DIR: Path = Path(__file__).resolve().parent

_registered = False


def register_model_configs() -> None:
    """Make the JSON configs in :data:`CONFIG_DIR` known to ``open_clip.create_model`` (idempotent)."""
    global _registered
    import open_clip

    if _registered and all(p.stem in open_clip.list_models() for p in CONFIG_DIR.glob("*.json")):
        return
    open_clip.add_model_config(CONFIG_DIR)
    _registered = True

"""``condu-bench models check``: can each model's weights be found here, without any network access?"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from condu_bench.config import ModelConfig
from condu_bench.errors import UserError


@dataclass
class ModelCheck:
    label: str
    ok: bool
    detail: str


def describe(cfg: ModelConfig) -> str:
    return f"{cfg.arch} @ {cfg.checkpoint}" if cfg.checkpoint else f"{cfg.arch}/{cfg.pretrained}"


def check_model(cfg: ModelConfig) -> ModelCheck:
    """Resolve the weight file (cache or local path) and hash it; never downloads, never pretrains."""
    from condu_bench.atomic_io import sha256_file
    from condu_bench.models.loading import (find_in_hf_cache, is_torchscript_archive, synthetic_pretrain_config,
                                            torchscript_refusal, uses_quick_gelu)

    label = describe(cfg)
    try:
        if cfg.checkpoint:
            path = Path(cfg.checkpoint).expanduser()
            if not path.is_file():
                raise UserError(f"local checkpoint {path} does not exist")
        elif (pcfg := synthetic_pretrain_config(cfg)) is not None:
            from condu_bench.synthetic.pretrain import _cache_problem, cache_paths

            path, sidecar = cache_paths(pcfg, Path(cfg.cache_dir) if cfg.cache_dir else None)
            problem = _cache_problem(pcfg, path, sidecar) if path.exists() else "not pretrained yet"
            if problem is not None:
                return ModelCheck(label, True, f"{problem}: pretrained automatically on first run (or `condu-bench pretrain`)")
        elif cfg.pretrained in (None, "", "none"):
            return ModelCheck(label, True, "random initialisation (no weights needed)")
        else:
            path = find_in_hf_cache(cfg.arch, cfg.pretrained, cfg.cache_dir)
    except UserError as exc:
        return ModelCheck(label, False, str(exc))
    size_mb = path.stat().st_size / 2**20
    digest = sha256_file(path)
    refusal = torchscript_refusal(path, digest, cfg.trust_torchscript) if is_torchscript_archive(path) else None
    if refusal:
        return ModelCheck(label, False, refusal)
    gelu = "QuickGELU" if uses_quick_gelu(cfg, path) else "GELU"
    return ModelCheck(label, True, f"{path} ({size_mb:.1f} MiB, sha256 {digest[:16]}…, {gelu})")


def format_checks(checks: list[ModelCheck]) -> str:
    return "\n".join(f"{'ok     ' if c.ok else 'MISSING'} {c.label}: {c.detail}" for c in checks)

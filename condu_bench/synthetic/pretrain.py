"""Pretrain (and cache) the tiny open_clip CLIP of the synthetic world.

The model is trained from scratch with the symmetric contrastive CLIP loss on
:func:`~condu_bench.synthetic.domains.make_caption_dataset` pairs. The result is stored as a
``.safetensors`` state dict plus a sidecar JSON (config, fingerprint, sha256 of the weights, metrics)
in a cache folder; the file name carries a fingerprint of the config, the model's JSON config and
:data:`~condu_bench.synthetic.domains.GENERATOR_VERSION`, so a changed recipe never reuses a stale file.

Load the cached weights with::

    model, tokenizer = load_tiny_clip(cached_tiny_clip(cfg), cfg)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from condu_bench.atomic_io import atomic_write_bytes, atomic_write_json, sha256_file
from condu_bench.training.schedule import warmup_cosine

from .domains import DOMAIN_NAMES, GENERATOR_VERSION, captioned_opt_in_domains, make_caption_dataset, make_domain_split

__all__ = [
    "PretrainConfig",
    "pretrain_tiny_clip",
    "cached_tiny_clip",
    "default_cache_dir",
    "cache_paths",
    "load_tiny_clip",
    "images_to_tensor",
    "zero_shot_accuracy",
    "SIDECAR_FORMAT",
]

SIDECAR_FORMAT = 1
#: number of times :func:`pretrain_tiny_clip` ran in this process (tests use it to detect rebuilds)
BUILD_COUNT = 0

_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's default (OpenAI) normalisation
_STD = (0.26862954, 0.26130258, 0.27577711)


#: recipe fields that enter the fingerprint only when set (not None)
_HASHED_WHEN_SET = ("init_logit_scale", "letters")


@dataclass(frozen=True)
class PretrainConfig:
    """Recipe of the tiny CLIP; the defaults are the calibrated ones (about 3.5 min on 2 CPU cores)."""

    arch: str = "condu-tiny-vit"
    image_size: int = 32
    n_pairs: int = 30000
    steps: int = 950
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 40
    seed: int = 0
    threads: int = 2
    eval_n_per_class: int = 40  # zero-shot check recorded in the sidecar metrics (0 disables)
    # the temperature exp(logit_scale) set before the first step; None keeps open_clip's initial 1/0.07 (the
    # calibrated model ends at 18 from there). 100 starts from CLIP's final value, to study the temperature.
    init_logit_scale: float | None = None
    # the share of caption pairs that show a captioned capital letter, the vocabulary of the opt-in ``letters``
    # domain; None (the calibrated recipe) captions no letters
    letters: float | None = None

    def __post_init__(self):
        if self.letters is not None:
            if not 0 < self.letters < 1:
                raise ValueError(f"letters is the share of caption pairs that show a letter, in (0, 1); got {self.letters}")
            object.__setattr__(self, "letters", float(self.letters))
        if self.init_logit_scale is None:
            return
        if not 0 < self.init_logit_scale <= 100:
            raise ValueError(f"init_logit_scale must be in (0, 100] (training clamps the scale at 100), "
                             f"got {self.init_logit_scale}")
        object.__setattr__(self, "init_logit_scale", float(self.init_logit_scale))  # 100 and 100.0: one fingerprint

    def fingerprint(self) -> str:
        """Short hash of the config, the arch's JSON config and the generator version. Fields added since the
        calibration (:data:`_HASHED_WHEN_SET`) count only when set, so the cached calibrated models stay valid."""
        from condu_bench.models.configs import CONFIG_DIR

        arch_json = CONFIG_DIR / f"{self.arch}.json"
        arch_cfg = json.loads(arch_json.read_text()) if arch_json.is_file() else None
        config = {k: v for k, v in dataclasses.asdict(self).items() if not (k in _HASHED_WHEN_SET and v is None)}
        payload = {
            "config": config,
            "arch_cfg": arch_cfg,
            "generator_version": GENERATOR_VERSION,
            "sidecar_format": SIDECAR_FORMAT,
        }
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N,H,W,3)`` -> normalised float ``(N,3,H,W)``; equals open_clip's eval preprocess
    when the images already have the model's input size."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def load_tiny_clip(path: Path | str | None = None, cfg: PretrainConfig | None = None):
    """``(model, tokenizer)`` with the cached (or given) weights loaded, in eval mode."""
    import open_clip

    from condu_bench.models.loading import load_weights_into, new_open_clip, read_state_dict

    cfg = cfg or PretrainConfig()
    path = Path(path) if path is not None else cached_tiny_clip(cfg)
    model = new_open_clip(cfg.arch)
    load_weights_into(model, read_state_dict(path), path)
    return model.eval(), open_clip.get_tokenizer(cfg.arch)


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, dataset, batch_size: int = 500) -> float:
    """Top-1 of the template-ensemble zero-shot classifier (the evaluator's) on a SyntheticImages."""
    from condu_bench.models.classifier import cosine_logits, image_features, text_classifier

    model.eval()
    classifier = text_classifier(model, tokenizer, dataset.classnames, dataset.templates)
    x = images_to_tensor(dataset.images)
    y = torch.tensor(dataset.targets)
    correct = 0
    for a in range(0, len(y), batch_size):
        logits = cosine_logits(image_features(model, x[a:a + batch_size]), classifier)
        correct += int((logits.argmax(1) == y[a:a + batch_size]).sum())
    return correct / len(y)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


# --------------------------------------------------------------------------------------------------
# pretraining
# --------------------------------------------------------------------------------------------------
def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "logit_scale" in n or "embedding" in n or n.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def pretrain_tiny_clip(cfg: PretrainConfig, out_path: Path, progress: bool = True) -> Path:
    """Train the tiny CLIP from scratch and write ``out_path`` (.safetensors) + its sidecar JSON.

    Both files are written atomically (temp file + ``os.replace``), weights first, sidecar last:
    a run interrupted at any point never leaves a pair that validates.
    """
    global BUILD_COUNT
    from safetensors.torch import save as save_bytes
    from tqdm.auto import tqdm

    out_path = Path(out_path)
    t_start = time.perf_counter()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cfg.threads)))
    try:
        torch.manual_seed(cfg.seed)
        import open_clip

        from condu_bench.models.loading import new_open_clip

        model, tokenizer = new_open_clip(cfg.arch), open_clip.get_tokenizer(cfg.arch)
        if cfg.init_logit_scale is not None:
            with torch.no_grad():
                model.logit_scale.fill_(math.log(cfg.init_logit_scale))
        model.train()

        t0 = time.perf_counter()
        data = make_caption_dataset(cfg.n_pairs, image_size=cfg.image_size, seed=cfg.seed, letters=cfg.letters or 0.0)
        images = data.images  # uint8 (N,H,W,3); normalised per batch (keeps the process small)
        uniq, inverse = np.unique(np.array(data.captions, dtype=object), return_inverse=True)
        text_uniq = tokenizer(list(uniq))
        texts = text_uniq[torch.from_numpy(inverse.reshape(-1))]
        del data, uniq, inverse, text_uniq
        t_data = time.perf_counter() - t0

        opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)

        schedule = warmup_cosine(opt, cfg.warmup_steps, cfg.steps)

        g = torch.Generator().manual_seed(cfg.seed)
        n = len(images)
        bs = min(cfg.batch_size, n)
        perm, ptr = torch.randperm(n, generator=g), 0
        loss_hist: list[float] = []
        bar = tqdm(range(cfg.steps), desc="pretrain tiny CLIP", disable=not progress, leave=False)
        for step in bar:
            if ptr + bs > n:
                perm, ptr = torch.randperm(n, generator=g), 0
            idx = perm[ptr:ptr + bs]
            ptr += bs
            img_f, txt_f, scale = model(images_to_tensor(images[idx.numpy()]), texts[idx])[:3]
            logits = scale * img_f @ txt_f.t()
            # identical captions in a batch are positives too (soft targets), as in caption datasets
            same = (texts[idx][:, None, :] == texts[idx][None, :, :]).all(-1).float()
            target = same / same.sum(1, keepdim=True)
            loss = 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                          + torch.sum(-target * F.log_softmax(logits.t(), 1), 1).mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            loss_hist.append(loss.item())
            if progress and step % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(loss_hist[-10:]):.3f}")
        bar.close()
        t_train = time.perf_counter() - t0 - t_data

        metrics: dict = {
            "final_loss": float(np.mean(loss_hist[-20:])) if loss_hist else None,
            "data_seconds": round(t_data, 2),
            "train_seconds": round(t_train, 2),
            "logit_scale": float(model.logit_scale.detach().exp()),
        }
        if cfg.eval_n_per_class > 0:
            zs = {}
            for name in DOMAIN_NAMES + captioned_opt_in_domains(cfg):
                ds = make_domain_split(name, "test", n_per_class=cfg.eval_n_per_class,
                                       image_size=cfg.image_size, seed=cfg.seed)
                zs[name] = round(zero_shot_accuracy(model, tokenizer, ds), 4)
            metrics["zero_shot_test"] = zs
        metrics["total_seconds"] = round(time.perf_counter() - t_start, 2)

        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        blob = save_bytes(state, metadata={"arch": cfg.arch, "fingerprint": cfg.fingerprint()})
        atomic_write_bytes(out_path, blob)
        sidecar = {
            "format": SIDECAR_FORMAT,
            "arch": cfg.arch,
            "config": dataclasses.asdict(cfg),
            "fingerprint": cfg.fingerprint(),
            "generator_version": GENERATOR_VERSION,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "metrics": metrics,
            "torch_version": torch.__version__,
        }
        atomic_write_json(_sidecar(out_path), sidecar)
        BUILD_COUNT += 1
        return out_path
    finally:
        torch.set_num_threads(old_threads)


# --------------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    env = os.environ.get("CONDU_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "condu-bench"


def cache_paths(cfg: PretrainConfig | None = None, cache_dir: Path | None = None) -> tuple[Path, Path]:
    """``(weights, sidecar)`` paths the cache uses for ``cfg``."""
    cfg = cfg or PretrainConfig()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    w = root / f"{cfg.arch}-s{cfg.image_size}-g{GENERATOR_VERSION}-{cfg.fingerprint()}.safetensors"
    return w, _sidecar(w)


def _cache_problem(cfg: PretrainConfig, weights: Path, sidecar: Path) -> str | None:
    """``None`` if the cached pair is valid, else why not."""
    if not sidecar.is_file():
        return "sidecar JSON missing"
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as e:
        return f"sidecar unreadable ({e.__class__.__name__})"
    if not isinstance(meta, dict) or meta.get("fingerprint") != cfg.fingerprint():
        return "fingerprint mismatch"
    if meta.get("format") != SIDECAR_FORMAT:
        return "sidecar format mismatch"
    try:
        digest = sha256_file(weights)
    except OSError as e:
        return f"weights unreadable ({e.__class__.__name__})"
    if digest != meta.get("sha256"):
        return "sha256 of the weights does not match the sidecar"
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        load_file(str(weights))
    except SafetensorError as e:  # a damaged file; OSError, MemoryError and bugs propagate
        return f"safetensors load failed ({e.__class__.__name__})"
    return None


def cached_tiny_clip(cfg: PretrainConfig | None = None, cache_dir: Path | None = None,
                     progress: bool = True, rebuild: bool = False) -> Path:
    """Path of the cached tiny CLIP weights for ``cfg``; pretrains them on first need.

    A stale or corrupt cache entry is reported with a one-line warning and rebuilt.
    """
    cfg = cfg or PretrainConfig()
    weights, sidecar = cache_paths(cfg, cache_dir)
    if not rebuild and weights.exists():
        problem = _cache_problem(cfg, weights, sidecar)
        if problem is None:
            return weights
        warnings.warn(f"condu-bench: cached tiny CLIP {weights.name} is invalid ({problem}); rebuilding.",
                      RuntimeWarning, stacklevel=2)
    elif not rebuild and sidecar.exists():
        warnings.warn(f"condu-bench: cached tiny CLIP {weights.name} has a sidecar but no weights; rebuilding.",
                      RuntimeWarning, stacklevel=2)
    return pretrain_tiny_clip(cfg, weights, progress=progress)


def read_sidecar(weights: Path) -> dict:
    """The sidecar metadata (config, fingerprint, sha256, metrics) of a weights file."""
    return json.loads(_sidecar(Path(weights)).read_text())

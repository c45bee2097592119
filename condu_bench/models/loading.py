"""Load CLIP weights named by (open_clip architecture, pretrained tag) or from a local file. Never downloads.

Sources, in the order they are tried:
- ``checkpoint``: a local ``.safetensors``, a ``.bin``/``.pt``/``.pth`` state dict (``torch.load`` with
  ``weights_only=True``: no pickle code runs), or an OpenAI TorchScript archive (rebuilt as an open_clip model with
  QuickGELU). ``torch.jit.load`` runs the TorchScript code stored in the archive, so an archive is only loaded when its
  SHA-256 is one of OpenAI's released CLIP checkpoints (the hashes in open_clip's download URLs) or the config says
  ``model.trust_torchscript: true``.
- ``pretrained: synthetic``: the project's tiny CLIP, pretrained on the synthetic world and cached.
- any other tag: open_clip's pretrained table gives the Hugging Face repo and file; the file is looked up in the
  local Hugging Face cache only. A missing file is a :class:`UserError` naming it and how to get it.
"""

from __future__ import annotations

import functools
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from condu_bench.atomic_io import sha256_file
from condu_bench.config import ModelConfig
from condu_bench.errors import UserError

STATE_DICT_SUFFIXES = (".bin", ".pt", ".pth")


@dataclass
class LoadedModel:
    model: Any  # open_clip CLIP
    tokenizer: Any
    train_transform: Any
    eval_transform: Any
    info: dict[str, Any] = field(default_factory=dict)  # arch, tag, weights file, sha256, quick_gelu
    coop_train_transform: Any = None  # train.augment=coop


def is_torchscript_archive(path: Path) -> bool:
    """OpenAI's released .pt files are TorchScript zips (they hold ``code/`` and ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


@functools.lru_cache(maxsize=1)
def openai_release_sha256s() -> frozenset[str]:
    """SHA-256 of every OpenAI CLIP release open_clip knows: its URLs carry the hash as a path component."""
    import open_clip

    pattern = re.compile(r"//openaipublic\.azureedge\.net/clip/models/([0-9a-f]{64})/")
    found = set()
    for arch, tag in open_clip.list_pretrained():
        match = pattern.search(open_clip.get_pretrained_cfg(arch, tag).get("url") or "")
        if match:
            found.add(match.group(1))
    return frozenset(found)


def torchscript_refusal(path: Path, sha256: str, trust: bool) -> str | None:
    """Why the TorchScript archive ``path`` must not be loaded, or None when it may be."""
    if trust or sha256 in openai_release_sha256s():
        return None
    return (
        f"{path} is a TorchScript archive whose SHA-256 ({sha256}) is not one of OpenAI's released CLIP checkpoints; "
        "loading TorchScript runs the code stored in the file, so it is not loaded. Convert it to a .safetensors file "
        "or a state dict of tensors (these load without running code), or, if you trust where it comes from, "
        "set model.trust_torchscript=true"
    )


def uses_quick_gelu(cfg: ModelConfig, weights: Path | None) -> bool:
    if cfg.quick_gelu is not None:
        return cfg.quick_gelu
    if cfg.arch.endswith("-quickgelu"):
        return False  # the architecture config already says so
    return cfg.pretrained == "openai" or (weights is not None and is_torchscript_archive(weights))


def hf_cache_candidates(arch: str, tag: str) -> list[tuple[str, str]]:
    """(repo_id, filename) pairs where open_clip publishes (arch, tag), safetensors first."""
    import open_clip

    pcfg = open_clip.get_pretrained_cfg(arch, tag)
    if not pcfg:
        known = open_clip.list_pretrained_tags_by_model(arch)
        raise UserError(
            f"open_clip has no pretrained tag {tag!r} for architecture {arch!r} (known tags: {', '.join(known) or 'none'}); "
            "set model.checkpoint=/path/to/weights to load a local file instead"
        )
    hub = pcfg.get("hf_hub", "")
    if not hub:
        return []
    repo_id, filename = hub.rstrip("/").rsplit("/", 1) if not hub.endswith("/") else (hub.rstrip("/"), "")
    if not filename:
        return [(repo_id, "open_clip_model.safetensors"), (repo_id, "open_clip_pytorch_model.bin")]
    names = [filename]
    if filename.endswith((".bin", ".pth")):
        names.insert(0, filename.rsplit(".", 1)[0] + ".safetensors")
    return [(repo_id, name) for name in names]


def find_in_hf_cache(arch: str, tag: str, cache_dir: str | None = None) -> Path:
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import try_to_load_from_cache

    candidates = hf_cache_candidates(arch, tag)
    for repo_id, filename in candidates:
        hit = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        if isinstance(hit, str):
            return Path(hit)
    where = cache_dir or hf_constants.HF_HUB_CACHE
    if not candidates:
        raise UserError(
            f"weights {arch}/{tag} are only published at a URL, not on the Hugging Face hub; "
            "download them elsewhere and pass model.checkpoint=/path/to/file"
        )
    repo_id, filename = candidates[0]
    raise UserError(
        f"weights for {arch}/{tag} are not in the Hugging Face cache ({where}): expected {repo_id}/{filename}"
        f" (or {', '.join(f for _, f in candidates[1:])}). Nothing is downloaded here: on a machine with internet run "
        f"`huggingface-cli download {repo_id} {filename}` and copy the cache folder (or set HF_HUB_CACHE), "
        f"or pass model.checkpoint=/path/to/{filename}"
    )


def synthetic_pretrain_config(cfg: ModelConfig):
    """The recipe of the project's tiny CLIP named by ``cfg``, or None for other weights.

    ``pretrained: synthetic`` is the tiny CLIP pretrained with seed 0; ``synthetic-seedN`` one pretrained with
    seed N (another CPU's floating-point results amount to another pretrained model: check the world on several).
    ``model.pretrain`` overrides the recipe (a UserError for other weights, for ``arch`` / ``seed``, which the model
    config and the tag set, and for a key or value the recipe does not take).
    """
    tag = cfg.pretrained or ""
    if cfg.checkpoint or not (tag == "synthetic" or tag.startswith("synthetic-seed")):
        if cfg.pretrain:
            raise UserError(f"model.pretrain changes the pretraining of the synthetic tiny CLIP only (model.pretrained="
                            f"synthetic or synthetic-seedN, no model.checkpoint); this config loads {cfg.checkpoint or tag!r}")
        return None
    from condu_bench.config import from_dict
    from condu_bench.synthetic.pretrain import PretrainConfig

    seed_text = tag.removeprefix("synthetic").removeprefix("-seed") or "0"
    if not seed_text.isdigit():
        raise UserError(f"model.pretrained={tag!r}: the synthetic tags are 'synthetic' and 'synthetic-seedN' (N an integer)")
    fixed = [key for key in ("arch", "seed") if key in cfg.pretrain]
    if fixed:
        raise UserError(f"model.pretrain.{fixed[0]} is set by model.arch and the model.pretrained tag (synthetic-seedN), "
                        "not by model.pretrain")
    return from_dict(PretrainConfig, {**cfg.pretrain, "arch": cfg.arch, "seed": int(seed_text)}, "model.pretrain")


def check_pretrain_vocabulary(cfg: ModelConfig, needed: Iterable[str]) -> None:
    """A UserError when the synthetic tiny CLIP named by ``cfg`` was pretrained without captions for the recipe
    fields ``needed`` (a scenario's opt-in domains, e.g. ``letters``): its zero-shot would be chance, silently.
    Other weights are not checked (a real CLIP's vocabulary is not the project's to know)."""
    pcfg = synthetic_pretrain_config(cfg)
    missing = [name for name in sorted(set(needed)) if pcfg is not None and not getattr(pcfg, name)]
    if missing:
        raise UserError(f"the scenario's domains need a tiny CLIP pretrained with captions of {', '.join(missing)}; "
                        f"this one was not: add model.pretrain.{missing[0]}=<share of the caption pairs, e.g. 0.3>")


def resolve_weights(cfg: ModelConfig, progress: bool = True) -> Path | None:
    if cfg.checkpoint:
        path = Path(cfg.checkpoint).expanduser()
        if not path.is_file():
            raise UserError(f"model.checkpoint {path} does not exist (expected a .safetensors, .bin, .pt or .pth file)")
        return path
    if cfg.pretrained in (None, "", "none"):
        return None  # random initialisation, for tests
    pcfg = synthetic_pretrain_config(cfg)
    if pcfg is not None:
        from condu_bench.synthetic.pretrain import cached_tiny_clip

        return cached_tiny_clip(pcfg, cache_dir=Path(cfg.cache_dir) if cfg.cache_dir else None, progress=progress)
    return find_in_hf_cache(cfg.arch, cfg.pretrained, cfg.cache_dir)


def read_state_dict(path: Path, trust_torchscript: bool = False, sha256: str | None = None) -> dict[str, Any]:
    """Tensors of a weight file, loaded without running pickle code (TorchScript only when known or trusted).

    ``sha256`` is the file's hash when the caller already has it.
    """
    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise UserError(f"{path}: not a readable safetensors file ({exc})") from exc
    if is_torchscript_archive(path):
        refusal = torchscript_refusal(path, sha256 or sha256_file(path), trust_torchscript)
        if refusal:
            raise UserError(refusal)
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:  # torch reports a damaged or foreign archive as RuntimeError
            raise UserError(f"{path}: not a readable TorchScript archive ({exc})") from exc
        state = dict(module.state_dict())
        for key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):
            state.pop(key, None)  # metadata buffers of OpenAI's archives; open_clip rebuilds the causal mask
        return state
    if path.suffix not in STATE_DICT_SUFFIXES:
        raise UserError(f"{path}: unsupported weight file type {path.suffix!r} (use .safetensors, .bin, .pt or .pth)")
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    # what torch.load raises for refused pickles, damaged zips and non-checkpoint files (OSError and MemoryError pass)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError) as exc:
        raise UserError(
            f"{path}: cannot be read as a plain state dict with weights_only=True ({exc}). "
            "Pickled objects are never loaded; convert the file to .safetensors or a state dict of tensors."
        ) from exc
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path}: expected a dict of tensors, found {type(checkpoint).__name__}")
    if next(iter(checkpoint), "").startswith("module."):
        checkpoint = {k[len("module."):]: v for k, v in checkpoint.items()}
    return checkpoint


def new_open_clip(arch: str, quick_gelu: bool = False) -> Any:
    """An untrained open_clip model of ``arch`` (our JSON archs registered), initialised from torch's global RNG."""
    import logging

    import open_clip

    from condu_bench.models.configs import register_model_configs

    register_model_configs()
    if arch not in open_clip.list_models():
        from condu_bench.errors import UnknownNameError

        raise UnknownNameError("model architecture", arch, open_clip.list_models())
    # open_clip warns that the model is "initialized randomly": true only until the caller loads weights.
    quiet = _DropMessage("No pretrained weights loaded")
    logging.getLogger().addFilter(quiet)
    try:
        return open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu)
    finally:
        logging.getLogger().removeFilter(quiet)


def create_model(cfg: ModelConfig, quick_gelu: bool) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # untrained models (tests, from-scratch runs) start identical every time
        return new_open_clip(cfg.arch, quick_gelu)


class _DropMessage:
    """A logging filter that drops records containing ``text``."""

    def __init__(self, text: str):
        self.text = text

    def filter(self, record) -> bool:
        return self.text not in record.getMessage()


def load_model(cfg: ModelConfig, progress: bool = True) -> LoadedModel:
    import open_clip
    from open_clip.model import get_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, image_transform_v2

    weights = resolve_weights(cfg, progress)
    quick_gelu = uses_quick_gelu(cfg, weights)
    model = create_model(cfg, quick_gelu)
    info: dict[str, Any] = {"arch": cfg.arch, "pretrained": cfg.pretrained, "quick_gelu": quick_gelu}
    if weights is not None:
        digest = sha256_file(weights)
        state = read_state_dict(weights, cfg.trust_torchscript, digest)
        load_weights_into(model, state, weights)
        info.update(weights_file=str(weights), weights_sha256=digest)
    model.eval()
    # open_clip's train transform is RandomResizedCrop(scale 0.9-1.0), the MTIL references' augmentation.
    preprocess = PreprocessCfg(**get_model_preprocess_cfg(model))
    train_transform = image_transform_v2(preprocess, is_train=True)
    eval_transform = image_transform_v2(preprocess, is_train=False)
    tokenizer = open_clip.get_tokenizer(cfg.arch)
    return LoadedModel(model, tokenizer, train_transform, eval_transform, info,
                       coop_train_transform(preprocess.size, preprocess.mean, preprocess.std))


def coop_train_transform(size: int | tuple[int, int], mean: Any, std: Any) -> Any:
    """CoOp's training augmentation: Dassl's ``_build_transform_train`` for CoOp's ``INPUT.TRANSFORMS``
    (``random_resized_crop``, ``random_flip``, ``normalize``) with ``INPUT.INTERPOLATION: bicubic``.

    Dassl's order: RandomResizedCrop(size, scale=INPUT.RRCROP_SCALE = (0.08, 1.0), default ratio), RandomHorizontalFlip
    (p 0.5), ToTensor, Normalize (CoOp's configs give CLIP's mean and std: the model's). Images arrive as RGB PIL, as
    Dassl's ``read_image`` gives them.
    """
    from torchvision import transforms as T

    size = (size, size) if isinstance(size, int) else tuple(size)
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=0.5),
        T.ToTensor(),
        T.Normalize(mean=mean, std=std),
    ])


def load_weights_into(model: Any, state: dict[str, Any], source: Path) -> None:
    """Strict load: a missing or unexpected tensor means the file does not belong to this architecture."""
    from open_clip.factory import resize_pos_embed

    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    resize_pos_embed(state, model)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(
            f"{source} does not match the architecture: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]} (check model.arch)"
        )

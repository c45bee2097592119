"""Run configuration: plain YAML into frozen dataclasses, strict keys, ``key=value`` overrides.

A benchmark file names a scenario, a model and a list of methods by registry name. Unknown keys are
errors with a suggestion; overrides use dotted paths (``train.iterations=50``, ``methods=zeroshot,finetune``).
The resolved config is written next to every result and hashed into its record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from condu_bench.errors import UnknownNameError, UserError, closest


@dataclass(frozen=True)
class ScenarioConfig:
    name: str = "synthetic_mtil"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """Weights are named by (arch, pretrained tag) as in open_clip, or given as a local checkpoint file.

    ``pretrained: synthetic`` is the project's own tiny CLIP, pretrained on the synthetic world and cached.
    ``quick_gelu: null`` means automatic: on for OpenAI weights, whose towers were trained with QuickGELU.
    ``trust_torchscript: true`` allows a TorchScript checkpoint that is not one of OpenAI's released files (loading
    TorchScript runs code from the file); it changes no result, so it is not part of the config hash.
    ``pretrain`` changes the synthetic tiny CLIP's pretraining recipe (fields of
    :class:`condu_bench.synthetic.pretrain.PretrainConfig` but ``arch`` and ``seed``, e.g. ``init_logit_scale: 100``);
    each recipe is pretrained once and cached under its own fingerprint.
    """

    arch: str = "condu-tiny-vit"
    pretrained: str | None = "synthetic"
    checkpoint: str | None = None
    quick_gelu: bool | None = None
    cache_dir: str | None = None
    trust_torchscript: bool = False
    pretrain: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. A budget is ``iterations`` or ``epochs`` (one of them; neither means 100 iterations), a
    warm-up ``warmup_steps`` or ``warmup_epochs`` (neither means 10 steps); see :mod:`condu_bench.recipes` for how a
    method's reference recipe and ``recipes.<method>`` overrides are layered over this section."""

    iterations: int | None = None
    epochs: int | None = None  # passes over the task's training set (iterations = epochs x steps per epoch)
    batch_size: int = 32
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-4
    lr_per_task: dict[str, float] = field(default_factory=dict)  # dataset name -> lr (e.g. Aircraft, MNIST)
    iterations_per_task: dict[str, int] = field(default_factory=dict)
    epochs_per_task: dict[str, int] = field(default_factory=dict)
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    warmup_steps: int | None = None
    warmup_epochs: int | None = None
    warmup_lr: float | None = None  # epoch_cosine: the constant lr of the warm-up epochs (Dassl's WARMUP_CONS_LR)
    # cosine: linear warm-up, then cosine to 0 per step | constant | epoch_cosine: Dassl's (CoOp's) schedule, the lr
    # set once per epoch: warm-up epochs at warmup_lr, then CosineAnnealingLR with T_max = all epochs
    schedule: str = "cosine"
    label_smoothing: float = 0.2
    grad_clip_norm: float | None = None
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    train_templates: str = "first"  # first | all: templates of the text classifier used in the training loss
    # model: the model's train transform (open_clip: RandomResizedCrop scale 0.9-1) | coop: CoOp/Dassl's
    # RandomResizedCrop(scale 0.08-1, bicubic) + horizontal flip | none: the eval transform
    augment: str = "model"
    # The model a task keeps: last (after the last step) | best_val (the epoch with the best validation accuracy,
    # first on ties, as Dassl's TEST.FINAL_MODEL best_val; needs a val split)
    select: str = "last"
    # torch.compile the image and text towers for the training steps (CUDA: faster steps after a compile of about a
    # minute per task shape; results equal up to floating-point reassociation)
    compile: bool = False


# The values each choice of TrainConfig accepts (checked for the train section and every method's recipe).
TRAIN_CHOICES = {
    "optimizer": {"adamw", "sgd"},
    "schedule": {"cosine", "constant", "epoch_cosine"},
    "precision": {"auto", "fp32", "bf16"},
    "train_templates": {"first", "all"},
    "augment": {"model", "coop", "none"},
    "select": {"last", "best_val"},
}


@dataclass(frozen=True)
class EvalConfig:
    """``decoded_cache``, ``cache_dir`` and ``feature_cache`` change speed, never a prediction (not in the config hash)."""

    batch_size: int = 256
    max_per_dataset: int | None = None  # cap evaluated images per dataset (quick looks only; recorded)
    # Decode each evaluated split of a dataset on disk once into a shared uint8 cache (datasets generated in memory
    # are kept in memory instead): under cache_dir, default $CONDU_BENCH_CACHE/decoded. `condu-bench cache` lists it.
    decoded_cache: bool = True
    cache_dir: str | None = None
    feature_cache: bool = True  # image features that cannot change (frozen image towers, ConDU's theta_0) computed once per split and run


@dataclass(frozen=True)
class WandbConfig:
    project: str = ""
    entity: str | None = None
    mode: str | None = None  # online | offline | disabled; None: wandb's own default (WANDB_MODE)

    def __post_init__(self):
        if not self.project:
            raise ValueError("wandb needs a project: logging.wandb.project=NAME (or drop logging.wandb)")
        if self.mode not in (None, "online", "offline", "disabled"):
            raise ValueError(f"mode must be online, offline or disabled, got {self.mode!r}")


@dataclass(frozen=True)
class LoggingConfig:
    """Optional live logging of losses, learning rate and the growing accuracy matrix (never changes results)."""

    tensorboard: bool = False  # event files under <run dir>/tensorboard
    wandb: WandbConfig | None = None  # Weights & Biases run in <project>, files under <run dir>/wandb


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    methods: list[str] = field(default_factory=lambda: ["zeroshot", "finetune"])
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> train keys over its reference recipe
    eval: EvalConfig = field(default_factory=EvalConfig)
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data_root: str | None = None
    # Data-loading worker processes: auto = none for the synthetic world (arrays in memory), else one per core beyond
    # the two the main process keeps, at most 8 (0 on a 2-core machine). Pinned memory on CUDA, persistent workers.
    num_workers: int | str = "auto"
    num_threads: int | None = None  # torch CPU threads; None leaves torch's default
    progress: bool = True
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self):
        if self.num_workers != "auto" and not (isinstance(self.num_workers, int) and self.num_workers >= 0):
            raise ValueError(f"num_workers must be auto or a count >= 0, got {self.num_workers!r}")


# ---------------------------------------------------------------------------------------------------------
# dict <-> dataclass


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are :class:`UserError`.

    A ``ValueError`` from the class's own checks (``__post_init__``) becomes a :class:`UserError` naming ``where``.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {type(data).__name__} ({data!r})")
    types = _field_types(cls)
    unknown = [k for k in data if k not in types]
    if unknown:
        key = unknown[0]
        hint = closest(str(key), types)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise UserError(f"{where}: unknown key {key!r}{suggestion} (valid keys: {', '.join(types)})")
    kwargs = {k: coerce(types[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except UserError:
        raise
    except ValueError as exc:
        raise UserError(f"{where}: {exc}") from exc


def coerce(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against a type annotation, converting the few things YAML gets loose (int -> float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(arg, value, where)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if tp is Any:
        return value
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single method name or seed is a list of one
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return [coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 1e-5 (no dot) as a string
            except ValueError:
                pass
        raise UserError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{where}: expected a string, got {value!r}")
    return value


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------------------
# files and overrides


def read_yaml(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a dict, with its ``include`` chain merged in (a file including itself is an error)."""
    key = Path(path).resolve()
    if key in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain[_chain.index(key):], key))
        raise UserError(f"include cycle: {cycle}; remove one of these `include:` lines")
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    include = data.pop("include", None)
    if include is not None:
        # One YAML file per benchmark variant: `include: base.yaml` then only the keys that differ.
        if not isinstance(include, str):
            raise UserError(f"{path}: `include` must be the name of one YAML file, got {include!r}")
        base = read_yaml((path.parent / include).resolve(), (*_chain, key))
        data = deep_merge(base, data)
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override_value(text: str) -> Any:
    """``a,b`` is a list; everything else is read as a YAML scalar (numbers, true/false, null)."""
    if "," in text and not text.strip().startswith(("[", "{")):
        return [parse_override_value(part) for part in text.split(",") if part != ""]
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError as exc:
        raise UserError(f"cannot parse override value {text!r}: {exc}") from exc


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not of the form key=value (e.g. train.iterations=50)")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = parse_override_value(raw)
    return data


def load_config(path: Path | None, overrides: list[str] = ()) -> RunConfig:
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides))
    # plugins are imported, and kept out of the resolved config (and its hash): the methods they add are in it already
    plugins = data.pop("plugins", None) or []
    if not isinstance(plugins, list):
        raise UserError(f"{path}: `plugins` must be a list of module names or .py paths, got {plugins!r}")
    from condu_bench.plugins import import_plugins

    import_plugins(plugins, path.parent if path is not None else None)
    where = str(path) if path is not None else "config"
    config = from_dict(RunConfig, data, where)
    validate(config, where)
    return config


def validate(config: RunConfig, where: str) -> None:
    # Names are checked against the registries without importing any scenario or method.
    from condu_bench.registries import METHODS, SCENARIOS

    if config.scenario.name not in SCENARIOS:
        raise UnknownNameError("scenario", config.scenario.name, SCENARIOS.names())
    if not config.methods:
        raise UserError(f"{where}: `methods` is empty; name at least one (see `condu-bench ls methods`)")
    for name in config.methods:
        if name not in METHODS:
            raise UnknownNameError("method", name, METHODS.names())
    stray = [k for k in config.method_options if k not in config.methods and k not in METHODS]
    if stray:
        raise UnknownNameError("method", stray[0], METHODS.names())
    stray = [k for k in config.recipes if k not in config.methods and k not in METHODS]
    if stray:
        raise UnknownNameError("method", stray[0], METHODS.names())
    from condu_bench.recipes import check_train_config, check_train_keys

    for name, keys in config.recipes.items():
        check_train_keys(keys, f"{where}: recipes.{name}")
    check_train_config(config.train, f"{where}: train")
    if not config.seeds:
        raise UserError(f"{where}: `seeds` is empty")


def config_hash(data: dict[str, Any]) -> str:
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]

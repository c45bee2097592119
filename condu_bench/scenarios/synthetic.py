"""MTIL over the embedded synthetic world: one experience per procedural domain, nothing downloaded.

The world itself (pixels, splits) is fixed by ``data_seed``; the run seed only draws few-shot subsets, so
every seed of a sweep evaluates on the same test images.
"""

from __future__ import annotations

from typing import Any

from condu_bench.data.task import TaskData
from condu_bench.errors import UnknownNameError, UserError
from condu_bench.scenarios.base import Scenario, Stream, agnostic_suffix, checked_label_space

DEFAULTS: dict[str, Any] = {
    "order": None,  # list of domain names; None = the world's default order
    "n_train_per_class": 200,
    "n_test_per_class": 50,
    "image_size": 32,
    "data_seed": 0,
    "shots": None,  # few-shot MTIL: K training images per class, drawn with the run seed
    "task_agnostic": False,
    "label_space": "dataset",  # task-agnostic only: dataset (ConDU's released evaluation) | union (scenarios.base.LabelSpace)
    "style": None,  # downstream style knobs over the calibrated world (synthetic.domains.STYLE_KNOBS), for world studies
    "world_version": None,  # None = this release's world; a recorded version is checked (older worlds are not kept)
}
#: the scenarios that render the synthetic world: their run configs carry its version
SYNTHETIC_SCENARIOS = ("synthetic_mtil", "synthetic_b2n")


def versioned_options(scenario: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the world version written in, for the run's config hash and ``config.yaml``: results of an
    older world then never count as finished results of this one."""
    from condu_bench.synthetic.domains import WORLD_VERSION

    if scenario not in SYNTHETIC_SCENARIOS or options.get("world_version") is not None:
        return options
    return {**options, "world_version": WORLD_VERSION}


def checked_world_version(version: Any) -> int:
    """The world version to render: this release's (a config that records another one is refused, not re-rendered
    with different pixels)."""
    from condu_bench.synthetic.domains import WORLD_VERSION

    if version is not None and version != WORLD_VERSION:
        raise UserError(f"scenario.options.world_version is {version!r}, but this condu-bench renders synthetic world "
                        f"version {WORLD_VERSION} (older worlds are not kept: install the condu-bench that made those "
                        "results to reproduce them, or drop world_version to run this one)")
    return WORLD_VERSION


def checked_domains(names: Any) -> list[str]:
    """Domain names as a list (one name on the command line is a string), each one the world knows (an
    UnknownNameError with "did you mean" otherwise); None means the default six, in their order."""
    from condu_bench.synthetic.domains import DOMAIN_NAMES, KNOWN_DOMAINS

    names = names or DOMAIN_NAMES
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in KNOWN_DOMAINS:
            raise UnknownNameError("synthetic domain", name, KNOWN_DOMAINS)
    return names


def checked_style(style: Any) -> dict:
    """``scenario.options.style`` validated (a UserError names the bad knob); {} for the calibrated world."""
    from condu_bench.synthetic.domains import resolve_style

    if style is None:
        return {}
    if not isinstance(style, dict):
        raise UserError(f"scenario.options.style must be a mapping of style knobs, not {style!r}")
    try:
        resolve_style(style)
    except ValueError as error:
        raise UserError(f"scenario.options.style: {error}") from error
    return dict(style)


class FewShotSubset:
    """K items per class of a dataset, drawn as real datasets' shots are (:func:`fewshot.draw_indices`)."""

    def __init__(self, dataset: Any, shots: int, seed: str):
        import random

        from condu_bench.datasets.fewshot import draw_indices

        targets = [int(t) for t in dataset.targets]
        self.dataset, self.indices = dataset, draw_indices(targets, shots, random.Random(seed))
        self.targets = [targets[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[self.indices[index]]


def build_synthetic_mtil(options: dict[str, Any], seed: int, data_root: str | None = None) -> Scenario:
    from condu_bench.synthetic.domains import domain_classnames, domain_templates, make_domain_split, pretrain_vocabulary

    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise UserError(f"scenario.options: unknown key {unknown[0]!r} for synthetic_mtil (valid: {', '.join(DEFAULTS)})")
    opts = {**DEFAULTS, **options}
    style = checked_style(opts["style"])
    world_version = checked_world_version(opts["world_version"])
    order = checked_domains(opts["order"])
    tasks = []
    for index, name in enumerate(order):
        common = {"image_size": opts["image_size"], "seed": opts["data_seed"], "style": style}
        train = make_domain_split(name, "train", n_per_class=opts["n_train_per_class"], **common)
        if opts["shots"]:
            train = FewShotSubset(train, int(opts["shots"]), f"condu-fewshot|synthetic|{name}|{opts['shots']}|{seed}")
        test = make_domain_split(name, "test", n_per_class=opts["n_test_per_class"], **common)
        tasks.append(TaskData(
            name=name, classnames=domain_classnames(name), templates=domain_templates(name),
            train=train, test=test, split_convention="synthetic",
            info={"n_train": len(train), "n_test": len(test)},
        ))
    info = {"order": order, "world_version": world_version, **{k: opts[k] for k in ("n_train_per_class", "n_test_per_class", "image_size", "data_seed", "shots")}}
    if style:
        info["style"] = style
    vocabulary = pretrain_vocabulary(order)
    if vocabulary:
        info["pretrain_vocabulary"] = vocabulary
    label_space = checked_label_space(opts["label_space"], bool(opts["task_agnostic"]))
    if opts["task_agnostic"]:
        info["label_space"] = label_space
    return Scenario(
        name="synthetic_mtil" + ("_fewshot" if opts["shots"] else "") + agnostic_suffix(bool(opts["task_agnostic"]), label_space),
        protocol="mtil",
        streams=[Stream("synthetic", tasks)],
        task_agnostic=bool(opts["task_agnostic"]),
        label_space=label_space,
        info=info,
    )

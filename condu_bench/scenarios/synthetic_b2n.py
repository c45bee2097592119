"""Base-to-novel generalisation over the embedded synthetic world (CoOp's protocol in miniature, nothing downloaded).

Each domain is one single-step stream: K shots per class are drawn from the domain's training pool over *all* its
classes (as CoOp draws before splitting), the base half (first ceil(n/2) labels) trains, and the base and novel
halves are scored with their own classifiers. Base and novel classes share the domain's structure (shapes with
shapes, digits with digits), as the real datasets' halves do. A validation split of min(K, 4) shots per base class,
drawn from the pool images not in the training shots, serves methods that select a model on it
(``val_per_class`` sets another size; the training shots stay the same).

The world's pixels are fixed by ``data_seed``; the run seed draws the shots only.
"""

from __future__ import annotations

import random
from typing import Any

from condu_bench.data.task import TaskData
from condu_bench.errors import UserError
from condu_bench.scenarios.base import Scenario, Stream

DEFAULTS: dict[str, Any] = {
    "domains": None,  # list of domain names; None = every domain of the world
    "shots": 16,
    "val_per_class": None,  # validation images per base class; None = CoOp's min(shots, 4)
    "n_pool_per_class": 100,  # the training pool the shots are drawn from
    "n_test_per_class": 50,
    "image_size": 32,
    "data_seed": 0,
    "style": None,  # downstream style knobs over the calibrated world (as synthetic_mtil's)
    "world_version": None,  # as synthetic_mtil's
}


def _half(dataset: Any, indices: list[int], labels: list[int], classnames: list[str], name: str) -> Any:
    """The items ``indices`` of a synthetic split whose label is in ``labels``, relabelled 0.. in that order."""
    from condu_bench.synthetic.domains import SyntheticImages

    label_map = {old: new for new, old in enumerate(labels)}
    kept = [i for i in indices if dataset.targets[i] in label_map]
    return SyntheticImages(dataset.images[kept], [label_map[dataset.targets[i]] for i in kept],
                           [classnames[old] for old in labels], dataset.templates, name=name)


def build_synthetic_b2n(options: dict[str, Any], seed: int, data_root: str | None = None) -> Scenario:
    from condu_bench.datasets.base_novel import base_novel_labels
    from condu_bench.datasets.fewshot import VAL_SHOTS_CAP, draw_indices
    from condu_bench.scenarios.synthetic import checked_domains, checked_style, checked_world_version
    from condu_bench.synthetic.domains import domain_classnames, domain_templates, make_domain_split, pretrain_vocabulary

    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise UserError(f"scenario.options: unknown key {unknown[0]!r} for synthetic_b2n (valid: {', '.join(DEFAULTS)})")
    opts = {**DEFAULTS, **options}
    style = checked_style(opts["style"])
    world_version = checked_world_version(opts["world_version"])
    domains = checked_domains(opts["domains"])
    shots = int(opts["shots"])
    if shots < 1:
        raise UserError(f"scenario.options.shots must be a positive number of images per class, not {shots}")
    val_shots = min(shots, VAL_SHOTS_CAP) if opts["val_per_class"] is None else int(opts["val_per_class"])
    if val_shots < 1:
        raise UserError(f"scenario.options.val_per_class must be a positive number of images per class, not {val_shots}")
    if shots + val_shots > int(opts["n_pool_per_class"]):
        raise UserError(f"scenario.options.n_pool_per_class ({opts['n_pool_per_class']}) must hold the {shots} training "
                        f"shots and {val_shots} validation images of each class")
    streams = []
    for name in domains:
        common = {"image_size": opts["image_size"], "seed": opts["data_seed"], "style": style}
        pool = make_domain_split(name, "train", n_per_class=int(opts["n_pool_per_class"]), **common)
        test = make_domain_split(name, "test", n_per_class=int(opts["n_test_per_class"]), **common)
        classnames, templates = domain_classnames(name), domain_templates(name)
        rng = random.Random(f"condu-fewshot|synthetic_b2n|{name}|{shots}|{seed}")
        train_idx = draw_indices(list(pool.targets), shots, rng)
        taken = set(train_idx)
        rest = [i for i in range(len(pool)) if i not in taken]
        val_idx = [rest[j] for j in draw_indices([pool.targets[i] for i in rest], val_shots, rng)]
        base, novel = base_novel_labels(len(classnames))
        info = {"shots": shots, "val_per_class": val_shots, "num_classes_total": len(classnames), "data_seed": opts["data_seed"],
                "world_version": world_version, **({"style": style} if style else {})}
        halves = {}
        for half, labels in (("base", base), ("novel", novel)):
            task_name = f"{name}/{half}"
            half_test = _half(test, list(range(len(test))), labels, classnames, task_name)
            train = val = None
            if half == "base":
                train = _half(pool, train_idx, labels, classnames, task_name)
                val = _half(pool, val_idx, labels, classnames, task_name)
            halves[half] = TaskData(
                name=task_name, classnames=[classnames[i] for i in labels], templates=templates, test=half_test,
                train=train, val=val, split_convention="synthetic",
                info={**info, "half": half, "num_classes": len(labels), "n_test": len(half_test),
                      **({"n_train": len(train), "n_val": len(val)} if train is not None else {})},
            )
        streams.append(Stream(name, train=[halves["base"]], evaluate=[halves["base"], halves["novel"]]))
    scenario_info = {"domains": domains, "shots": shots, **{k: opts[k] for k in
                     ("n_pool_per_class", "n_test_per_class", "image_size", "data_seed")}}
    vocabulary = pretrain_vocabulary(domains)
    if vocabulary:
        scenario_info["pretrain_vocabulary"] = vocabulary
    return Scenario(name="synthetic_b2n", protocol="base_to_novel", streams=streams, info=scenario_info)

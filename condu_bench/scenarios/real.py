"""Scenarios over real datasets found under ``data_root``: MTIL, base-to-novel, cross-dataset, domain generalisation.

Every builder has the registry signature ``(options, seed, data_root)`` and returns a :class:`Scenario`.
Every :class:`TaskData` records its ``split_convention`` (the layout its splits came from: ``zscl`` or
``coop``) and, in ``info``, the dataset, layout, shots, seed, split description, counts, the few-shot cache
file and any images skipped as unreadable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from condu_bench.data.task import TaskData
from condu_bench.errors import UserError
from condu_bench.scenarios.base import Scenario, Stream, agnostic_suffix, checked_label_space

# protocols.md §1, in registry names (tables use each spec's mtil_name: Flowers, Food, OxfordPet).
MTIL_ORDERS = {
    "I": ["Aircraft", "Caltech101", "CIFAR100", "DTD", "EuroSAT", "Flowers102", "Food101", "MNIST", "OxfordPets",
          "StanfordCars", "SUN397"],
    "II": ["StanfordCars", "Food101", "MNIST", "OxfordPets", "Flowers102", "SUN397", "Aircraft", "Caltech101", "DTD",
           "EuroSAT", "CIFAR100"],
}
FEWSHOT_MTIL_DEFAULT = 5  # ConDU / MoE-Adapters few-shot MTIL
SKIPPED_RECORDED = 20  # unreadable files listed by name in the task info (all are counted)

_COMMON = {"layout": None, "shots": None, "fewshot_cache": None, "fewshot_draw": None, "fewshot_files": None,
           "skip_corrupt": False, "templates": None, "zeroshot_templates": None}
# CoOp's protocols: prompt methods (and fine-tuning) use KgCoOp's hand-crafted template, zero-shot CLIP rows CoOp's
# zero-shot one (trainers/zsclip.py), as the papers' tables were made.
COOP_TEMPLATES = {"templates": "handcrafted", "zeroshot_templates": "coop_zeroshot"}
COOP_PROTOCOLS = ("base_to_novel", "cross_dataset", "domain_generalisation")


def fewshot_draw(opts: dict[str, Any]) -> str:
    """The draw: ``imported`` from ``fewshot_files``, else as given, else ``dassl`` (CoOp's files) on the coop layout
    and ``condu`` (the harness's own, unchanged) elsewhere."""
    from condu_bench.datasets.fewshot import check_draw

    value = opts.get("fewshot_draw")
    if opts.get("fewshot_files"):
        if value is not None:
            raise UserError("scenario.options: give fewshot_files (import CoOp's shot_K-seed_S.pkl draws) or fewshot_draw, "
                            "not both")
        return "imported"
    return check_draw(value) if value is not None else ("dassl" if opts.get("layout") == "coop" else "condu")


def hashed_options(scenario: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the defaults that changed results since configs were written without them filled in.

    The run's resolved config (and so its hash) then says which few-shot draw made the shots and which templates
    zero-shot rows use: ``dassl``, the default on the coop layout, is written in, and so is ``zeroshot_templates`` on
    CoOp's protocols; ``condu`` stays implicit, so configs written before the choice existed keep their hashes. A
    task-agnostic run (of any MTIL scenario, synthetic too) gets its ``label_space`` written in: before the option,
    task-agnostic runs were scored over the union of every dataset's classes, and none of them may pass for a
    finished run of today's default.
    """
    if options.get("task_agnostic") and options.get("label_space") is None:
        options = {**options, "label_space": "dataset"}
    if scenario in COOP_PROTOCOLS and options.get("zeroshot_templates") is None:
        options = {**options, "zeroshot_templates": COOP_TEMPLATES["zeroshot_templates"]}  # zero-shot rows changed prompt
    if scenario not in COOP_PROTOCOLS + ("mtil",) or options.get("fewshot_draw") is not None or options.get("fewshot_files"):
        return options
    layout = options.get("layout", "zscl" if scenario == "mtil" else "coop")
    if layout == "coop" and (scenario != "mtil" or options.get("shots")):
        return {**options, "fewshot_draw": "dassl"}
    return options


def _options(options: dict[str, Any], defaults: dict[str, Any], scenario: str) -> dict[str, Any]:
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise UserError(f"scenario.options: unknown key {unknown[0]!r} for {scenario} (valid: {', '.join(defaults)})")
    return {**defaults, **options}


def _root(data_root: str | Path | None, scenario: str) -> Path:
    if not data_root:
        raise UserError(f"scenario {scenario} reads real datasets: give data_root=/path/to/data "
                        "(check it with `condu-bench data check --root DIR --layout zscl|coop`)")
    return Path(data_root).expanduser()


def _shots(value: Any, default_when_true: int) -> int | None:
    if value is None or value is False or value == 0:
        return None
    if value is True:
        return default_when_true
    try:
        shots = int(value)
    except (TypeError, ValueError):
        raise UserError(f"scenario.options.shots must be a number of images per class, not {value!r}") from None
    if shots < 1:
        raise UserError(f"scenario.options.shots must be positive, not {shots}")
    return shots


def _names(value: Any) -> list[str]:
    from condu_bench.datasets.catalog import get_spec

    names = value.split(",") if isinstance(value, str) else list(value)
    return [get_spec(n.strip()).name for n in names if n.strip()]


def _order(value: Any) -> tuple[str, list[str]]:
    key = str(value).strip().upper() if isinstance(value, (str, int)) else None
    key = {"1": "I", "2": "II"}.get(key, key) if key else None
    if key in MTIL_ORDERS:
        return key, list(MTIL_ORDERS[key])
    return "custom", _names(value)


def _set_names(opts: dict[str, Any]) -> dict[str, str | None]:
    """The template sets of the scenario, by their canonical names (recorded in the scenario's info)."""
    from condu_bench.datasets.spec import TEMPLATE_ALIASES

    return {k: TEMPLATE_ALIASES.get(opts[k], opts[k]) if opts[k] else None for k in ("templates", "zeroshot_templates")}


def _prompts(spec: Any, opts: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """TaskData's ``templates`` (and ``zeroshot_templates``) from the scenario's sets; their names go into ``info``."""
    out = {}
    for key in ("templates", "zeroshot_templates"):
        if opts[key]:
            try:
                info[key], out[key] = spec.template_set(opts[key])
            except UserError as exc:
                raise UserError(f"scenario.options.{key}: {exc}") from None
    return out


class _Loader:
    """Loads each dataset once per scenario and turns splits into TaskData."""

    def __init__(self, root: Path, opts: dict[str, Any], seed: int):
        self.root, self.opts, self.seed = root, opts, seed
        self.layout = opts["layout"]
        self._listings: dict[tuple[str, str], Any] = {}

    def listing(self, spec: Any, layout: str):
        from condu_bench.datasets.loading import load_listing

        key = (spec.name, layout)
        if key not in self._listings:
            self._listings[key] = load_listing(spec, self.root, layout)
        return self._listings[key]

    def finish(self, dataset: Any, info: dict[str, Any], split: str) -> Any:
        if self.opts["skip_corrupt"]:
            dataset = dataset.drop_unreadable()
            skipped = getattr(dataset, "skipped", [])
            if skipped:
                info.setdefault("skipped", {})[split] = {"count": len(skipped),
                                                         "files": [p for p, _ in skipped[:SKIPPED_RECORDED]]}
        return dataset

    def base_info(self, spec: Any, listing: Any, layout: str, shots: int | None) -> dict[str, Any]:
        info = {"dataset": spec.name, "layout": layout, "split": listing.split_description, "shots": shots,
                "seed": self.seed, "folder": str(listing.folder)}
        if listing.notes:
            info["notes"] = list(listing.notes)
        return info

    def train_splits(self, spec: Any, listing: Any, layout: str, shots: int | None, info: dict[str, Any]) -> dict[str, Any]:
        if not shots:
            if self.opts["fewshot_files"]:
                raise UserError("scenario.options.fewshot_files imports few-shot draws: it needs shots (e.g. shots=16)")
            return {k: v for k, v in listing.splits.items() if k in ("train", "val")}
        if self.opts["fewshot_files"]:
            from condu_bench.datasets.coop_files import fewshot_file, imported_splits

            path = fewshot_file(self.opts["fewshot_files"], listing.folder, self.root, shots, self.seed)
            splits, fs_info = imported_splits(listing.splits, path)
        else:
            from condu_bench.datasets.fewshot import fewshot_splits

            splits, fs_info = fewshot_splits(listing.splits, spec.name, layout, shots, self.seed, self.opts["fewshot_cache"],
                                             fewshot_draw(self.opts))
        info.update({k: v for k, v in fs_info.items() if k.startswith(("cache", "fewshot"))})
        info["n_val_shots"] = len(splits["val"]) if "val" in splits else 0
        return splits

    def eval_task(self, name: str, layout: str | None = None) -> TaskData:
        from condu_bench.datasets.catalog import get_spec

        spec = get_spec(name)
        layout = layout or self.layout
        listing = self.listing(spec, layout)
        info = self.base_info(spec, listing, layout, None)
        test = self.finish(listing.splits["test"], info, "test")
        info["n_test"] = len(test)
        return TaskData(name=spec.name, classnames=list(listing.classnames), test=test, train=None, split_convention=layout,
                        info=info, **_prompts(spec, self.opts, info))


def build_mtil(options: dict[str, Any], seed: int, data_root: str | Path | None = None) -> Scenario:
    """MTIL over the 11 datasets (order I / II or a list), zscl or coop splits, optionally few-shot and task-agnostic.

    MNIST and CIFAR100 exist only in the zscl layout: with ``layout: coop`` they fall back to it, and their
    TaskData (and ``scenario.info["layout_fallbacks"]``) say so.
    """
    from condu_bench.datasets.catalog import get_spec

    opts = _options(options, {**_COMMON, "order": "I", "layout": "zscl", "task_agnostic": False, "label_space": "dataset",
                                   "templates": "ensemble"}, "mtil")
    root = _root(data_root, "mtil")
    order_name, names = _order(opts["order"])
    shots = _shots(opts["shots"], FEWSHOT_MTIL_DEFAULT)
    loader = _Loader(root, opts, seed)
    tasks, fallbacks = [], {}
    for name in names:
        spec = get_spec(name)
        layout = opts["layout"]
        if layout not in spec.layouts and layout == "coop" and "zscl" in spec.layouts:
            layout = fallbacks[spec.name] = "zscl"
        listing = loader.listing(spec, layout)
        info = loader.base_info(spec, listing, layout, shots)
        train = loader.train_splits(spec, listing, layout, shots, info)["train"]
        train = loader.finish(train, info, "train")
        test = loader.finish(listing.splits["test"], info, "test")
        info.update(n_train=len(train), n_test=len(test))
        tasks.append(TaskData(name=spec.mtil_name or spec.name, classnames=list(listing.classnames), train=train, test=test,
                              split_convention=layout, info=info, **_prompts(spec, opts, info)))
    # The published MTIL tables used zscl splits; a coop-split run gets its own name so it is never shown beside them.
    label_space = checked_label_space(opts["label_space"], bool(opts["task_agnostic"]))
    suffix = (("_fewshot" if shots else "") + agnostic_suffix(bool(opts["task_agnostic"]), label_space)
              + ("_coopsplits" if opts["layout"] == "coop" else ""))
    return Scenario(
        name=f"mtil_order{order_name}{suffix}" if order_name != "custom" else f"mtil_custom{suffix}",
        protocol="mtil",
        streams=[Stream(f"order_{order_name}", tasks)],
        task_agnostic=bool(opts["task_agnostic"]),
        label_space=label_space,
        info={"order": order_name, **({"label_space": label_space} if opts["task_agnostic"] else {}),
              "datasets": names, "layout": opts["layout"], "layout_fallbacks": fallbacks,
              "shots": shots, "fewshot_draw": fewshot_draw(opts) if shots else None, **_set_names(opts),
              "data_root": str(root)},
    )


def build_base_to_novel(options: dict[str, Any], seed: int, data_root: str | Path | None = None) -> Scenario:
    """One single-step stream per dataset: train on the base half (K shots drawn over all classes), evaluate base and novel."""
    from condu_bench.datasets.base_novel import split_half
    from condu_bench.datasets.catalog import COOP_DATASETS, get_spec

    opts = _options(options, {**_COMMON, "datasets": COOP_DATASETS, "shots": 16, "layout": "coop", **COOP_TEMPLATES},
                    "base_to_novel")
    root = _root(data_root, "base_to_novel")
    shots = _shots(opts["shots"], 16)
    loader = _Loader(root, opts, seed)
    streams = []
    for name in _names(opts["datasets"]):
        spec = get_spec(name)
        listing = loader.listing(spec, opts["layout"])
        info = loader.base_info(spec, listing, opts["layout"], shots)
        drawn = loader.train_splits(spec, listing, opts["layout"], shots, info)  # drawn before the split
        prompts = _prompts(spec, opts, info)
        halves = {}
        for half in ("base", "novel"):
            test, classnames = split_half(listing.splits["test"], listing.classnames, half)
            half_info = {**info, "half": half, "num_classes": len(classnames)}
            train = val = None
            if half == "base":
                train, _ = split_half(drawn["train"], listing.classnames, "base")
                train = loader.finish(train, half_info, "train")
                half_info["n_train"] = len(train)
                if "val" in drawn:
                    val = loader.finish(split_half(drawn["val"], listing.classnames, "base")[0], half_info, "val")
                    half_info["n_val"] = len(val)
            test = loader.finish(test, half_info, "test")
            half_info["n_test"] = len(test)
            halves[half] = TaskData(name=f"{spec.name}/{half}", classnames=classnames, test=test, train=train, val=val,
                                    split_convention=opts["layout"], info=half_info, **prompts)
        streams.append(Stream(spec.name, train=[halves["base"]], evaluate=[halves["base"], halves["novel"]]))
    return Scenario(name="base_to_novel", protocol="base_to_novel", streams=streams,
                    info={"layout": opts["layout"], "shots": shots, "fewshot_draw": fewshot_draw(opts) if shots else None,
                          **_set_names(opts), "datasets": [s.name for s in streams], "data_root": str(root)})


def _transfer(protocol: str, options: dict[str, Any], seed: int, data_root: Any, targets: list[str]) -> Scenario:
    from condu_bench.datasets.catalog import get_spec

    opts = _options(options, {**_COMMON, "source": "ImageNet", "targets": targets, "shots": 16, "layout": "coop",
                              **COOP_TEMPLATES, "include_source": True}, protocol)
    root = _root(data_root, protocol)
    shots = _shots(opts["shots"], 16)
    loader = _Loader(root, opts, seed)
    spec = get_spec(opts["source"])
    listing = loader.listing(spec, opts["layout"])
    info = loader.base_info(spec, listing, opts["layout"], shots)
    drawn = loader.train_splits(spec, listing, opts["layout"], shots, info)
    train = loader.finish(drawn["train"], info, "train")
    val = loader.finish(drawn["val"], info, "val") if "val" in drawn else None
    test = loader.finish(listing.splits["test"], info, "test")
    info.update(n_train=len(train), n_test=len(test), n_val=len(val) if val is not None else 0, role="source")
    source = TaskData(name=spec.name, classnames=list(listing.classnames), train=train, val=val, test=test,
                      split_convention=opts["layout"], info=info, **_prompts(spec, opts, info))
    target_tasks = []
    for name in _names(opts["targets"]):
        task = loader.eval_task(name)
        task.info["role"] = "target"
        target_tasks.append(task)
    evaluate = ([source] if opts["include_source"] else []) + target_tasks
    return Scenario(name=protocol, protocol=protocol,  # type: ignore[arg-type]
                    streams=[Stream(f"{spec.name}->targets", train=[source], evaluate=evaluate)],
                    info={"layout": opts["layout"], "shots": shots, "fewshot_draw": fewshot_draw(opts) if shots else None,
                          **_set_names(opts), "source": spec.name,
                          "targets": [t.name for t in target_tasks], "data_root": str(root)})


def build_cross_dataset(options: dict[str, Any], seed: int, data_root: str | Path | None = None) -> Scenario:
    """Train on ImageNet (16 shots), evaluate ImageNet (source) and the other 10 CoOp datasets (Avg-C over the targets)."""
    from condu_bench.datasets.catalog import COOP_DATASETS

    return _transfer("cross_dataset", options, seed, data_root, [n for n in COOP_DATASETS if n != "ImageNet"])


def build_domain_generalisation(options: dict[str, Any], seed: int, data_root: str | Path | None = None) -> Scenario:
    """Train on ImageNet (16 shots), evaluate ImageNet and ImageNet-V2 / -Sketch / -A / -R (Avg-D over the targets)."""
    from condu_bench.datasets.catalog import DG_TARGETS

    return _transfer("domain_generalisation", options, seed, data_root, list(DG_TARGETS))

"""MergeTune (Wang et al., "MergeTune: Continued Fine-Tuning of Vision-Language Models", ICLR 2026), continued
fine-tuning of a finished CoOp or KgCoOp prompt, as ``Surrey-UP-Lab/MERGETUNE`` trains it.

Reference: ``trainers/kgcoop_coop_LMC.py`` (trainer ``KgCoOp_COOP_LMC``), ``configs/trainers/KgCoOp_COOP_LMC/
vit_b16_ep100_ctxv1.yaml``, ``scripts/coop_LMC/base2new_train_coop.sh`` (W = 10, W_LMC = 1.0, cosine anchor) and
``scripts/kgcoop_LMC/base2new_train_kgcoop.sh`` (the default W = 8), ``train.py`` (NUM_SAMPLES 5, FINAL_MODEL
best_val). The base's last-epoch prompt (``model.pth.tar-100``) is frozen as the fine-tuned solution; a second prompt,
initialised from it, is the only thing that trains. Objectives: :mod:`condu_bench.mergetune`.

- ``variant: released`` (default; what the paper's tables are): CE of the learned prompt + W * (1 - mean cos to the
  hand-crafted zero-shot class features) + 1.0 * mean over t in {0.1, 0.3, 0.5, 0.7, 0.9} of CE with the class features
  f_ft + t (f_w - f_ft), interpolated raw and normalised after, as the reference does.
- ``variant: paper``: the paper's parameter-space objective on the context vectors, CE(w) + lambda ||w - w_zs||^2 +
  beta * mean over alpha in {0, 1/N, .., (N-1)/N} of CE(w_ft + alpha (w - w_ft)), from w_0 = (1 - tau) w_zs + tau w_ft;
  w_zs is the zero-shot context, the token embeddings of ``ctx_init`` ("a photo of a").

Recipe: SGD lr 0.002 (momentum 0.9, weight decay 5e-4), batch 128, 100 epochs, one warm-up epoch at a constant 1e-5,
Dassl's per-epoch cosine, and ``select: best_val`` (the reference's ``TEST.FINAL_MODEL best_val``: the prompt of the
epoch with the best validation accuracy, the first of equals; :mod:`condu_bench.training.selection`);
``recipes.mergetune.select=last`` keeps the last prompt.

The base (``base: coop | kgcoop``) is read from a finished run of it (``from_run``: its run directory
``<out>/<base>/seed<S>``, or the ``<out>`` holding it; same scenario and seed) -- the learned prompt it kept after the
task (:mod:`condu_bench.task_states`) -- or, without ``from_run``, trained first on the same task in this run with the
base's reference recipe at the budget MergeTune's scripts give it (CoOp: ``vit_b16_ep100_ctxv1``, 100 epochs, batch
32, ImageNet too), its default options and its last epoch kept; ``base_recipe`` overrides keys of that.

Deviations: fp32 (the reference uses amp); the hand-crafted zero-shot features are those of the task's templates
(``scenario.options.templates: coop`` gives KgCoOp's one template per dataset), averaged when there are several; the
paper variant has no released code, its lambda/beta/tau defaults are the middle of the paper's stable ranges.
``base: clipfit`` is not supported yet (its learned state lives in the model's biases and LayerNorms, not a prompt).
The reference's unused ``bias_vectors`` parameter is left out. A task without a validation split (the synthetic
world) cannot use best-val selection: that is an error, not a silent switch to the last prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from condu_bench import mergetune as mt
from condu_bench.baselines.kgcoop import KgCoOp
from condu_bench.errors import UserError
from condu_bench.method import Batch, RunContext, TaskInfo
from condu_bench.prompt_method import PromptLearning
from condu_bench.recipes import Recipe

BASES = ("coop", "kgcoop", "clipfit")
PROMPT_BASES = ("coop", "kgcoop")
# MergeTune's scripts train the base with vit_b16_ep100_ctxv1 for every dataset (scripts/coop/base2new_train.sh: CoOp
# at 100 epochs, ImageNet included; KgCoOp's own recipe is already 100 epochs)
BASE_BUDGETS = {"coop": {"epochs": 100}}


class ImagesWithTransform(torch.utils.data.Dataset):
    """(image, label) pairs of a task's split with a transform applied (the base's training data)."""

    def __init__(self, data: Any, transform: Any):
        self.data, self.transform, self.targets = data, transform, data.targets

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        image, label = self.data[index][:2]
        return self.transform(image), label


def raw_class_features(prompt: Any, classnames: list[str], context: torch.Tensor | None = None) -> torch.Tensor:
    """Text-encoder outputs (not normalised) of the class prompts, with ``context`` in place of the prompt's own."""
    prompts = prompt.class_prompts(classnames)
    if context is None:
        x = prompt.embeddings(prompts)
    else:
        n = len(prompts)
        x = torch.cat([prompts.prefix, context.to(prompts.prefix.dtype).expand(n, -1, -1), prompts.suffix], dim=1)
    return prompt.tower.encode(x, prompts.token_ids).float()


def finished_base_run(from_run: str, base: str, seed: int, scenario: str) -> Path:
    """The run directory of ``base`` at ``seed`` that ``from_run`` names, after checking it fits this run."""
    from condu_bench import run_store

    root = Path(from_run).expanduser()
    candidates = [root, run_store.run_dir(root, base, seed)]
    found = next((c for c in candidates if (c / run_store.METRICS).is_file()), None)
    if found is None:
        raise UserError(f"method_options.mergetune.from_run: no finished run at {root} (looked for "
                        f"{' and '.join(str(c / run_store.METRICS) for c in candidates)}); give the run directory of a "
                        f"finished {base!r} run, or leave from_run unset to train {base!r} first in this run")
    metrics = run_store.finished_metrics(found)
    expected = {"method": base, "seed": seed, "scenario": scenario}
    for key, want in expected.items():
        if metrics.get(key) != want:
            raise UserError(f"method_options.mergetune.from_run: {found} is a run with {key} {metrics.get(key)!r}, but "
                            f"this run needs {key} {want!r} (base {base!r}, seed {seed}, scenario {scenario!r})")
    return found


class MergeTune(PromptLearning):
    """MergeTune: a second prompt from the finished CoOp/KgCoOp one, with low-loss paths to it and to zero-shot CLIP."""

    name: ClassVar[str] = "mergetune"
    # the reference's KgCoOp_COOP_LMC config repeats KgCoOp's numbers (batch 128, 100 epochs, Dassl SGD); train.py
    # sets TEST.FINAL_MODEL best_val
    recipe: ClassVar[Recipe] = Recipe("MERGETUNE configs/trainers/KgCoOp_COOP_LMC/vit_b16_ep100_ctxv1.yaml, train.py",
                                      {**KgCoOp.recipe.train, "select": "best_val"})

    @dataclass(frozen=True)
    class Config(PromptLearning.Config):
        base: str = "coop"  # coop | kgcoop (clipfit: not supported yet)
        variant: str = "released"  # released (the paper's tables) | paper
        from_run: str | None = None  # a finished base run (its run directory, or the output directory holding it)
        base_recipe: dict[str, Any] = field(default_factory=dict)  # train keys over the base's recipe (no from_run)
        anchor_weight: float | None = None  # released: W (None: 10 on coop, 8 on kgcoop)
        path_weight: float = 1.0  # released: W_LMC
        path_samples: int = 5  # released: NUM_SAMPLES (t = 0.1, 0.3, .. for 5)
        lam: float = 12.0  # paper: lambda (stable 8-16)
        beta: float = 0.3  # paper: beta (stable 0.1-0.5)
        tau: float = 0.5  # paper: tau (stable 0.3-0.6)
        n_alpha: int = 5  # paper: N_alpha

        def __post_init__(self):
            super().__post_init__()
            for key, value, allowed in (("base", self.base, BASES), ("variant", self.variant, mt.VARIANTS)):
                if value not in allowed:
                    raise ValueError(f"{key} must be one of {', '.join(allowed)}, not {value!r}")
            if self.path_samples < 1 or self.n_alpha < 1:
                raise ValueError("path_samples and n_alpha must be at least 1")
            if not 0.0 <= self.tau <= 1.0:
                raise ValueError(f"tau must be in [0, 1], not {self.tau}")

    def setup(self, ctx: RunContext) -> None:
        from condu_bench.prompting import PromptContext
        from condu_bench.registries import METHODS

        cfg = self.config
        if cfg.base not in PROMPT_BASES:
            available = cfg.base in METHODS.names()
            raise UserError(f"mergetune on base {cfg.base!r} is not available yet: "
                            + ("this plugin continues prompts only (coop, kgcoop)" if available else
                               f"the {cfg.base!r} plugin is not installed, and this plugin continues prompts only")
                            + "; use base: coop or base: kgcoop")
        super().setup(ctx)  # self.prompt: the learned context w, here still the zero-shot init
        self.zeroshot_ctx = self.prompt.ctx.detach().clone()  # w_zs of the paper variant
        self.finetuned = PromptContext(ctx.model, ctx.tokenizer, cfg.n_ctx, cfg.ctx_init).requires_grad_(False)
        self.sources: dict[str, str] = {}

    # ---- the fine-tuned solution -------------------------------------------------------------------------------
    def base_context(self, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        from condu_bench.task_states import load_task_state

        cfg = self.config
        if cfg.from_run is None:
            self.sources[task.name] = f"{cfg.base} trained in this run"
            return self.train_base(task, ctx)
        run_dir = finished_base_run(cfg.from_run, cfg.base, ctx.seed, ctx.scenario_name)
        tensors, _ = load_task_state(run_dir, task.name)
        learned = tensors.get("method/prompt/ctx")
        if learned is None or learned.shape != self.prompt.ctx.shape:
            got = "no prompt" if learned is None else f"a prompt of shape {tuple(learned.shape)}"
            raise UserError(f"{run_dir} kept {got} for task {task.name!r}, but this run's prompt has shape "
                            f"{tuple(self.prompt.ctx.shape)} (n_ctx x text width): the base run used another model "
                            "or n_ctx; give the run of the same model and n_ctx")
        self.sources[task.name] = f"{cfg.base} from {run_dir}"
        return learned.to(self.prompt.ctx.device)

    def base_train_config(self, own: Any) -> Any:
        """The base's train config: its recipe at the budget MergeTune's scripts give it, then ``base_recipe``; the
        selection is not inherited from mergetune's (CoOp and KgCoOp keep the last epoch)."""
        from condu_bench.recipes import resolve_train
        from condu_bench.registries import METHODS

        base = self.config.base
        train = resolve_train(replace(own, select="last"), METHODS.get(base).recipe, BASE_BUDGETS.get(base), base)
        return resolve_train(train, None, self.config.base_recipe, base)

    def train_base(self, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        from condu_bench.config import from_dict
        from condu_bench.recipes import task_iterations
        from condu_bench.registries import METHODS
        from condu_bench.training.loop import train_task

        cls = METHODS.get(self.config.base)
        base = cls(from_dict(cls.Config, {"n_ctx": self.config.n_ctx, "ctx_init": self.config.ctx_init},
                             f"the {self.config.base} base of mergetune"))
        train = self.base_train_config(ctx.train_config)
        data = task.data
        info = TaskInfo(index=task.index, data=data, lr=train.lr_per_task.get(task.name, train.lr),
                        iterations=task_iterations(train, task.name, len(data.train), data.info.get("dataset")))
        transform = ctx.augmentation(train.augment)
        own_train = ctx.train_config
        ctx.train_config = train
        try:
            base.setup(ctx)
            train_task(base, info, ImagesWithTransform(data.train, transform), ctx,
                       stream_index=ctx.task_seed(task.index, "mergetune base"), progress=False)
        finally:
            ctx.train_config = own_train
        return base.prompt.ctx.detach().clone()

    # ---- training ----------------------------------------------------------------------------------------------
    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        from condu_bench.models.classifier import text_classifier
        super().before_task(task, ctx)
        cfg = self.config
        finetuned = self.base_context(task, ctx)
        with torch.no_grad():
            self.finetuned.ctx.copy_(finetuned)
            start = finetuned if cfg.variant == "released" else mt.paper_init(
                {"ctx": self.zeroshot_ctx}, {"ctx": finetuned}, cfg.tau)["ctx"]
            self.prompt.ctx.copy_(start)
            classnames = list(task.data.classnames)
            self.zeroshot_feats = text_classifier(ctx.model, ctx.tokenizer, classnames, task.data.templates, ctx.device)
            self.finetuned_raw = raw_class_features(self.finetuned, classnames)

    def training_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        from condu_bench.models.classifier import image_features, logit_scale

        cfg = self.config
        classnames = list(task.data.classnames)
        image_feats = image_features(ctx.model, batch.images)
        scale = logit_scale(ctx.model)
        smoothing = ctx.train_config.label_smoothing
        if cfg.variant == "released":
            weight = cfg.anchor_weight if cfg.anchor_weight is not None else mt.ANCHOR_WEIGHTS[cfg.base]
            return mt.released_loss(image_feats, batch.labels, raw_class_features(self.prompt, classnames),
                                    self.finetuned_raw, self.zeroshot_feats, scale, weight, cfg.path_weight,
                                    mt.released_path_points(cfg.path_samples), smoothing).total

        def task_loss(params):
            logits = mt.feature_logits(image_feats, raw_class_features(self.prompt, classnames, params["ctx"]), scale)
            return F.cross_entropy(logits, batch.labels, label_smoothing=smoothing)

        return mt.paper_loss(task_loss, {"ctx": self.prompt.ctx}, {"ctx": self.zeroshot_ctx},
                             {"ctx": self.finetuned.ctx}, cfg.lam, cfg.beta, mt.paper_path_points(cfg.n_alpha)).total

    def report(self) -> dict[str, Any]:
        return {"base": self.config.base, "variant": self.config.variant, "base_source": dict(self.sources)}

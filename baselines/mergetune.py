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
epoch with the best validation accuracy, the first of equals; :mod:`condu_bench.training.selection`; its
``base2base_test_coop.sh`` / ``base2new_test_coop.sh`` score that prompt: ``--eval-only`` without ``--load-epoch``
loads ``model-best.pth.tar``); the run records the kept epoch (``method_report.model_selection``);
``recipes.mergetune.select=last`` keeps the last prompt.

The base (``base: coop | kgcoop``) is read from a finished run of it (``from_run``: its run directory
``<out>/<base>/seed<S>``, or the ``<out>`` holding it; same scenario and seed) -- the learned prompt it kept after the
task (:mod:`condu_bench.task_states`) -- or, without ``from_run``, trained first on the same task in this run with the
base's reference recipe at the budget MergeTune's scripts give it (CoOp: ``vit_b16_ep100_ctxv1``, 100 epochs, batch
32, ImageNet too), its default options and its last epoch kept; ``base_recipe`` overrides keys of that.

Deviations: fp32 (the reference uses amp); the hand-crafted zero-shot features are those of the task's templates
(``scenario.options.templates: coop`` gives KgCoOp's one template per dataset), averaged when there are several; the
paper variant has no released code, its lambda/beta/tau defaults are the middle of the paper's stable ranges.
CLIPFit's learned state lives in the model's biases and LayerNorms, not in a prompt: ``mergetune_clipfit`` continues it
(the release's trainer for weight-training bases, ``MMA_LMC``; ``base: clipfit`` here is an error that says so).
The reference's unused ``bias_vectors`` parameter is left out. A task without a validation split (the synthetic
world) cannot use best-val selection: that is an error, not a silent switch to the last prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from condu_bench import mergetune as mt
from condu_bench.base_runs import base_train_config, finished_base_run, train_base_first
from condu_bench.baselines.kgcoop import KgCoOp
from condu_bench.errors import UserError
from condu_bench.method import Batch, RunContext, TaskInfo
from condu_bench.prompt_method import PromptLearning
from condu_bench.recipes import Recipe

BASES = ("coop", "kgcoop")
WEIGHT_BASES = {"clipfit": "mergetune_clipfit"}  # bases whose learned state is model weights -> the plugin continuing them
# MergeTune's scripts train the base with vit_b16_ep100_ctxv1 for every dataset (scripts/coop/base2new_train.sh: CoOp
# at 100 epochs, ImageNet included; KgCoOp's own recipe is already 100 epochs)
BASE_BUDGETS = {"coop": {"epochs": 100}}


def raw_class_features(prompt: Any, classnames: list[str], context: torch.Tensor | None = None) -> torch.Tensor:
    """Text-encoder outputs (not normalised) of the class prompts, with ``context`` in place of the prompt's own."""
    prompts = prompt.class_prompts(classnames)
    if context is None:
        x = prompt.embeddings(prompts)
    else:
        n = len(prompts)
        x = torch.cat([prompts.prefix, context.to(prompts.prefix.dtype).expand(n, -1, -1), prompts.suffix], dim=1)
    return prompt.tower.encode(x, prompts.token_ids).float()


class MergeTune(PromptLearning):
    """MergeTune: a second prompt from the finished CoOp/KgCoOp one, with low-loss paths to it and to zero-shot CLIP."""

    name: ClassVar[str] = "mergetune"
    # the reference's KgCoOp_COOP_LMC config repeats KgCoOp's numbers (batch 128, 100 epochs, Dassl SGD); train.py
    # sets TEST.FINAL_MODEL best_val
    recipe: ClassVar[Recipe] = Recipe("MERGETUNE configs/trainers/KgCoOp_COOP_LMC/vit_b16_ep100_ctxv1.yaml, train.py",
                                      {**KgCoOp.recipe.train, "select": "best_val"})

    @dataclass(frozen=True)
    class Config(PromptLearning.Config, mt.ContinuationOptions):
        base: str = "coop"  # coop | kgcoop (clipfit: method mergetune_clipfit)
        anchor_weight: float | None = None  # released: W (None: 10 on coop, 8 on kgcoop)
        path_weight: float = 1.0  # released: W_LMC

        def __post_init__(self):
            PromptLearning.Config.__post_init__(self)
            mt.ContinuationOptions.__post_init__(self)
            if self.base in WEIGHT_BASES:
                raise ValueError(f"base {self.base!r} trains model weights, not a prompt: continue it with method "
                                 f"{WEIGHT_BASES[self.base]} (methods={WEIGHT_BASES[self.base]})")
            if self.base not in BASES:
                raise ValueError(f"base must be one of {', '.join(BASES)}, not {self.base!r}")

    def setup(self, ctx: RunContext) -> None:
        from condu_bench.prompting import PromptContext

        cfg = self.config
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
        run_dir = finished_base_run(cfg.from_run, cfg.base, ctx.seed, ctx.scenario_name, "method_options.mergetune.from_run")
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
        """The base's train config: its recipe at the budget MergeTune's scripts give it, then ``base_recipe``."""
        return base_train_config(own, self.config.base, BASE_BUDGETS.get(self.config.base), self.config.base_recipe)

    def train_base(self, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        options = {"n_ctx": self.config.n_ctx, "ctx_init": self.config.ctx_init}
        base = train_base_first(self.config.base, options, self.base_train_config(ctx.train_config), task, ctx, self.name)
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

"""MergeTune on CLIPFit: continued fine-tuning of a finished CLIPFit run's weights (its text MLP output biases and
image LayerNorms), with a low-loss path to zero-shot CLIP.

The release (``Surrey-UP-Lab/MERGETUNE``) has no CLIPFit trainer. Its trainer for a base that trains model weights in
both towers is ``trainers/mma_LMC.py`` (MMA + MergeTune; ``scripts/mma_LMC/base2new_train_mma.sh``, the README's
``W_LMC`` 10.0, ``train.py``'s ``TEST.FINAL_MODEL best_val``), and this plugin does for CLIPFit what that one does for
MMA:

- the weights the base trains start from the base's last epoch (``--resume-coop``, the highest
  ``model.pth.tar-N``) and are the only thing that trains;
- ``variant: released`` (default): loss = the base's own loss (CLIPFit's CE + 8 * (1 - mean cos to the frozen
  hand-crafted class features), where MMA_LMC keeps MMA's CE) + 10 * mean over t in {0.1, 0.3, 0.5, 0.7, 0.9} of the CE
  with class features f_w + t (f_zs - f_w): f_w the raw text-encoder outputs under the current weights, f_zs zero-shot
  CLIP's normalised features, the image features the current model's
  (:func:`condu_bench.mergetune.zeroshot_path_loss`);
- ``variant: paper``: the paper's parameter-space objective over the same weights, CE(w) + lambda ||w - w_zs||^2 +
  beta * mean over alpha in {0, 1/N, .., (N-1)/N} of CE(w_ft + alpha (w - w_ft)) from (1 - tau) w_zs + tau w_ft, w_zs
  the pretrained values (:func:`condu_bench.mergetune.paper_loss`; each path point is a forward pass of both towers
  with the interpolated weights, ``torch.func.functional_call``).

Recipe: CLIPFit's own (SGD lr 0.002, batch 32, 100 epochs, 10 on Food101 and ImageNet), as MMA_LMC continues MMA with
MMA's own config, and ``select: best_val``.

The base (CLIPFit) is read from a finished run of it (``from_run``: its run directory ``<out>/clipfit/seed<S>`` or the
``<out>`` holding it; the weights it kept after the task, :mod:`condu_bench.task_states`), or, without ``from_run``,
trained first on the same task in this run with CLIPFit's recipe and its last epoch kept, starting from the model as
the task starts (theta_0 in every base-to-novel, cross-dataset and domain-generalisation stream, each of which is one
task); ``base_recipe`` overrides keys of that recipe.

Deviations: by analogy, as said (no released CLIPFit + MergeTune); fp32 (the references use amp / fp16); with
several templates (the synthetic worlds) f_w is the per-class mean of the raw outputs over the templates, and the
classifier of the main loss the mean of the normalised ones (CLIPFit's); the paper variant's defaults are the middle of
the paper's stable ranges, as for prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from condu_bench import mergetune as mt
from condu_bench.base_runs import base_train_config, finished_base_run, train_base_first
from condu_bench.baselines.clipfit import CLIPFit, clipfit_parameter_names
from condu_bench.errors import UserError
from condu_bench.method import Batch, RunContext, TaskInfo
from condu_bench.recipes import Recipe

BASE = "clipfit"
RELEASED_PATH_WEIGHT = 10.0  # W_LMC of the reference README's MMA + MergeTune command


class Encoders(torch.nn.Module):
    """Both towers of ``model`` as one forward, so that ``functional_call`` can run them with other weights."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_image(images), self.model.encode_text(tokens)


class MergeTuneCLIPFit(CLIPFit):
    """MergeTune on CLIPFit's weights: continued from the finished CLIPFit solution, with a low-loss path to zero-shot."""

    name: ClassVar[str] = "mergetune_clipfit"
    recipe: ClassVar[Recipe] = Recipe("CLIPFit's recipe (MERGETUNE's MMA_LMC continues MMA with MMA's own config), "
                                      "train.py's TEST.FINAL_MODEL best_val",
                                      {**CLIPFit.recipe.train, "select": "best_val"})

    @dataclass(frozen=True)
    class Config(CLIPFit.Config, mt.ContinuationOptions):
        path_weight: float = RELEASED_PATH_WEIGHT  # released: W_LMC

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        self.names = clipfit_parameter_names(ctx.model)
        self.zeroshot = {n: ctx.pretrained_state[n].to(ctx.device) for n in self.names}  # w_zs of the paper variant
        self.finetuned: dict[str, torch.Tensor] = {}
        self.encoders = Encoders(ctx.model)
        self.sources: dict[str, str] = {}

    def live_weights(self, ctx: RunContext) -> dict[str, torch.nn.Parameter]:
        params = dict(ctx.model.named_parameters())
        return {n: params[n] for n in self.names}

    # ---- the fine-tuned solution -------------------------------------------------------------------------------
    def base_weights(self, task: TaskInfo, ctx: RunContext) -> dict[str, torch.Tensor]:
        from condu_bench.task_states import load_task_state

        cfg = self.config
        if cfg.from_run is None:
            train = base_train_config(ctx.train_config, BASE, None, cfg.base_recipe)
            options = {"weight": cfg.weight, "weight_per_task": dict(cfg.weight_per_task)}
            train_base_first(BASE, options, train, task, ctx, self.name)
            self.sources[task.name] = f"{BASE} trained in this run"
            return {n: p.detach().clone() for n, p in self.live_weights(ctx).items()}
        run_dir = finished_base_run(cfg.from_run, BASE, ctx.seed, ctx.scenario_name,
                                    f"method_options.{self.name}.from_run")
        tensors, _ = load_task_state(run_dir, task.name)
        kept = {}
        for name, param in self.live_weights(ctx).items():
            value = tensors.get(f"model/{name}")
            if value is None or value.shape != param.shape:
                got = "no such weight" if value is None else f"shape {tuple(value.shape)}"
                raise UserError(f"{run_dir} kept {got} for {name} after task {task.name!r}, where this run's model has "
                                f"shape {tuple(param.shape)}: the clipfit run used another model; give the run of the "
                                "same model")
            kept[name] = value.to(device=param.device, dtype=param.dtype)
        self.sources[task.name] = f"{BASE} from {run_dir}"
        return kept

    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        super().before_task(task, ctx)  # the frozen zero-shot class features (CLIPFit's pull, and f_zs of the path)
        cfg = self.config
        self.finetuned = self.base_weights(task, ctx)
        start = self.finetuned if cfg.variant == "released" else mt.paper_init(self.zeroshot, self.finetuned, cfg.tau)
        with torch.no_grad():
            for name, param in self.live_weights(ctx).items():
                param.copy_(start[name])

    # ---- training ----------------------------------------------------------------------------------------------
    def training_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        if self.config.variant == "released":
            return self.released_loss(batch, task, ctx)
        return self.paper_loss(batch, task, ctx)

    def released_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        from condu_bench.models.classifier import (class_text_outputs, classifier_from_outputs, cosine_logits,
                                                   image_features, logit_scale)

        cfg, data = self.config, task.data
        outputs = class_text_outputs(ctx.model, ctx.tokenizer, data.classnames, data.templates, ctx.device)
        class_feats = classifier_from_outputs(outputs)
        image_feats = image_features(ctx.model, batch.images)
        scale = logit_scale(ctx.model)
        smoothing = ctx.train_config.label_smoothing
        ce = F.cross_entropy(cosine_logits(image_feats, class_feats, scale), batch.labels, label_smoothing=smoothing)
        main = ce + self.task_weight(task) * self.text_feature_pull(class_feats)
        path = mt.zeroshot_path_loss(image_feats, batch.labels, outputs.mean(dim=1), self.frozen_text, scale,
                                     mt.released_path_points(cfg.path_samples), smoothing)
        return main + cfg.path_weight * path

    def paper_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        from torch.func import functional_call

        from condu_bench.models.classifier import (class_prompts, classifier_from_outputs, cosine_logits, logit_scale,
                                                   tokenize)

        cfg, data = self.config, task.data
        tokens = tokenize(ctx.tokenizer, tuple(class_prompts(data.classnames, data.templates))).to(ctx.device)
        scale = logit_scale(ctx.model)
        smoothing = ctx.train_config.label_smoothing

        def task_loss(weights: dict[str, torch.Tensor]) -> torch.Tensor:
            images, texts = functional_call(self.encoders, {f"model.{n}": w for n, w in weights.items()},
                                            (batch.images, tokens))
            class_feats = classifier_from_outputs(texts.float().view(len(data.classnames), len(data.templates), -1))
            logits = cosine_logits(F.normalize(images.float(), dim=-1), class_feats, scale)
            return F.cross_entropy(logits, batch.labels, label_smoothing=smoothing)

        return mt.paper_loss(task_loss, self.live_weights(ctx), self.zeroshot, self.finetuned, cfg.lam, cfg.beta,
                             mt.paper_path_points(cfg.n_alpha)).total

    def report(self) -> dict[str, Any]:
        return {"base": BASE, "variant": self.config.variant, "base_source": dict(self.sources)}

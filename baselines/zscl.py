"""ZSCL (Zheng et al., ICCV 2023): continual fine-tuning that protects zero-shot ability.

Loss per step = CE on the task
  + l2_weight * sum ||theta - theta_start||^2           (theta_start: weights when the task began)
  + distill_weight * (KD image->text + KD text->image)  (teacher: the frozen pretrained model theta_0)
where the distillation runs on a batch of reference images against a bank of reference sentences, as soft
cross-entropy at temperature T scaled by T^2. Every ``ensemble_every`` steps the weights are folded into a running
average that starts from theta_start, ``we <- (n * we + theta) / (n + 1)``; that average is the model kept.

The references are ImageNet images and Conceptual Captions sentences in the paper; here they are inputs:
``reference: synthetic`` draws them from the synthetic world's caption data, ``reference: files`` reads a
folder of images and a text file with one sentence per line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from condu_bench.errors import UserError
from condu_bench.losses import soft_cross_entropy
from condu_bench.method import BaseMethod, Batch, RunContext, TaskInfo
from condu_bench.models.classifier import cosine_logits, image_features, logit_scale

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class ZSCL(BaseMethod):
    """ZSCL: L2 to the task's start, distillation from zero-shot CLIP on reference data, weight ensemble."""

    name: ClassVar[str] = "zscl"

    @dataclass(frozen=True)
    class Config:
        l2_weight: float = 1.0
        distill_weight: float = 1.0
        temperature: float = 2.0
        ref_batch_size: int = 64
        ensemble_every: int = 100  # 0 disables the weight ensemble
        reference: str = "synthetic"  # synthetic | files
        ref_images: int = 2000  # synthetic: how many reference images to draw
        ref_sentences: int = 1000  # size of the sentence bank
        ref_images_dir: str | None = None  # files: a folder searched recursively for images
        ref_sentences_file: str | None = None  # files: one sentence per line

    def setup(self, ctx: RunContext) -> None:
        images, sentences = self.reference_data(ctx)
        self.ref_images = images
        self.ref_tokens = ctx.tokenizer(sentences).to(ctx.device)
        self.teacher = ctx.frozen_copy()  # theta_0
        with torch.no_grad():
            self.teacher_text = F.normalize(self.teacher.encode_text(self.ref_tokens).float(), dim=-1)
        self.generator = torch.Generator().manual_seed(ctx.seed)

    def reference_data(self, ctx: RunContext) -> tuple[list, list[str]]:
        cfg = self.config
        if cfg.reference == "synthetic":
            from condu_bench.synthetic.domains import make_caption_dataset

            # A seed apart from pretraining's (0): held-out pairs of the same kind, as CC is for CLIP.
            data = make_caption_dataset(max(cfg.ref_images, cfg.ref_sentences), seed=1)
            images = [data[i][0] for i in range(cfg.ref_images)]
            return images, list(dict.fromkeys(data.captions))[: cfg.ref_sentences]
        if cfg.reference == "files":
            if not cfg.ref_images_dir or not cfg.ref_sentences_file:
                raise UserError("zscl with reference: files needs method_options.zscl.ref_images_dir and ref_sentences_file")
            folder, text = Path(cfg.ref_images_dir), Path(cfg.ref_sentences_file)
            if not folder.is_dir():
                raise UserError(f"zscl reference images: folder {folder} does not exist (e.g. an ImageNet train folder)")
            if not text.is_file():
                raise UserError(f"zscl reference sentences: {text} does not exist (one sentence per line, e.g. Conceptual Captions)")
            from PIL import Image

            paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[: cfg.ref_images]
            sentences = [line.strip() for line in text.read_text().splitlines() if line.strip()][: cfg.ref_sentences]
            if not paths or not sentences:
                raise UserError(f"zscl reference data is empty: {len(paths)} images in {folder}, {len(sentences)} sentences in {text}")
            return [Image.open(p).convert("RGB") for p in paths], sentences
        raise UserError(f"method_options.zscl.reference must be 'synthetic' or 'files', not {cfg.reference!r}")

    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        self.start = {n: p.detach().clone() for n, p in self.trainable_parameters(ctx.model)}
        self.ensemble = {k: v.detach().clone() for k, v in ctx.model.state_dict().items() if v.is_floating_point()}
        self.ensemble_count = 1

    def reference_batch(self, ctx: RunContext) -> torch.Tensor:
        picks = torch.randint(len(self.ref_images), (self.config.ref_batch_size,), generator=self.generator)
        return torch.stack([ctx.train_transform(self.ref_images[i]) for i in picks.tolist()]).to(ctx.device)

    def training_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        cfg, model = self.config, ctx.model
        loss = self.task_loss(image_features(model, batch.images), batch.labels, task, ctx)
        if cfg.l2_weight:
            loss = loss + cfg.l2_weight * sum(((p - self.start[n]) ** 2).sum() for n, p in self.trainable_parameters(model))
        if cfg.distill_weight:
            images = self.reference_batch(ctx)
            with torch.no_grad():
                teacher = cosine_logits(image_features(self.teacher, images), self.teacher_text, logit_scale(self.teacher))
            student_text = F.normalize(model.encode_text(self.ref_tokens).float(), dim=-1)
            student = cosine_logits(image_features(model, images), student_text, logit_scale(model))
            t = cfg.temperature
            distill = soft_cross_entropy(student, teacher, t) + soft_cross_entropy(student.t(), teacher.t(), t)
            loss = loss + cfg.distill_weight * distill
        return loss

    def after_iteration(self, step: int, task: TaskInfo, ctx: RunContext) -> None:
        every = self.config.ensemble_every
        if every and (step + 1) % every == 0:
            n = self.ensemble_count
            with torch.no_grad():
                for key, value in ctx.model.state_dict().items():
                    if key in self.ensemble:
                        self.ensemble[key].mul_(n).add_(value).div_(n + 1)
            self.ensemble_count = n + 1

    def after_task(self, task: TaskInfo, ctx: RunContext) -> None:
        if self.config.ensemble_every:
            state = ctx.model.state_dict()
            state.update(self.ensemble)
            ctx.model.load_state_dict(state)
        self.start = self.ensemble = None

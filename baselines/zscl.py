"""ZSCL (Zheng et al., ICCV 2023) as its released scripts run it (``mtil/scripts/ZSCL.sh``).

Reference: ``Thunderbeee/ZSCL``, ``mtil/src/models/finetune.py`` and ``helpers.py``. Per step:

  loss = CE (label smoothing of the run)
       + l2_weight * sum ||theta - theta_start||^2        (theta_start: the weights the task started from)
       + KD(image->text) + KD(text->image)                (:mod:`condu_bench.distillation`)

The teacher is frozen zero-shot CLIP (theta_0). The reference images are a shuffled stream over the *whole*
reference image set (ImageNet train in the paper) through the eval transform, batch ``ref_batch_size`` (64, the
training batch); the sentence bank is every sentence of the reference file (Conceptual Captions validation),
encoded once by the teacher and used by teacher and student alike.

Weight ensemble (``--we --avg_freq 100``): a running mean that starts at theta_start; after optimizer step k
(0-based) with ``k % ensemble_every == 0`` the weights are folded in, ``we <- (n * we + theta) / (n + 1)``; at the
end of the task the final weights are folded in once more and the ensemble is the model kept (the next task
starts from it). The reference loops ``iterations + 1`` steps, the last at lr 0, and snapshots at steps 0, 100,
..., 1000; its step-1000 snapshot is the final weights, so for iterations that are a multiple of
``ensemble_every`` (the published setting) this is exactly the reference. Deviation: for other iteration counts
the reference would drop the steps after its last snapshot; here the final weights are always folded in.

Reference data are inputs. ``reference: synthetic`` uses held-out caption pairs of the synthetic world (its
stand-in for ImageNet + CC); ``reference: files`` a folder of images (searched recursively) and a sentence file
(one per line; for ``.tsv`` files the first column, as in CC's ``Validation_GCC-1.1.0-Validation.tsv``),
relative paths resolved against ``data_root``. ``reference: auto`` (default) is synthetic on the synthetic world
and, on real data, an error naming the inputs it needs: a real run never distils on synthetic stand-ins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from condu_bench.distillation import ImageStream, ReferenceDistillation, encode_texts
from condu_bench.errors import UserError
from condu_bench.method import BaseMethod, Batch, RunContext, TaskInfo
from condu_bench.models.classifier import image_features, logit_scale

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG"}
REFERENCES = ("auto", "synthetic", "files")


class ImageFiles:
    """``(PIL image, 0)`` for every image file below a folder, sorted by path, decoded on access."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image, UnidentifiedImageError

        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return image.convert("RGB"), 0
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"zscl reference image {path} cannot be read ({exc}); remove it or fix the folder") from exc


def read_sentences(path: Path) -> list[str]:
    """Every sentence of a reference file: one per line; a ``.tsv`` gives its first column (CC's release:
    caption, url); a ``.csv`` its ``caption`` or ``title`` column (as gather_cc.py writes), else the first."""
    import csv

    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        rows = list(csv.reader(text.splitlines()))
        header = [h.strip().lower() for h in rows[0]] if rows else []
        column = next((header.index(h) for h in ("caption", "title") if h in header), None)
        lines = [row[column or 0] for row in rows[1 if column is not None else 0 :] if row]
    elif path.suffix == ".tsv":
        lines = [line.split("\t", 1)[0] for line in text.splitlines()]
    else:
        lines = text.splitlines()
    return [line.strip() for line in lines if line.strip()]


class ZSCL(BaseMethod):
    """ZSCL: L2 to the task's start, two-way distillation from zero-shot CLIP on reference data, weight ensemble."""

    name: ClassVar[str] = "zscl"

    @dataclass(frozen=True)
    class Config:
        l2_weight: float = 1.0
        image_weight: float = 1.0  # KD image->text
        text_weight: float = 1.0  # KD text->image
        temperature: float = 2.0
        ref_batch_size: int | None = None  # None: the training batch size (64 in the reference)
        ensemble_every: int = 100  # 0 disables the weight ensemble
        reference: str = "auto"  # auto | synthetic | files
        reference_pairs: int = 5000  # synthetic: held-out caption pairs (images and sentences)
        ref_images_dir: str | None = None  # files: e.g. ImageNet/train (relative to data_root)
        ref_sentences_file: str | None = None  # files: e.g. Validation_GCC-1.1.0-Validation.tsv

        def __post_init__(self):
            if self.reference not in REFERENCES:
                raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {self.reference!r}")
            if self.ensemble_every < 0 or self.reference_pairs < 1:
                raise ValueError("ensemble_every must be >= 0 and reference_pairs >= 1")

    def setup(self, ctx: RunContext) -> None:
        images, sentences = self.reference_data(ctx)
        self.ref_images = images
        self.teacher = ctx.frozen_copy()  # theta_0, the same for every task
        self.text_features = encode_texts(self.teacher, ctx.tokenizer(sentences).to(ctx.device))

    def reference_data(self, ctx: RunContext) -> tuple[Any, list[str]]:
        cfg = self.config
        kind = cfg.reference
        if kind == "auto":
            if ctx.synthetic:
                kind = "synthetic"
            elif cfg.ref_images_dir and cfg.ref_sentences_file:
                kind = "files"
            else:
                raise UserError(
                    f"zscl on {ctx.scenario_name or 'real data'} needs its reference data: set "
                    "method_options.zscl.ref_images_dir (a folder of images, e.g. ImageNet/train) and "
                    "method_options.zscl.ref_sentences_file (one sentence per line or a .tsv, e.g. Conceptual Captions "
                    "validation); relative paths are read under data_root. The synthetic stand-ins are never used on real data."
                )
        if kind == "synthetic":
            from condu_bench.synthetic.domains import make_caption_dataset

            # Pairs drawn with a seed apart from pretraining's (0): held out, of the same kind, as ImageNet and CC are for CLIP.
            data = make_caption_dataset(cfg.reference_pairs, seed=1)
            return data, list(dict.fromkeys(data.captions))
        folder, text = self.resolve(cfg.ref_images_dir, ctx), self.resolve(cfg.ref_sentences_file, ctx)
        if folder is None or text is None:
            raise UserError("zscl with reference: files needs method_options.zscl.ref_images_dir and ref_sentences_file")
        if not folder.is_dir():
            raise UserError(f"zscl reference images: folder {folder} does not exist (e.g. an ImageNet train folder)")
        if not text.is_file():
            raise UserError(f"zscl reference sentences: {text} does not exist (one sentence per line, e.g. Conceptual Captions)")
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {s.lower() for s in IMAGE_SUFFIXES})
        sentences = read_sentences(text)
        if not paths or not sentences:
            raise UserError(f"zscl reference data is empty: {len(paths)} images in {folder}, {len(sentences)} sentences in {text}")
        return ImageFiles(paths), sentences

    @staticmethod
    def resolve(path: str | None, ctx: RunContext) -> Path | None:
        if not path:
            return None
        p = Path(path).expanduser()
        return p if p.is_absolute() or not ctx.data_root else Path(ctx.data_root).expanduser() / p

    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        cfg = self.config
        self.start = {n: p.detach().clone() for n, p in self.trainable_parameters(ctx.model)}
        self.ensemble = {k: v.detach().clone() for k, v in ctx.model.state_dict().items() if v.is_floating_point()}
        self.ensemble_count, self.last_snapshot = 1, None
        images = ImageStream(self.ref_images, ctx.eval_transform, cfg.ref_batch_size or ctx.train_config.batch_size,
                             ctx.task_seed(task.index, "zscl/images"))
        self.distiller = ReferenceDistillation(self.teacher, self.text_features, images, cfg.temperature,
                                               cfg.image_weight, cfg.text_weight)

    def training_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        cfg, model = self.config, ctx.model
        loss = self.task_loss(image_features(model, batch.images), batch.labels, task, ctx)
        if cfg.l2_weight:
            loss = loss + cfg.l2_weight * sum(((p - self.start[n]) ** 2).sum() for n, p in self.trainable_parameters(model))
        if cfg.image_weight or cfg.text_weight:
            loss = loss + self.distiller.loss(model, logit_scale(model), ctx.device)
        return loss

    def fold_into_ensemble(self, ctx: RunContext) -> None:
        n = self.ensemble_count
        with torch.no_grad():
            for key, value in ctx.model.state_dict().items():
                if key in self.ensemble:
                    self.ensemble[key].mul_(n).add_(value).div_(n + 1)
        self.ensemble_count = n + 1

    def after_iteration(self, step: int, task: TaskInfo, ctx: RunContext) -> None:
        every = self.config.ensemble_every
        if every and step % every == 0:
            self.fold_into_ensemble(ctx)
            self.last_snapshot = step

    def after_task(self, task: TaskInfo, ctx: RunContext) -> None:
        if self.config.ensemble_every and task.iterations:
            if self.last_snapshot != task.iterations - 1:
                self.fold_into_ensemble(ctx)  # the final weights (the reference's lr-0 last step)
            state = ctx.model.state_dict()
            state.update(self.ensemble)
            ctx.model.load_state_dict(state)
        self.distiller = self.ensemble = self.start = None

"""iCaRL for CLIP as ZSCL's released code computes it with its distillation switched on.

Reference: ``Thunderbeee/ZSCL`` (b96e714), ``mtil/src/models/icarl.py`` (training, ``--method icarl``) and
``mtil/src/dynamic_dataset.py`` (the exemplar memory), run with ``--image_loss --text_loss``. Per step:

  loss = CE (label smoothing of the run) + KD(image->text) + KD(text->image)

- CE covers only the current task's classes, over its text classifier (first template), as in fine-tuning;
  exemplars never enter it.
- The distillation is :mod:`condu_bench.distillation`'s: the teacher is frozen zero-shot CLIP (theta_0, the same
  for every task); the images are the exemplar memory of the earlier datasets through the *eval* transform, from
  a loader of their own (batch ``ref_batch_size``, default the training batch: 64 in the reference); the texts
  are the current dataset's class names in its first template, encoded once per task by the teacher and used on
  both sides; T = 2, soft cross-entropy scaled by T^2, both directions weighted 1. On the first task the memory
  is empty and the loss is plain CE (the reference trains its first task with plain fine-tuning).
- Memory, a total budget of ``memory_size`` exemplars (10000 in the reference), budgeted per dataset, not per
  class. After task ``t`` (``t`` datasets seen so far) every earlier dataset's list is cut to its first
  ``memory_size // t`` entries (its herding order), and the new dataset's exemplars are its first
  ``memory_size // t`` samples in herding order (:func:`condu_bench.exemplars.herding_order`) over the
  L2-normalised image features, computed by the model just trained on it (eval transform), of its first
  ``max_candidates`` training samples (30000 in the reference).
- Exemplars are kept as indices into each task's training set (its ``TaskData.train``), so the state saved after
  every task is a few int64 tensors plus the dataset names, and a resumed run rebuilds the same memory.
- Inference is the standard zero-shot-style classifier (no nearest-mean-of-exemplars), as in the reference.

Deviations from the reference, all deliberate:

1. Budget (bug fix). The reference gives the new dataset ``memory_size - memory_size // t`` exemplars, so the
   memory outgrows its budget (13333 of 10000 after three datasets); here it gets ``memory_size // t`` and the
   total never exceeds ``memory_size``.
2. Herding (bug fix). The reference picks an index among the features left after ``np.delete`` of the earlier
   picks, but stores the image at that index of the full, undeleted candidate tensor, so from the second pick on
   it stores other images than it selected; here the selected samples are stored.
3. First dataset. The reference keeps the first ``memory_size`` samples of the first dataset in dataset order
   (no herding), so its later cuts keep a dataset-order prefix (class-sorted for folder datasets); here the first
   dataset is herded like every other, so every cut keeps a herding prefix. ``herd_first_task=false`` restores the
   reference's choice.
4. Memory loader. The reference iterates the memory in fixed concatenated order (datasets in the order seen),
   cycling; here the memory batches are reshuffled every pass with a generator derived from (run seed, task), so
   a resumed run draws the same batches.
5. The released ``mtil/scripts/icarl.sh`` runs 5 iterations per task without ``--image_loss`` / ``--text_loss``
   (and without label smoothing), i.e. a debug run of plain fine-tuning; that setting is not followed: the
   distillation is on and the iterations, learning rates and label smoothing are the benchmark's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from condu_bench.distillation import ImageStream, ReferenceDistillation, encode_texts, prompt_tokens
from condu_bench.exemplars import herding_order
from condu_bench.method import BaseMethod, Batch, RunContext, TaskInfo
from condu_bench.models.classifier import image_features, logit_scale


class ICaRL(BaseMethod):
    """iCaRL: cross-entropy plus two-way distillation from zero-shot CLIP on a herded exemplar memory."""

    name: ClassVar[str] = "icarl"

    @dataclass(frozen=True)
    class Config:
        memory_size: int = 10000  # total exemplars over all datasets seen
        max_candidates: int = 30000  # only a dataset's first training samples are herded
        herd_first_task: bool = True  # false: the first dataset keeps its first samples (the reference)
        image_weight: float = 1.0  # KD image->text
        text_weight: float = 1.0  # KD text->image
        temperature: float = 2.0
        ref_batch_size: int | None = None  # None: the training batch size (64 in the reference)
        feature_batch_size: int = 256  # batch of the feature pass that herding reads

        def __post_init__(self):
            if self.memory_size < 0 or self.max_candidates < 1 or self.feature_batch_size < 1:
                raise ValueError("memory_size must be >= 0, max_candidates and feature_batch_size >= 1")
            if self.temperature <= 0:
                raise ValueError(f"temperature must be positive, got {self.temperature}")
            if self.ref_batch_size is not None and self.ref_batch_size < 1:
                raise ValueError(f"ref_batch_size must be >= 1, got {self.ref_batch_size}")

    def __init__(self, config: Any = None):
        super().__init__(config)
        # One entry per task finished, in order: (dataset name, int64 indices into its training set).
        self.memory: list[tuple[str, torch.Tensor]] = []
        self.distiller: ReferenceDistillation | None = None

    def setup(self, ctx: RunContext) -> None:
        self.teacher = ctx.frozen_copy()  # theta_0, the same for every task

    # ------------------------------------------------------------------ memory

    def memory_dataset(self, ctx: RunContext) -> Any:
        """The exemplars of every earlier dataset, concatenated in the order seen, as ``(image, label)`` pairs."""
        from torch.utils.data import ConcatDataset, Subset

        seen = ctx.tasks_seen
        if [t.name for t in seen] != [name for name, _ in self.memory]:
            raise RuntimeError(f"icarl: the memory lists {[n for n, _ in self.memory]} but the run has seen "
                               f"{[t.name for t in seen]}")
        parts = [Subset(task.train, indices.tolist()) for task, (_, indices) in zip(seen, self.memory) if len(indices)]
        return ConcatDataset(parts) if parts else None

    @torch.no_grad()
    def candidate_features(self, dataset: Any, count: int, ctx: RunContext) -> torch.Tensor:
        """L2-normalised image features (eval transform, current model) of the first ``count`` samples."""
        from torch.utils.data import DataLoader

        from condu_bench.training.evaluate import Transformed

        loader = DataLoader(Transformed(dataset, ctx.eval_transform, count), batch_size=self.config.feature_batch_size,
                            shuffle=False, num_workers=0)
        model = ctx.model
        was_training = model.training
        model.eval()
        parts = []
        with ctx.autocast():
            for images, _ in loader:
                parts.append(image_features(model, images.to(ctx.device)))
        model.train(was_training)
        return torch.cat(parts)

    def update_memory(self, task: TaskInfo, ctx: RunContext) -> None:
        cfg = self.config
        t = len(self.memory) + 1
        per_dataset = cfg.memory_size // t
        self.memory = [(name, indices[:per_dataset]) for name, indices in self.memory]
        train = task.data.train
        candidates = min(len(train), cfg.max_candidates) if train is not None else 0
        count = min(per_dataset, candidates)
        if count == 0:
            chosen: list[int] = []
        elif t == 1 and not cfg.herd_first_task:
            chosen = list(range(count))
        else:
            chosen = herding_order(self.candidate_features(train, candidates, ctx), count)
        self.memory.append((task.name, torch.tensor(chosen, dtype=torch.int64)))

    # ------------------------------------------------------------------ training

    def before_task(self, task: TaskInfo, ctx: RunContext) -> None:
        cfg = self.config
        self.distiller = None
        exemplars = self.memory_dataset(ctx)
        if exemplars is None or not (cfg.image_weight or cfg.text_weight):
            return  # the first task (empty memory): plain cross-entropy
        texts = encode_texts(self.teacher, self.distillation_tokens(task, ctx).to(ctx.device))
        # iCaRL's name, not self.name: a variant (a subclass) draws the same exemplar batches
        images = ImageStream(exemplars, ctx.eval_transform, cfg.ref_batch_size or ctx.train_config.batch_size,
                             ctx.task_seed(task.index, f"{ICaRL.name}/memory"))
        self.distiller = ReferenceDistillation(self.teacher, texts, images, cfg.temperature, cfg.image_weight, cfg.text_weight)

    def distillation_tokens(self, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        """The texts the exemplars are distilled over: the current dataset's class names in its first template."""
        return prompt_tokens(ctx.tokenizer, task.data.classnames, task.data.templates[0])

    def training_loss(self, batch: Batch, task: TaskInfo, ctx: RunContext) -> torch.Tensor:
        loss = self.task_loss(image_features(ctx.model, batch.images), batch.labels, task, ctx)
        if self.distiller is not None:
            loss = loss + self.distiller.loss(ctx.model, logit_scale(ctx.model), ctx.device)
        return loss

    def after_task(self, task: TaskInfo, ctx: RunContext) -> None:
        self.distiller = None
        self.update_memory(task, ctx)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"datasets": [name for name, _ in self.memory]}
        state.update({f"exemplars/{i}": indices.to(torch.int64).cpu().contiguous() for i, (_, indices) in enumerate(self.memory)})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = state.get("datasets", [])
        self.memory = [(name, state[f"exemplars/{i}"].to(torch.int64).cpu()) for i, name in enumerate(names)]

    def report(self) -> dict[str, Any]:
        return {"exemplars": {name: len(indices) for name, indices in self.memory}}

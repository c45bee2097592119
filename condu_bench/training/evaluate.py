"""Top-1 accuracy of a model (or a method's own inference) on each evaluated dataset, computed per dataset.

Evaluation images go through the deterministic eval transform once; small sets are kept as tensors in
memory so that the T evaluations after T training steps do not decode them T times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from condu_bench.data.task import TaskData
from condu_bench.method import RunContext
from condu_bench.models.classifier import cosine_logits, image_features, text_classifier

CACHE_LIMIT_BYTES = 1 << 30  # keep transformed eval sets in memory up to 1 GiB in total


class Transformed(Dataset):
    """``(PIL image, label)`` pairs -> ``(tensor, label)`` through ``transform``, optionally capped."""

    def __init__(self, dataset: Any, transform: Any, limit: int | None = None):
        self.dataset, self.transform = dataset, transform
        self.length = len(dataset) if limit is None else min(limit, len(dataset))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return self.transform(image), label


@dataclass
class EvalSet:
    task: TaskData
    loader: DataLoader | None = None
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def batches(self, batch_size: int):
        if self.images is not None:
            for i in range(0, len(self.images), batch_size):
                yield self.images[i : i + batch_size], self.labels[i : i + batch_size]
        else:
            yield from self.loader


class Evaluator:
    def __init__(self, ctx: RunContext, batch_size: int, num_workers: int = 0, max_per_dataset: int | None = None, progress: bool = True):
        self.ctx, self.batch_size, self.num_workers = ctx, batch_size, num_workers
        self.max_per_dataset, self.progress = max_per_dataset, progress
        self._sets: dict[int, EvalSet] = {}
        self._cached_bytes = 0
        self.cache_limit_bytes = CACHE_LIMIT_BYTES

    def eval_set(self, task: TaskData) -> EvalSet:
        key = id(task)
        if key not in self._sets:
            data = Transformed(task.test, self.ctx.eval_transform, self.max_per_dataset)
            loader = DataLoader(data, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                                pin_memory=self.ctx.device.type == "cuda")
            entry = EvalSet(task, loader=loader)
            first = data[0][0] if len(data) else None
            estimate = 0 if first is None else first.numel() * first.element_size() * len(data)
            if first is not None and self._cached_bytes + estimate <= self.cache_limit_bytes:
                images, labels = zip(*(batch for batch in loader))
                entry.images, entry.labels = torch.cat(images), torch.cat(labels)
                self._cached_bytes += estimate
            self._sets[key] = entry
        return self._sets[key]

    @torch.no_grad()
    def accuracy(self, method: Any, task: TaskData, task_known: bool = True, label_space: Sequence[TaskData] | None = None) -> float:
        """Percent top-1 on ``task``'s test set.

        ``task_known=False`` (task-agnostic) classifies over the union of ``label_space``'s classes and counts a
        hit only for the right class of the right dataset.
        """
        ctx = self.ctx
        model = ctx.model.eval()
        space = [task] if task_known else list(label_space or [task])
        offset = sum(t.num_classes for t in space[: space.index(task)])
        classifier = None
        correct = total = 0
        with ctx.autocast():
            for images, labels in self.eval_set(task).batches(self.batch_size):
                images = images.to(ctx.device, non_blocking=True)
                labels = labels.to(ctx.device, non_blocking=True) + offset
                logits = method.logits(images, task if task_known else None, ctx)
                if logits is None:
                    if classifier is None:
                        classifier = torch.cat([
                            text_classifier(model, ctx.tokenizer, t.classnames, t.templates, ctx.device) for t in space
                        ])
                    logits = cosine_logits(image_features(model, images), classifier)
                correct += (logits.argmax(dim=-1) == labels).sum().item()
                total += labels.numel()
        if total == 0:
            raise ValueError(f"dataset {task.name!r} has an empty test split")
        return 100.0 * correct / total

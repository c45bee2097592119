"""Top-1 accuracy of a model (or a method's own inference) on each evaluated dataset, computed per dataset.

Evaluation images are decoded once: datasets that name their images (files, arrays) through the on-disk decoded-image
cache (:mod:`condu_bench.datasets.decoded_cache`, shared by every run), the others (generated in memory) as tensors
kept in memory up to 1 GiB. Methods with a frozen image tower get the image features of each split computed once per
run (:mod:`condu_bench.training.feature_cache`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from condu_bench.data.task import TaskData
from condu_bench.datasets.decoded_cache import DecodedImages, dataset_identity, open_or_build, split_transform
from condu_bench.method import RunContext
from condu_bench.models.classifier import cosine_logits, image_features, text_classifier
from condu_bench.training.feature_cache import FeatureCache

FEATURES_DIR = "features"  # image features of frozen image towers, beside the decoded splits they were computed from

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
    key: tuple  # names the split's images and transform within this evaluator (feature-cache key)
    loader: DataLoader | None = None
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    decoded: DecodedImages | None = None

    def batches(self, batch_size: int, device: torch.device | None = None):
        if self.decoded is not None:
            yield from self.decoded.batches(batch_size, device)
        elif self.images is not None:
            for i in range(0, len(self.images), batch_size):
                yield self.images[i : i + batch_size], self.labels[i : i + batch_size]
        else:
            yield from self.loader


class Evaluator:
    """``decoded_cache_dir``: where decoded evaluation images live on disk (None: decode in memory only);
    ``feature_cache``: reuse image features of frozen-image-tower methods across evaluations."""

    def __init__(self, ctx: RunContext, batch_size: int, num_workers: int = 0, max_per_dataset: int | None = None,
                 progress: bool = True, decoded_cache_dir: str | Path | None = None, feature_cache: bool = True):
        self.ctx, self.batch_size, self.num_workers = ctx, batch_size, num_workers
        self.max_per_dataset, self.progress = max_per_dataset, progress
        self.decoded_cache_dir = None if decoded_cache_dir is None else Path(decoded_cache_dir)
        features_on_disk = None if self.decoded_cache_dir is None else self.decoded_cache_dir / FEATURES_DIR
        context = f"{ctx.device.type}|{getattr(ctx.train_config, 'precision', None)}|batch {batch_size}"
        self.features = FeatureCache(features_on_disk, context) if feature_cache else None
        self._sets: dict[int, EvalSet] = {}
        self._cached_bytes = 0
        self.cache_limit_bytes = CACHE_LIMIT_BYTES

    def eval_set(self, task: TaskData) -> EvalSet:
        key = id(task)
        if key not in self._sets:
            self._sets[key] = self._decoded_set(task) or self._memory_set(task)
        return self._sets[key]

    def _decoded_set(self, task: TaskData) -> EvalSet | None:
        if self.decoded_cache_dir is None:
            return None
        split = split_transform(self.ctx.eval_transform)
        identity = None if split is None else dataset_identity(task.test, self.max_per_dataset)
        if identity is None:
            return None
        decoded = open_or_build(task.test, split, identity, self.decoded_cache_dir, name=task.name,
                                limit=self.max_per_dataset, num_workers=self.num_workers)
        return EvalSet(task, ("decoded", decoded.directory.name), decoded=decoded)

    def _memory_set(self, task: TaskData) -> EvalSet:
        data = Transformed(task.test, self.ctx.eval_transform, self.max_per_dataset)
        loader = DataLoader(data, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                            pin_memory=self.ctx.device.type == "cuda")
        entry = EvalSet(task, ("memory", id(task)), loader=loader)
        first = data[0][0] if len(data) else None
        estimate = 0 if first is None else first.numel() * first.element_size() * len(data)
        if first is not None and self._cached_bytes + estimate <= self.cache_limit_bytes:
            images, labels = zip(*(batch for batch in loader))
            entry.images, entry.labels = torch.cat(images), torch.cat(labels)
            self._cached_bytes += estimate
        return entry

    @torch.no_grad()
    def accuracy(self, method: Any, task: TaskData, task_known: bool = True, label_space: Sequence[TaskData] | None = None) -> float:
        """Percent top-1 on ``task``'s test set.

        ``task_known=False`` (task-agnostic) withholds the task from the method and classifies over the classes of
        ``label_space`` (``task`` alone, or several datasets concatenated: a hit is then the right class of the right
        dataset; the scenario's ``label_space`` option decides which).
        """
        ctx = self.ctx
        model = ctx.model.eval()
        space = [task] if task_known else list(label_space or [task])
        offset = sum(t.num_classes for t in space[: space.index(task)])
        classifier = None
        correct = total = 0
        eval_set = self.eval_set(task)
        frozen = self.features is not None and getattr(method, "frozen_image_tower", False)
        with ctx.autocast():
            if frozen:
                def compute():
                    for images, labels in eval_set.batches(self.batch_size, ctx.device):
                        yield image_features(model, images.to(ctx.device, non_blocking=True)), labels

                batches = self.features.batches(eval_set.key, model, compute)
            else:
                batches = eval_set.batches(self.batch_size, ctx.device)
            for index, (inputs, labels) in enumerate(batches):
                inputs = inputs.to(ctx.device, non_blocking=True)
                labels = labels.to(ctx.device, non_blocking=True) + offset
                target = task if task_known else None
                ctx.eval_batch = None if self.features is None else (eval_set.key, self.batch_size, index)
                try:
                    logits = (method.logits_from_features(inputs, target, ctx) if frozen
                              else method.logits(inputs, target, ctx))
                finally:
                    ctx.eval_batch = None
                if logits is None:
                    if classifier is None:
                        classifier = torch.cat([
                            text_classifier(model, ctx.tokenizer, t.classnames, t.templates, ctx.device) for t in space
                        ])
                    feats = inputs if frozen else image_features(model, inputs)
                    logits = cosine_logits(feats, classifier)
                correct += (logits.argmax(dim=-1) == labels).sum().item()
                total += labels.numel()
        if total == 0:
            raise ValueError(f"dataset {task.name!r} has an empty test split")
        return 100.0 * correct / total

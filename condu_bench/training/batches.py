"""Where a task's training batches come from: reshuffled epochs without end, in an order fixed by a seed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, default_collate

#: fixed items are kept in memory up to this many bytes (per stream of batches); beyond it they are read per batch
KEPT_BYTES_LIMIT = 1 << 30


class _Positions(Dataset):
    """Item ``i`` is ``i``: a loader over it yields index batches in exactly the order (and with exactly the random
    draws) of the same loader over the real dataset."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index


class ReadOnce:
    """Batches of a dataset whose items never change (a deterministic transform), each item read and transformed
    the first time a batch asks for it and kept: the image tensors in one preallocated tensor, the targets as read.
    ``create`` gives None when the images would take more than :data:`KEPT_BYTES_LIMIT` (judged from the first
    item)."""

    def __init__(self, dataset: Any, first: tuple):
        self.dataset = dataset
        self.images = torch.empty((len(dataset), *first[0].shape), dtype=first[0].dtype)
        self.targets: list[Any] = [None] * len(dataset)
        self.unread = set(range(1, len(dataset)))
        self.images[0], self.targets[0] = first[0], first[1]

    @classmethod
    def create(cls, dataset: Any) -> ReadOnce | None:
        first = dataset[0]
        image = first[0]
        if not torch.is_tensor(image) or image.element_size() * image.numel() * len(dataset) > KEPT_BYTES_LIMIT:
            return None
        return cls(dataset, first)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The images and targets at ``index``, batched as the loader's default collate batches them."""
        positions = index.tolist()
        for i in self.unread.intersection(positions):
            item = self.dataset[i]
            self.images[i], self.targets[i] = item[0], item[1]
        self.unread.difference_update(positions)
        targets = tuple(self.targets[i] for i in positions)  # a tuple, as the loader collates one field of its items
        return self.images[index], default_collate(targets)


def endless_batches(dataset: Any, batch_size: int, seed: int, num_workers: int, pin: bool,
                    fixed_items: bool = False) -> Iterator[tuple]:
    """Reshuffled epochs without end; the order depends only on ``seed``.

    ``fixed_items``: reading an item gives the same tensor every time (a deterministic transform, such as the eval
    transform). Without loader workers each such item is then read once and kept (:class:`ReadOnce`): the same
    batches, in the same order and after the same random draws as the loader's (which still orders them), without
    a transform per item and step.
    """
    generator = torch.Generator().manual_seed(seed)

    def loader(source: Any, workers: int, pin_memory: bool) -> DataLoader:
        return DataLoader(
            source,
            batch_size=batch_size,
            sampler=RandomSampler(source, generator=generator),
            num_workers=workers,
            pin_memory=pin_memory,
            drop_last=len(dataset) >= batch_size,
            persistent_workers=workers > 0,
        )

    kept = ReadOnce.create(dataset) if fixed_items and num_workers == 0 and len(dataset) else None
    if kept is not None:
        positions = loader(_Positions(len(dataset)), 0, False)
        while True:
            yield from (kept.batch(index) for index in positions)
    batches = loader(dataset, num_workers, pin)
    while True:
        yield from batches

"""Distillation on a reference stream, as ZSCL's released code computes it for ZSCL, LwF and LwF-VR.

Reference: ``Thunderbeee/ZSCL``, ``mtil/src/models/finetune.py`` (the ``--image_loss`` / ``--text_loss`` terms)
and ``mtil/src/models/helpers.py`` (the soft cross-entropy). One step of it:

- a batch of reference images comes from its own shuffled loader (not the task batch), through the *eval*
  transform;
- a fixed bank of texts is encoded once by the frozen teacher; **both** teacher and student score the images
  against these teacher text features, so only the student's image tower is distilled;
- logits are ``s * cos`` with ``s`` the student's ``exp(logit_scale)`` on both sides;
- loss = soft cross-entropy image->text (rows: images, softmax over texts) + soft cross-entropy text->image
  (the transposed logits: rows: texts, softmax over the batch's images), each at temperature T scaled by T^2.

The three methods differ only in the teacher, the images and the texts (see each plugin).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from condu_bench.losses import soft_cross_entropy
from condu_bench.models.classifier import class_prompts, cosine_logits, image_features


class ImageStream:
    """Endless, reshuffled batches of ``transform(image)`` from a dataset of ``(image, label)`` pairs.

    The order is a pure function of ``seed``; methods derive it from (run seed, task), so a run resumed at a task
    boundary draws the same batches as an uninterrupted one. ``transform`` is deterministic (the methods pass the eval
    transform, as the references do), so a set that fits in memory is transformed once.
    """

    def __init__(self, dataset: Any, transform: Any, batch_size: int, seed: int, num_workers: int = 0):
        from condu_bench.training.evaluate import Transformed
        from condu_bench.training.batches import endless_batches

        if len(dataset) == 0:
            raise ValueError("the reference image set is empty")
        items = Transformed(dataset, transform)
        self._batches: Iterator[tuple] = endless_batches(items, batch_size, seed, num_workers, pin=False, fixed_items=True)

    def next(self, device: torch.device) -> torch.Tensor:
        return next(self._batches)[0].to(device, non_blocking=True)


@torch.no_grad()
def encode_texts(model: torch.nn.Module, tokens: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """L2-normalised text features of ``tokens`` (no gradient), in chunks."""
    parts = [model.encode_text(tokens[i : i + chunk]) for i in range(0, len(tokens), chunk)]
    return F.normalize(torch.cat(parts).float(), dim=-1)


def random_token_sequences(tokenizer: Any, count: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """LwF-VR's ``virtual_vocab``: ``count`` sequences of ``length`` token ids drawn uniformly from the whole
    vocabulary, each framed by the start and end tokens and zero-padded to the tokenizer's context length."""
    vocab = len(tokenizer.encoder)
    context = tokenizer.context_length
    if length + 2 > context:
        raise ValueError(f"{length} random tokens do not fit the context length {context} with start and end tokens")
    tokens = torch.zeros(count, context, dtype=torch.long)
    tokens[:, 0] = tokenizer.sot_token_id
    tokens[:, 1 : length + 1] = torch.randint(0, vocab, (count, length), generator=generator)
    tokens[:, length + 1] = tokenizer.eot_token_id
    return tokens


def prompt_tokens(tokenizer: Any, classnames: Sequence[str], template: str) -> torch.Tensor:
    return tokenizer(class_prompts(classnames, [template]))


class ReferenceDistillation:
    """The two-directional distillation of a student towards ``teacher`` on ``images`` against ``text_features``."""

    def __init__(self, teacher: torch.nn.Module, text_features: torch.Tensor, images: ImageStream,
                 temperature: float = 2.0, image_weight: float = 1.0, text_weight: float = 1.0):
        self.teacher, self.text_features, self.images = teacher, text_features, images
        self.temperature, self.image_weight, self.text_weight = temperature, image_weight, text_weight

    def loss(self, student: torch.nn.Module, scale: torch.Tensor | float, device: torch.device) -> torch.Tensor:
        images = self.images.next(device)
        with torch.no_grad():
            teacher_logits = cosine_logits(image_features(self.teacher, images), self.text_features, scale)
        student_logits = cosine_logits(image_features(student, images), self.text_features, scale)
        return self.loss_from_logits(student_logits, teacher_logits)

    def loss_from_logits(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        loss = student_logits.new_zeros(())
        if self.image_weight:
            loss = loss + self.image_weight * soft_cross_entropy(student_logits, teacher_logits, t)
        if self.text_weight:
            loss = loss + self.text_weight * soft_cross_entropy(student_logits.t(), teacher_logits.t(), t)
        return loss

"""Zero-shot text classifiers: the one place class names and templates become class embeddings.

Per class: the mean of the L2-normalised text embeddings over the templates, re-normalised.
Logits are ``s * cos(image, class)`` with ``s = exp(logit_scale)`` of the model, as the reference code computes
them; for OpenAI CLIP ``s`` is 100 (the clamp it was trained to), which is the protocol's ``100 * cos``. A small
model pretrained here has a smaller learned ``s``, and scoring it at 100 would make its training loss needlessly
sharp. Evaluation takes the argmax, which no positive scale changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F

LOGIT_SCALE = 100.0


def class_prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Prompts ordered class-major: all templates of class 0, then class 1, ..."""
    return [template.format(name) for name in classnames for template in templates]


def text_classifier(
    model: torch.nn.Module,
    tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str],
    device: torch.device | str = "cpu",
    chunk: int = 1024,
) -> torch.Tensor:
    """(num_classes, dim) normalised class embeddings. Differentiable when grad is enabled (training)."""
    return classifier_from_outputs(class_text_outputs(model, tokenizer, classnames, templates, device, chunk))


def class_text_outputs(
    model: torch.nn.Module,
    tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str],
    device: torch.device | str = "cpu",
    chunk: int = 1024,
) -> torch.Tensor:
    """(num_classes, num_templates, dim) text-encoder outputs of every class prompt, not normalised."""
    tokens = tokenize(tokenizer, tuple(class_prompts(classnames, templates))).to(device)
    parts = [model.encode_text(tokens[i : i + chunk]) for i in range(0, len(tokens), chunk)]
    return torch.cat(parts).float().view(len(classnames), len(templates), -1)


def classifier_from_outputs(outputs: torch.Tensor) -> torch.Tensor:
    """The classifier of :func:`text_classifier` from :func:`class_text_outputs`: per class the mean of the normalised
    outputs over the templates, re-normalised."""
    return F.normalize(F.normalize(outputs, dim=-1).mean(dim=1), dim=-1)


@lru_cache(maxsize=256)
def tokenize(tokenizer, prompts: tuple[str, ...]) -> torch.Tensor:
    """Token ids of ``prompts``, cached: training losses encode the same class prompts at every step."""
    return tokenizer(list(prompts))


def image_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return F.normalize(model.encode_image(images).float(), dim=-1)


def logit_scale(model: torch.nn.Module) -> torch.Tensor:
    """The model's learned temperature ``exp(logit_scale)``, never trained (the methods exclude it)."""
    return model.logit_scale.detach().exp().clamp(max=LOGIT_SCALE)


def cosine_logits(image_feats: torch.Tensor, classifier: torch.Tensor, scale: torch.Tensor | float = LOGIT_SCALE) -> torch.Tensor:
    return scale * image_feats @ classifier.t()

"""Zero-shot text classifiers: the one place class names and templates become class embeddings.

Per class: the mean of the L2-normalised text embeddings over the templates, re-normalised.
Logits are ``100 * cos(image, class)`` (the protocol fixes 100 rather than the learned scale).
"""

from __future__ import annotations

from collections.abc import Sequence

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
    prompts = class_prompts(classnames, templates)
    tokens = tokenizer(prompts).to(device)
    parts = [model.encode_text(tokens[i : i + chunk]) for i in range(0, len(tokens), chunk)]
    embeddings = F.normalize(torch.cat(parts).float(), dim=-1)
    per_class = embeddings.view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1)


def image_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return F.normalize(model.encode_image(images).float(), dim=-1)


def cosine_logits(image_feats: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    return LOGIT_SCALE * image_feats @ classifier.t()

"""Distribution-discriminative task selection (MoE-Adapters' DDAS): one small autoencoder per learned task,
trained to reconstruct that task's frozen image features; a test input goes to the task whose autoencoder
reconstructs it best, or to the pretrained model (``ZERO_SHOT``) when even the best error exceeds a threshold.

Features enter the autoencoders through a sigmoid, and the decoder ends in one, as the reference does with its
frozen AlexNet features; the error is the mean squared error over feature entries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ZERO_SHOT = -1
GRANULARITIES = ("batch", "image")
SELECTOR_FEATURES = ("clip", "alexnet")  # what the autoencoders reconstruct: CLIP's embeddings or AlexNet's conv5 map


class FeatureAutoencoder(nn.Module):
    """``sigmoid(W_d relu(W_e x + b_e) + b_d)`` with a ``code_dim`` bottleneck."""

    def __init__(self, input_dim: int, code_dim: int = 100):
        super().__init__()
        self.encoder = nn.Linear(input_dim, code_dim)
        self.decoder = nn.Linear(code_dim, input_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(F.relu(self.encoder(x))))


def selector_inputs(features: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(features.float())


def reconstruction_errors(autoencoders: Sequence[nn.Module], inputs: torch.Tensor) -> torch.Tensor:
    """``(n, T)``: each input's mean squared reconstruction error under each task's autoencoder."""
    return torch.stack([((ae(inputs) - inputs) ** 2).mean(dim=1) for ae in autoencoders], dim=1)


def select_tasks(errors: torch.Tensor, threshold: float, granularity: str = "batch") -> torch.Tensor:
    """Per input, the index of the best-reconstructing task, or ``ZERO_SHOT`` when its error exceeds ``threshold``.

    ``batch`` (the reference) decides once for the whole batch on the batch-mean error; ``image`` per input.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    scores = errors.mean(dim=0, keepdim=True) if granularity == "batch" else errors
    best, task = scores.min(dim=1)
    task = torch.where(best > threshold, torch.full_like(task, ZERO_SHOT), task)
    return task.expand(len(errors)) if granularity == "batch" else task


def train_autoencoder(autoencoder: nn.Module, batches: Iterator[tuple[torch.Tensor, int]], steps: int, lr: float,
                      weight_decay: float, decay_epochs: int) -> float:
    """Adam on the reconstruction MSE for ``steps`` steps of ``(inputs, epoch)`` batches; the learning rate is
    ``lr * 0.1 ** (epoch // decay_epochs)`` (the reference's step decay). Returns the last loss."""
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=lr, weight_decay=weight_decay)
    loss = torch.zeros(())
    autoencoder.train()
    for _ in range(steps):
        inputs, epoch = next(batches)
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.1 ** (epoch // decay_epochs)
        loss = F.mse_loss(autoencoder(inputs), inputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    autoencoder.eval()
    return float(loss.detach())

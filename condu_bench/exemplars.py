"""Exemplar selection for rehearsal methods.

``herding_order`` is iCaRL's herding (Rebuffi et al., CVPR 2017, Algorithm 4): greedily pick the samples whose
running mean stays closest to the mean of all samples. Callers pass the features they want matched (iCaRL and
ZSCL's ``mtil/src/dynamic_dataset.py`` use L2-normalised image features; the mean itself is not renormalised).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def herding_order(features: torch.Tensor, count: int) -> list[int]:
    """The first ``count`` rows of ``features`` (N x D) in herding order, without repetition.

    With ``mu`` the mean of all rows and ``S`` the sum of the ``k`` rows picked so far, step ``k`` (0-based) picks
    the remaining row ``i`` minimising ``||mu - (S + f_i) / (k + 1)||^2``; the first pick is the row nearest the
    mean. Ties go to the lowest index (as ``numpy.argmin`` over the remaining rows in their original order).
    ``count`` is clipped to N. Computed in float64 on the features' device, in O(count * N * D) time and O(N * D)
    memory: the squared distance expands into dot products with ``mu`` and ``S`` that are updated per pick.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be N x D, got shape {tuple(features.shape)}")
    n = features.shape[0]
    count = max(0, min(int(count), n))
    if count == 0:
        return []
    f = features.detach().to(torch.float64)
    mu = f.mean(dim=0)
    f_mu = f @ mu  # f_i . mu
    f_sq = (f * f).sum(dim=1)  # ||f_i||^2
    f_s = torch.zeros(n, dtype=torch.float64, device=f.device)  # f_i . S
    s_mu = s_sq = 0.0  # S . mu, ||S||^2
    taken = torch.zeros(n, dtype=torch.bool, device=f.device)
    order: list[int] = []
    for k in range(count):
        # ||mu - (S + f_i)/(k+1)||^2 without the constant ||mu||^2:
        #   -2/(k+1) (S.mu + f_i.mu) + (||S||^2 + 2 f_i.S + ||f_i||^2) / (k+1)^2
        m = k + 1
        distance = (s_sq + 2 * f_s + f_sq) / (m * m) - 2 * (s_mu + f_mu) / m
        distance[taken] = float("inf")
        index = int(torch.argmin(distance))
        order.append(index)
        taken[index] = True
        s_mu += float(f_mu[index])
        s_sq += 2 * float(f_s[index]) + float(f_sq[index])
        f_s += f @ f[index]
    return order

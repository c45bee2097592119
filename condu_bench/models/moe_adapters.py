"""Mixture-of-adapters for open_clip's residual blocks: bottleneck adapter experts chosen per sample by noisy
top-k routers, one router per task (MoE-Adapters, Yu et al., CVPR 2024).

Each adapted block computes ``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)) + sum_e g_e(x) * adapter_e(x)``: the
experts run in parallel to the MLP on the post-attention residual (not on ``ln_2(x)``). The gates ``g`` come from
the sequence's first token (the class token of the image tower, the start token of the text tower), so every
token of a sample goes to the same ``top_k`` experts. ``route(model, t)`` selects router ``t`` in every adapted
block; ``route(model, None)`` bypasses the experts, which makes the model exactly the pretrained CLIP.

The adapted blocks keep the pretrained keys; new keys live under ``<block>.moe.`` so a pretrained state dict
loads unchanged (``strict=False``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

ENCODERS = {"both": ("visual.transformer.resblocks", "transformer.resblocks"), "image": ("visual.transformer.resblocks",)}


class BottleneckAdapter(nn.Module):
    """``scale * up(dropout(relu(down(x))))``; ``up`` starts at zero, so a new expert adds nothing."""

    def __init__(self, width: int, bottleneck: int, scale: float, dropout: float):
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        self.scale, self.dropout = scale, dropout
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.dropout(F.relu(self.down(x)), p=self.dropout, training=self.training)
        return self.scale * self.up(hidden)


def cv_squared(x: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation (0 for a single value): small when the entries are equal."""
    if x.numel() <= 1:
        return x.new_zeros(())
    x = x.float()
    return x.var() / (x.mean() ** 2 + 1e-10)


def noisy_top_k_gating(x: torch.Tensor, w_gate: torch.Tensor, w_noise: torch.Tensor, top_k: int, noisy: bool,
                       noise_epsilon: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """Gates ``(n, E)`` with exactly ``top_k`` non-zero entries per row summing to 1, and the expert load ``(E,)``.

    Shazeer et al. (2017): logits ``x W_g`` plus, when ``noisy``, Gaussian noise of std ``softplus(x W_n) + eps``;
    softmax over the top-k logits. With noise the load is the differentiable probability of each expert being in
    the top k; without it, the count of samples routed to it.
    """
    clean = x @ w_gate.to(x)
    experts = clean.shape[1]
    if noisy:
        std = F.softplus(x @ w_noise.to(x)) + noise_epsilon
        logits = clean + torch.randn_like(clean) * std
    else:
        logits = clean
    top_logits, top_indices = logits.topk(min(top_k + 1, experts), dim=1)
    gates = torch.zeros_like(logits).scatter(1, top_indices[:, :top_k], torch.softmax(top_logits[:, :top_k], dim=1))
    if noisy and top_k < experts:
        normal = torch.distributions.Normal(torch.zeros((), device=x.device), torch.ones((), device=x.device))
        threshold_in = top_logits[:, top_k:top_k + 1]  # the (k+1)-th logit: what an expert in the top k must beat
        threshold_out = top_logits[:, top_k - 1:top_k]  # the k-th: what an expert outside must beat
        is_in = logits > threshold_in
        prob = torch.where(is_in, normal.cdf((clean - threshold_in) / std), normal.cdf((clean - threshold_out) / std))
        load = prob.sum(0)
    else:
        load = (gates > 0).sum(0).to(logits.dtype)
    return gates, load


class MixtureOfAdapters(nn.Module):
    """``num_experts`` adapters and ``num_routers`` (gate, noise) weight pairs, all routers zero at the start."""

    def __init__(self, width: int, num_experts: int, num_routers: int, top_k: int, bottleneck: int,
                 scale: float, dropout: float, noise_epsilon: float = 1e-2, noisy_gating: bool = True):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in 1..{num_experts} (the number of experts), got {top_k}")
        self.experts = nn.ModuleList(BottleneckAdapter(width, bottleneck, scale, dropout) for _ in range(num_experts))
        self.routers = nn.ParameterList(nn.Parameter(torch.zeros(width, num_experts)) for _ in range(num_routers))
        self.noise = nn.ParameterList(nn.Parameter(torch.zeros(width, num_experts)) for _ in range(num_routers))
        self.top_k, self.noise_epsilon, self.noisy_gating = top_k, noise_epsilon, noisy_gating
        self.active: int | None = None  # router in use; None bypasses the experts
        self.usage = torch.zeros(num_experts, dtype=torch.long)  # samples routed to each expert while training
        self.track_balance = False  # keep the load-balancing term of each training forward (it holds the graph)
        self.balance_loss: torch.Tensor | None = None  # cv^2(importance) + cv^2(load) of the last training forward

    def gates(self, first_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.active is None:
            raise RuntimeError("no router is active")
        return noisy_top_k_gating(first_tokens, self.routers[self.active], self.noise[self.active], self.top_k,
                                  self.noisy_gating and self.training, self.noise_epsilon)

    def forward(self, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
        """The experts' contribution for ``x`` (N, L, D) when ``batch_first``, else (L, N, D)."""
        tokens = x if batch_first else x.transpose(0, 1)
        gates, load = self.gates(tokens[:, 0])
        if self.training:
            self.usage += (gates > 0).sum(0).cpu()
            if self.track_balance:
                self.balance_loss = cv_squared(gates.sum(0)) + cv_squared(load)
        out = torch.zeros_like(tokens)
        for e in (gates > 0).any(0).nonzero().flatten().tolist():
            rows = gates[:, e].nonzero().flatten()
            out = out.index_add(0, rows, gates[rows, e, None, None].to(tokens) * self.experts[e](tokens[rows]))
        return out if batch_first else out.transpose(0, 1)


class MoEResidualAttentionBlock(ResidualAttentionBlock):
    """open_clip's block with a ``moe`` (MixtureOfAdapters) in parallel to its MLP."""

    moe: MixtureOfAdapters

    def forward(self, q_x, k_x=None, v_x=None, attn_mask=None):
        k_x = self.ln_1_kv(k_x) if hasattr(self, "ln_1_kv") and k_x is not None else None
        v_x = self.ln_1_kv(v_x) if hasattr(self, "ln_1_kv") and v_x is not None else None
        x = q_x + self.ls_1(self.attention(q_x=self.ln_1(q_x), k_x=k_x, v_x=v_x, attn_mask=attn_mask))
        out = x + self.ls_2(self.mlp(self.ln_2(x)))
        if self.moe.active is None:
            return out
        return out + self.moe(x, self.attn.batch_first)


def add_moe_adapters(model: nn.Module, encoders: str, num_experts: int, num_routers: int, top_k: int,
                     bottleneck: int, scale: float, dropout: float, noise_epsilon: float = 1e-2,
                     noisy_gating: bool = True) -> list[str]:
    """Give every residual block of the chosen towers (``both`` or ``image``) a mixture of adapters, in place.
    Returns the adapted blocks' names."""
    if encoders not in ENCODERS:
        raise ValueError(f"encoders must be one of {', '.join(ENCODERS)}, got {encoders!r}")
    adapted = []
    for prefix in ENCODERS[encoders]:
        blocks = model.get_submodule(prefix)
        for i, block in enumerate(blocks):
            if type(block) is not ResidualAttentionBlock:
                raise ValueError(f"{prefix}.{i} is a {type(block).__name__}, not open_clip's ResidualAttentionBlock")
            width = block.ln_2.normalized_shape[0]
            moe = MixtureOfAdapters(width, num_experts, num_routers, top_k, bottleneck, scale, dropout,
                                    noise_epsilon, noisy_gating).to(block.ln_2.weight.device)
            block.__class__ = MoEResidualAttentionBlock  # same attributes and keys, one more submodule
            block.moe = moe
            adapted.append(f"{prefix}.{i}")
    if not adapted:
        raise ValueError(f"the model has no residual blocks under {ENCODERS[encoders]}")
    return adapted


def mixtures(model: nn.Module) -> Iterator[tuple[str, MixtureOfAdapters]]:
    """``(block name, mixture)`` for every adapted block."""
    for name, module in model.named_modules():
        if isinstance(module, MoEResidualAttentionBlock):
            yield name, module.moe


def route(model: nn.Module, router: int | None) -> None:
    """Select router ``router`` in every adapted block (``None``: the pretrained model, experts bypassed; this also
    drops the last load-balancing terms, so that the model can be deep-copied)."""
    for _, moe in mixtures(model):
        moe.active = router
        if router is None:
            moe.balance_loss = None


def balance_loss(model: nn.Module) -> torch.Tensor:
    """Sum over adapted blocks of the last training forward's load-balancing terms."""
    terms = [moe.balance_loss for _, moe in mixtures(model) if moe.balance_loss is not None]
    return torch.stack(terms).sum() if terms else torch.zeros(())

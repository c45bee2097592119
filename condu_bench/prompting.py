"""Learnable prompt contexts on open_clip's text tower (CoOp and its successors).

A class prompt is ``[SOT] ctx_1 .. ctx_n <class name> . [EOT]`` (class token at the end, one context shared by all
classes, as CoOp's base-to-novel setting): the token embeddings of ``"<init> <class name>."`` with the ``n_ctx``
embeddings after SOT replaced by learnable vectors, which start as the embeddings of ``init`` ("a photo of a").
The text tower then runs exactly as ``encode_text`` does (positional embedding, open_clip's batch-first transformer
with its causal mask, final LayerNorm, pooling at the EOT token, projection), so the untrained prompt gives
``encode_text(tokenize("a photo of a <class>."))``.

- :class:`TextTower`: the text encoder of a ``CLIP`` or ``CustomTextCLIP`` run on given token embeddings.
- :class:`ClassPrompts`: the fixed parts (token ids, SOT embedding, class-name-and-EOT embeddings) for a class list.
- :class:`PromptContext`: the learnable vectors; ``text_features(classnames, shift)`` encodes every class's prompt,
  optionally with an additive per-image shift of the context (CoCoOp).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from condu_bench.errors import UserError

CTX_INIT_STD = 0.02  # CoOp's random initialisation of the context when no init words are given


class TextTower:
    """The pieces of an open_clip text encoder, wherever the model keeps them (``CLIP`` holds them at the top level,
    ``CustomTextCLIP`` in ``model.text``), and the encoder's forward pass from token embeddings on."""

    def __init__(self, model: nn.Module):
        holder = getattr(model, "text", None)
        if holder is None:  # CLIP
            holder, pool_type, eos_id = model, getattr(model, "text_pool_type", "argmax"), getattr(model, "text_eos_id", None)
        else:  # CustomTextCLIP with open_clip's TextTransformer
            if not hasattr(holder, "token_embedding"):
                raise UserError(f"prompt learning needs open_clip's own text transformer; {type(holder).__name__} "
                                "(e.g. a Hugging Face text tower) has no token embedding to put a context into")
            if getattr(holder, "cls_emb", None) is not None or getattr(holder, "use_pad_mask", False):
                raise UserError("prompt learning does not support text towers with an appended class token or a padding "
                                "mask (CoCa-style); use a CLIP architecture")
            pool_type, eos_id = holder.pool_type, getattr(holder, "eos_id", None)
        if pool_type != "argmax":
            raise UserError(f"prompt learning needs a text tower pooled at the EOT token (pool_type 'argmax', as CLIP), "
                            f"not {pool_type!r}")
        self.token_embedding = holder.token_embedding
        self.positional_embedding = holder.positional_embedding
        self.transformer = holder.transformer
        self.ln_final = holder.ln_final
        self.text_projection = holder.text_projection
        self.holder = holder
        self.pool_type, self.eos_id = pool_type, eos_id

    @property
    def width(self) -> int:
        return self.token_embedding.weight.shape[1]

    @torch.no_grad()
    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(token_ids)

    def encode(self, embeddings: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """(N, L, width) token embeddings and their (N, L) ids -> (N, embed_dim) text features, not normalised."""
        from open_clip.transformer import text_global_pool

        cast = self.transformer.get_cast_dtype()
        x = embeddings.to(cast) + self.positional_embedding[: embeddings.shape[1]].to(cast)
        x = self.transformer(x, attn_mask=self.holder.attn_mask)  # batch-first; the module transposes if it is not
        x = self.ln_final(x)
        x = text_global_pool(x, token_ids, self.pool_type, eos_token_id=self.eos_id)
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection if self.text_projection is not None else x


@dataclass
class ClassPrompts:
    """The fixed parts of the prompts of one class list."""

    token_ids: torch.Tensor  # (n_cls, L): "<init or X..X> <name>." as the tokenizer returns it
    prefix: torch.Tensor  # (n_cls, 1, width): SOT
    suffix: torch.Tensor  # (n_cls, L - 1 - n_ctx, width): class name, ".", EOT, padding

    def __len__(self) -> int:
        return self.token_ids.shape[0]


class PromptContext(nn.Module):
    """``n_ctx`` learnable context vectors shared by all classes, inserted after SOT (class token at the end).

    ``init`` names the words whose token embeddings start the context ("a photo of a": 4 tokens, so ``n_ctx`` must be
    4); ``init=""`` draws them from N(0, 0.02) (CoOp's random initialisation; the prompt text is then "X X X X").
    """

    def __init__(self, model: nn.Module, tokenizer: Any, n_ctx: int = 4, init: str = "a photo of a"):
        super().__init__()
        self.tower = TextTower(model)
        self.tokenizer = tokenizer
        device = self.tower.token_embedding.weight.device
        if init:
            ids = tokenizer([init])[0].to(device)
            n_init = int(ids.argmax()) - 1  # tokens between SOT and EOT
            if n_init != n_ctx:
                raise UserError(f"the context init {init!r} is {n_init} tokens, but n_ctx is {n_ctx}; give n_ctx={n_init} "
                                "or another init (an empty init draws the context at random)")
            vectors = self.tower.embed(ids[None])[0, 1 : 1 + n_ctx].detach().clone().float()
        else:
            vectors = torch.randn(n_ctx, self.tower.width, device=device) * CTX_INIT_STD
        self.ctx = nn.Parameter(vectors)
        self.n_ctx, self.prompt_prefix = n_ctx, init or " ".join(["X"] * n_ctx)
        self._prompts: dict[tuple[str, ...], ClassPrompts] = {}

    def class_prompts(self, classnames: Sequence[str]) -> ClassPrompts:
        key = tuple(classnames)
        if key not in self._prompts:
            device = self.ctx.device
            ids = self.tokenizer([f"{self.prompt_prefix} {name}." for name in classnames]).to(device)
            head = self.tokenizer([self.prompt_prefix])[0, : 1 + self.n_ctx].to(device)
            if not torch.equal(ids[:, : 1 + self.n_ctx], head.expand(len(ids), -1)):
                raise UserError(f"the prompt {self.prompt_prefix!r} does not tokenize to the same tokens before every "
                                "class name; use words separated by spaces")
            embedded = self.tower.embed(ids)
            self._prompts[key] = ClassPrompts(ids, embedded[:, :1], embedded[:, 1 + self.n_ctx :])
        return self._prompts[key]

    def embeddings(self, prompts: ClassPrompts, shift: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings of every class prompt: (n_cls, L, width), or (B, n_cls, L, width) with a (B, width) shift
        added to every context vector (CoCoOp's image-conditioned context)."""
        n = len(prompts)
        ctx = self.ctx.to(prompts.prefix.dtype)
        if shift is None:
            return torch.cat([prompts.prefix, ctx.expand(n, -1, -1), prompts.suffix], dim=1)
        shifted = ctx[None] + shift[:, None].to(ctx.dtype)  # (B, n_ctx, width)
        b = shifted.shape[0]
        return torch.cat([prompts.prefix.expand(b, -1, -1, -1), shifted[:, None].expand(-1, n, -1, -1),
                          prompts.suffix.expand(b, -1, -1, -1)], dim=2)

    def text_features(self, classnames: Sequence[str], shift: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised class features: (n_cls, D), or (B, n_cls, D) with a (B, width) context shift."""
        prompts = self.class_prompts(classnames)
        x = self.embeddings(prompts, shift)
        if shift is None:
            return F.normalize(self.tower.encode(x, prompts.token_ids).float(), dim=-1)
        b, n = x.shape[:2]
        ids = prompts.token_ids.repeat(b, 1)
        return F.normalize(self.tower.encode(x.reshape(b * n, *x.shape[2:]), ids).float(), dim=-1).view(b, n, -1)

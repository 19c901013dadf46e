"""Pooling: token hidden states -> one vector per text.

Every method reads a per-example ``pool_mask`` (the attention mask with the instruction/prompt tokens
zeroed), so a prompt is attended to but never pooled, whatever the padding side and prompt lengths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
from torch import nn

PoolingMethod = Literal["mean", "last", "weighted_mean", "first", "latent_attention"]
POOLING_METHODS: tuple[str, ...] = get_args(PoolingMethod)


class LatentAttention(nn.Module):
    """NV-Embed latent-attention pooling: tokens attend to a trainable latent array, an MLP, then a mean.

    Queries are the token states and keys/values the ``num_latents`` latent vectors (NV-Embed, Lee et al.
    2024). Untrained it is a random projection; it is meant to be trained with the encoder.
    """

    def __init__(self, dim: int, num_latents: int = 512, num_heads: int = 8, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.config = {"dim": dim, "num_latents": num_latents, "num_heads": num_heads, "mlp_ratio": mlp_ratio}
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * dim**-0.5)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, hidden: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
        latents = self.latents.unsqueeze(0).expand(hidden.shape[0], -1, -1)
        attended, _ = self.attn(hidden, latents, latents, need_weights=False)
        return _masked_mean(attended + self.mlp(attended), pool_mask)


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


# Each pooling: (hidden (B, T, D) float32, attention_mask (B, T), mask (B, T) of tokens to pool, latent
# module or None) -> (B, D). A new pooling is one function and one entry in POOLINGS (and PoolingMethod).
PoolFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "LatentAttention | None"], torch.Tensor]


def _rows(hidden: torch.Tensor) -> torch.Tensor:
    return torch.arange(hidden.shape[0], device=hidden.device)


def _first(
    hidden: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor, latent: object
) -> torch.Tensor:
    return hidden[_rows(hidden), mask.int().argmax(dim=1)]


def _last(
    hidden: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor, latent: object
) -> torch.Tensor:
    return hidden[_rows(hidden), mask.shape[1] - 1 - mask.int().flip(1).argmax(dim=1)]


def _weighted_mean(
    hidden: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor, latent: object
) -> torch.Tensor:
    # SGPT: weight i for the i-th real token (counted from the first non-pad token, prompt included, as
    # sentence-transformers does), so later tokens, which have seen more context, count more.
    first_real = attention_mask.int().argmax(dim=1, keepdim=True)
    positions = torch.arange(1, mask.shape[1] + 1, device=hidden.device).unsqueeze(0) - first_real
    return _masked_mean(hidden, mask * positions)


def _latent(
    hidden: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor, latent: LatentAttention | None
) -> torch.Tensor:
    if latent is None:
        raise ValueError("latent_attention pooling needs its LatentAttention module")
    return latent(hidden, mask)


POOLINGS: dict[str, PoolFn] = {
    "mean": lambda hidden, attention_mask, mask, latent: _masked_mean(hidden, mask),
    "last": _last,
    "weighted_mean": _weighted_mean,
    "first": _first,
    "latent_attention": _latent,
}


def pool(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    pool_mask: torch.Tensor,
    method: PoolingMethod,
    latent: LatentAttention | None = None,
) -> torch.Tensor:
    """Pool ``hidden`` (batch, seq, dim) over ``pool_mask`` (batch, seq) into float32 (batch, dim).

    A row whose pool mask is empty (an empty text, after its prompt if any) is the zero vector, except for
    ``first``, which takes the first attended token: what sentence-transformers gives for the same saved
    model in each case.
    """
    has_tokens = pool_mask.bool().any(dim=1, keepdim=True)
    mask = torch.where(has_tokens, pool_mask.bool(), attention_mask.bool())
    if method not in POOLINGS:
        raise ValueError(f"unknown pooling {method!r}; expected one of {', '.join(POOLING_METHODS)}")
    pooled = POOLINGS[method](hidden.float(), attention_mask, mask, latent)
    return pooled if method == "first" else pooled * has_tokens

"""GradCache (Gao et al., 2021): a large contrastive batch in the memory of a small one.

The embeddings of all chunks are computed without a graph, the loss is computed over all of them, and on
the backward pass each chunk is run again, with the random state (dropout) and autocast it had the first
time, and back-propagated with its slice of the loss gradient. The parameter gradients equal those of the
full batch, while only one chunk's activations are alive at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Embed = Callable[[Any], torch.Tensor]


def _capture_random() -> tuple[torch.Tensor, list[torch.Tensor]]:
    cuda = [torch.cuda.get_rng_state(d) for d in range(torch.cuda.device_count())]
    return torch.get_rng_state(), cuda


def _restore_random(state: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    for device, device_state in enumerate(cuda):
        torch.cuda.set_rng_state(device_state, device)


class _CachedEmbeddings(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, anchor: torch.Tensor, embed: Embed, chunks: Sequence[Any], device: str
    ) -> torch.Tensor:
        ctx.embed, ctx.chunks, ctx.device = embed, chunks, device
        ctx.autocast = (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.random = []
        outputs = []
        with torch.no_grad():
            for chunk in chunks:
                ctx.random.append(_capture_random())
                outputs.append(embed(chunk))
        return torch.cat(outputs)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, ...]:
        enabled, dtype = ctx.autocast
        after = _capture_random()  # replaying chunks must not change the random stream of the run
        offset = 0
        for chunk, random_state in zip(ctx.chunks, ctx.random, strict=True):
            _restore_random(random_state)
            with torch.enable_grad(), torch.autocast(ctx.device, dtype=dtype, enabled=enabled):
                output = ctx.embed(chunk)
            torch.autograd.backward(output, grad[offset : offset + output.shape[0]].to(output.dtype))
            offset += output.shape[0]
        _restore_random(after)
        return None, None, None, None


def cached_embeddings(embed: Embed, chunks: Sequence[Any], device: torch.device) -> torch.Tensor:
    """``torch.cat([embed(c) for c in chunks])`` whose backward replays one chunk at a time (GradCache)."""
    anchor = torch.zeros((), requires_grad=True)  # gives the output a grad_fn; receives no gradient
    return _CachedEmbeddings.apply(anchor, embed, chunks, device.type)

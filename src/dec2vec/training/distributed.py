"""Data-parallel training over ``torch.distributed``, as launched by ``torchrun`` (or ``accelerate launch``).

Each process trains on its slice of every global batch; contrastive losses see the keys of all processes
(global negatives, gradients flowing back through the gather); gradients are averaged after backward, as
DDP does, without wrapping the model, so the ``Encoder`` keeps calling it directly. One process is alone
in a world of one, and every function here is then a no-op.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def setup() -> None:
    """Join the process group that torchrun describes in the environment (gloo on CPU, NCCL on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """The process that writes logs, checkpoints and saved models."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each process the summed gradient of its own rows.

    Written here because torch's differentiable ``torch.distributed.nn.all_gather`` is deprecated and its
    suggested replacement is a private module.
    """

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor) -> torch.Tensor:
        gathered = [torch.empty_like(rows) for _ in range(world_size())]
        dist.all_gather(gathered, rows.contiguous())
        return torch.cat(gathered)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every process's loss reaches every process's rows
        size = grad.shape[0] // world_size()
        return grad[rank() * size : (rank() + 1) * size]


def gather_with_grad(rows: torch.Tensor) -> torch.Tensor:
    """Every process's ``rows`` (same shape everywhere), concatenated in rank order; differentiable."""
    if world_size() == 1:
        return rows
    return _GatherWithGrad.apply(rows)


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Mean of each gradient over the processes (what DDP's all-reduce does)."""
    if world_size() == 1:
        return
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= world_size()


def mean(value: float) -> float:
    """The mean of a number over the processes (a logged loss, a stop flag)."""
    if world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.item() / world_size()


def gather_objects(value: Any) -> list[Any]:
    """Every process's ``value``, in rank order (RNG states for a checkpoint)."""
    if world_size() == 1:
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out

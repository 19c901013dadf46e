"""Data-parallel training over ``torch.distributed``, as launched by ``torchrun`` (or ``accelerate launch``).

Each process trains on its slice of every global batch; contrastive losses see the keys of all processes
(global negatives, gradients flowing back through the gather); gradients are averaged after backward, as
DDP does, without wrapping the model, so the ``Encoder`` keeps calling it directly. With FSDP on, each
decoder layer's weights, gradients and optimizer state are sharded over the processes instead (torch's
FSDP2 ``fully_shard``). One process is alone in a world of one, and every function here is then a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from dec2vec.backbone import decoder_layers


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
    """Mean of each gradient over the processes (DDP's all-reduce); FSDP has already averaged its shards."""
    if world_size() == 1:
        return
    for param in params:
        if param.grad is not None and not isinstance(param, DTensor):
            dist.all_reduce(param.grad)
            param.grad /= world_size()


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> None:
    """``clip_grad_norm_`` over the whole model, also when some gradients are FSDP shards and some whole.

    torch's version stacks the per-tensor norms, which fails on a mix of DTensors and tensors.
    """
    sharded = [p.grad for p in params if isinstance(p, DTensor) and p.grad is not None]
    whole = [p.grad for p in params if not isinstance(p, DTensor) and p.grad is not None]
    norms = [full_tensor(torch.nn.utils.get_total_norm(group)) for group in (sharded, whole) if group]
    total = float(torch.linalg.vector_norm(torch.stack(norms)))
    if total > max_norm:
        for grad in sharded + whole:
            grad.mul_(max_norm / (total + 1e-6))


def shard_decoder_layers(model: torch.nn.Module) -> None:
    """FSDP: shard each decoder layer's weights (so its gradients and optimizer state) over the processes.

    Embeddings, final norm and LM head stay whole on every process and are averaged like DDP: they are a
    small part of a large model, the ``Encoder`` calls the decoder stack without the LM head (which a
    sharded root module would not allow), and tied input/output embeddings stay tied.
    """
    mesh = init_device_mesh(next(model.parameters()).device.type, (world_size(),))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind an FSDP shard (collective: every process must call it); others as they are."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def local_nbytes(tensor: torch.Tensor) -> int:
    """Bytes this process holds of ``tensor`` (its shard, for an FSDP-sharded one)."""
    return (tensor.to_local() if isinstance(tensor, DTensor) else tensor).nbytes


def shard_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` (whole, as checkpoints hold tensors) sharded the way ``like`` is; unchanged otherwise.

    DTensor ops would also accept the whole tensor (implicit replication), but every process would then keep
    the full optimizer state after a resume, which is what FSDP is there to avoid.
    """
    if isinstance(like, DTensor) and not isinstance(value, DTensor) and value.shape == like.shape:
        return distribute_tensor(value.to(like.device), like.device_mesh, like.placements)
    return value


def unsharded(
    trained: torch.nn.Module, model: torch.nn.Module, wrap: Callable[[torch.nn.Module], torch.nn.Module]
) -> torch.nn.Module:
    """A whole copy of the FSDP-sharded ``model`` on every process (FSDP cannot be undone in place).

    ``trained`` is the module whose weights are gathered (``model`` or the LoRA wrapper around it); ``wrap``
    makes the same wrapper around a fresh copy of ``model``, and its result is returned with those weights.
    """
    state = get_model_state_dict(trained, options=StateDictOptions(full_state_dict=True))  # collective
    with torch.device("meta"):  # a skeleton: the gathered weights are assigned into it, not copied
        fresh = type(model)(model.config)
    for name, buffer in model.named_buffers():  # non-persistent buffers (rotary tables) are not in the state
        owner, _, attr = name.rpartition(".")
        setattr(fresh.get_submodule(owner), attr, buffer)
    fresh.generation_config = model.generation_config
    wrapped = wrap(fresh)
    wrapped.load_state_dict(state, assign=True)
    fresh.tie_weights()  # assigning gave tied weights separate Parameters
    return wrapped


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

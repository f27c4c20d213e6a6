"""Fully sharded data parallel (PyTorch FSDP2, ``fully_shard``) for :mod:`speechllm.train.loop`.

``run.parallel=fsdp`` under ``torchrun``: every transformer block of the LLM and of the encoder (the
classes their Hugging Face models name in ``_no_split_modules``) is sharded across the processes, so
each holds 1/N of the blocks' weights, gradients and optimizer state, and gathers a block's weights
only while it runs.  Embeddings, LM head, final norms and the connector stay replicated: they are called
outside the blocks (prompt embedding, logits at answer positions, generation) and are small next to the
blocks; their gradients are summed across processes as in the plain data-parallel path.

Gradient semantics are those of the rest of the trainer: each process divides its loss by the token
count of the global batch and the shards' gradients are *summed* (``set_gradient_divide_factor(1)``),
so a step equals the single-process step on the same global batch.

Checkpoints stay ordinary files: the saved (trainable) weights are gathered into full tensors and
rank 0 writes them; the optimizer state is gathered the same way (``torch.distributed.checkpoint``'s
full state dicts, keyed by parameter name) and scattered back on resume, so a run may resume with a
different number of processes.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor


def block_class_names(model: nn.Module) -> set[str]:
    """Names of the classes Hugging Face marks as not-to-split (the transformer blocks) in ``model``."""
    names: set[str] = set()
    for module in model.modules():
        names |= set(getattr(module, "_no_split_modules", None) or [])
    return names


def shard_model(model: nn.Module, device: torch.device, world: int) -> int:
    """fully_shard each transformer block of the LLM and encoder; returns how many were sharded."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world,))
    blocks = []
    for part in (model.llm.model, model.encoder.model):
        names = block_class_names(part)
        blocks += [m for m in part.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError("run.parallel=fsdp: no transformer blocks found to shard (the models name none in "
                         "_no_split_modules); use run.parallel=ddp")
    for block in blocks:
        fully_shard(block, mesh=mesh)
        block.set_gradient_divide_factor(1.0)  # sum: every rank already divided by the global token count
        block.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no PREMUL_SUM)
    return len(blocks)


def is_sharded(param: torch.Tensor) -> bool:
    return isinstance(param, DTensor)


def all_reduce_replicated_grads(params: list[nn.Parameter]) -> None:
    """Sum the gradients of the parameters FSDP does not manage (its own are reduce-scattered during
    backward) — under plain data parallelism, all of them."""
    for param in params:
        if is_sharded(param):
            continue
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """Global gradient-norm clipping over sharded and replicated parameters (same result on every rank)."""
    sharded = torch.zeros((), dtype=torch.float64)
    replicated = torch.zeros((), dtype=torch.float64)
    for param in params:
        if param.grad is None:
            continue
        if is_sharded(param.grad):
            sharded += param.grad.to_local().double().pow(2).sum().cpu()
        else:
            replicated += param.grad.double().pow(2).sum().cpu()
    device = next((p.grad.device for p in params if p.grad is not None), torch.device("cpu"))
    shard_sum = sharded.to(device)
    dist.all_reduce(shard_sum)  # the shards are disjoint; replicated grads are equal on every rank
    total = math.sqrt(float(shard_sum) + float(replicated))
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for param in params:
            if param.grad is not None:
                param.grad.mul_(coef)
    return total


def full_saved_state(model, keep: bool = True) -> dict[str, torch.Tensor]:
    """The model's saved weights as full CPU tensors (a collective: every rank must call it; ranks that
    do not write pass ``keep=False`` and hold one gathered tensor at a time)."""
    out = {}
    for name, value in model.saved_state_dict().items():
        if isinstance(value, DTensor):
            value = value.full_tensor()
        if keep:
            out[name] = value.detach().cpu()
    return out


def load_full_state(model, state: dict[str, torch.Tensor]) -> None:
    """Copy full tensors (a subset of the model's state, e.g. its saved weights) into a sharded model:
    each rank keeps its shard (a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))


def optimizer_state(model, optimizer) -> dict:
    """Full optimizer state keyed by parameter name, on rank 0 (a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model, optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))

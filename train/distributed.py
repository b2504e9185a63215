"""torch.distributed for `torchrun --nproc_per_node N $(which stpr-train)`.

One process per GPU (or per CPU slot with gloo). Training data is sharded by a
DistributedSampler and gradients are averaged by DDP; anchor and FSSD sums and
evaluation counts are summed across ranks, so they equal a single process's; only
rank 0 writes files.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (WORLD_SIZE > 1); else do nothing.

    Returns the device this rank should use (cuda:LOCAL_RANK on GPU machines).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return torch.device("cuda", local)
    dist.init_process_group("gloo")
    return device


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (no-op in one process); returns `t`."""
    if world_size() > 1:
        dev = t.device
        # gloo reduces CPU tensors; nccl needs them on the rank's GPU.
        work = t.cuda() if dist.get_backend() == "nccl" else t
        dist.all_reduce(work)
        if work is not t:
            t.copy_(work.to(dev))
    return t


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `x` along dim 0, keeping autograd (open_clip's
    gather_with_grad): a batch-level loss then sees the global batch on every rank,
    and DDP's gradient average equals the one-process gradient."""
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `x` (no gradient: labels)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


def shutdown() -> None:
    """Leave the process group together at the end of a run. A rank that exits while
    another still holds its gloo connections can abort in the teardown (SIGABRT,
    "terminate called without an active exception"), failing a run that succeeded."""
    if world_size() > 1:
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


class ShardSampler(Sampler[int]):
    """Every `world`-th index from `rank`, no padding: sums over ranks are exact."""

    def __init__(self, length: int) -> None:
        self.indices = list(range(rank(), length, world_size()))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

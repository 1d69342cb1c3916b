"""torchrun support: the same code runs as one CPU process or as N ranks (NCCL on GPUs, gloo on CPUs)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from lib import settings


def init_from_env() -> bool:
    """Join the process group that ``torchrun`` describes in the environment; no-op otherwise."""
    if dist.is_available() and dist.is_initialized():
        return True
    if settings.world_size() <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(settings.local_rank())
    dist.init_process_group(backend=backend)
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", settings.local_rank())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard(n: int) -> range:
    """Indices of this rank's part of n items: every item exactly once across ranks."""
    return range(rank(), n, world_size())

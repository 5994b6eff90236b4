"""torchrun support: images split by rank, results gathered on rank 0 (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard(self, items: list) -> list:
        """This rank's share of ``items`` (every ``world_size``-th, from ``rank``)."""
        return items[self.rank::self.world_size]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, value) -> list | None:
        """Every rank's ``value`` on rank 0 (``None`` elsewhere)."""
        if not self.enabled:
            return [value]
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered


def init_distributed(device_type: str = "cpu") -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                              local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def setup_process(device_setting: str, seed: int) -> tuple[torch.device, DistributedContext]:
    """Resolve the device (``auto`` picks CUDA), join ``torchrun``'s process group if any (one
    GPU per local rank), and seed everything: the start of every entry point that trains."""
    from graphwsss.utils.runtime import resolve_device, seed_everything

    device = resolve_device(device_setting)
    context = init_distributed(device.type)
    if device.type == "cuda" and context.enabled:
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    seed_everything(seed)
    return device, context

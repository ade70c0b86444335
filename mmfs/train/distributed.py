"""Multi-process training under `torchrun`: process group, DDP wrapping, rank-0 helpers.

`torchrun --nproc_per_node N -m mmfs_cli.app finetune ...` sets WORLD_SIZE/RANK/LOCAL_RANK; we then
join a process group (NCCL when CUDA is available, else gloo), put each rank on `cuda:LOCAL_RANK`,
wrap the trained nets in DistributedDataParallel and let rank 0 alone log, preview and checkpoint.
A single process (no WORLD_SIZE, or 1) uses none of this.
"""

from __future__ import annotations

import atexit
import datetime
import inspect
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mmfs.errors import MMFSError


@dataclass(frozen=True)
class Dist:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (in memory only; nothing is written)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor /= self.world_size
        return tensor


def init_distributed(device_name: str = "auto") -> tuple[Dist, torch.device]:
    """Join the torchrun process group if there is one; return this rank's `Dist` and device."""
    from mmfs.utils.device import pick_device

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist(), pick_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise MMFSError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices are visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(minutes=30),  # checkpoint writes on rank 0 can take a while
            **({"device_id": device} if use_cuda else {}),
        )
        # Left without destroy_process_group, NCCL warns at exit and may hang in its teardown.
        atexit.register(leave_process_group)
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank), device


def leave_process_group() -> None:
    """Destroy the process group this process joined (registered to run at exit; harmless when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel over the parameters that currently require grad (the trained ones)."""
    # A [1, C] weight (D's last linear layer) gets a grad with strides (1, 1), which differ from the
    # bucket's (C, 1) only in the stride of a size-1 dimension: the same memory layout, so not a problem.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ddp = nn.parallel.DistributedDataParallel
    return ddp(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        **no_buffer_sync(ddp),  # our nets' buffers are constants (blur kernels): no sync per forward
        gradient_as_bucket_view=True,  # grads live in the all-reduce buckets: no copy, no stride mismatch
    )


def no_buffer_sync(ddp: type) -> dict[str, bool]:
    """The keyword that turns off DDP's buffer broadcast before every forward, in this torch's spelling.

    torch >= 2.13 has `forward_sync_buffers` (and deprecates `broadcast_buffers`); older torch has only
    `broadcast_buffers`, which also skips the buffers' sync when DDP is built (the same constants on
    every rank, so nothing to sync).
    """
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}

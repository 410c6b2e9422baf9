"""Several processes training one adapter: which one this is, and the process group they share.

`torchrun` and `accelerate launch` start one process per device and tell each its place in environment
variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); `World.from_env` reads them, `join`
opens torch.distributed's process group on them (gloo on CPUs, nccl on CUDA GPUs) and `World.current` is
what the training loop asks. A process started any other way is a world of one, and nothing here runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number (the launcher sets it); got {text!r}") from None


@dataclass(frozen=True)
class World:
    """This process's place among the processes training together: rank of world_size (0 of 1 alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the rank on this machine: which GPU is this process's
    local_world_size: int = 1  # the processes on this machine (1 where the launcher does not say)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the files and prints; the others only train their share of each batch."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> World:
        """The world a launcher (torchrun, accelerate launch, srun with these set) described in the environment."""
        world = cls(
            _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", 1)
        )
        if world.world_size < 1 or not 0 <= world.rank < world.world_size:
            raise ValueError(f"RANK must be between 0 and WORLD_SIZE - 1; got RANK={world.rank} of {world.world_size}")
        return world

    @classmethod
    def current(cls) -> World:
        """The process group in force (a world of one when none was opened)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", 1))

    def sharing(self, device_type: str) -> int:
        """How many processes load onto this process's device at the same time: every local one on a CPU (they
        share its RAM); on CUDA those that share one GPU (more processes on the machine than GPUs)."""
        local = min(max(self.local_world_size, 1), self.world_size)
        if device_type == "cuda":
            gpus = torch.cuda.device_count()
            return -(-local // gpus) if gpus else local
        return local

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether any process has `flag` set (a Stop on one must stop all, or the rest wait for it forever)."""
        if not self.distributed:
            return flag
        import torch.distributed as dist

        t = torch.tensor([int(flag)], device=device)  # nccl reduces GPU tensors only
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def total(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of a tensor over every process (a copy; the input is left as it is)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        out = value.detach().clone()
        dist.all_reduce(out)
        return out

    def main_first(self, work: Callable[[], T]) -> T:
        """`work` on rank 0 first, then on the others (the embedded model is converted once, then read)."""
        if not self.distributed:
            return work()
        import torch.distributed as dist

        out = work() if self.is_main else None
        dist.barrier()
        return out if self.is_main else work()


def backend_for(device: str) -> str:
    """nccl where the run will be on CUDA GPUs, gloo on CPUs (the setting as ModelSettings.device has it)."""
    if device == "mps":
        raise ValueError("device: Apple MPS trains in one process only; use device cpu or cuda to train in several")
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return "nccl"
    return "gloo"


@contextlib.contextmanager
def join(world: World, device: str) -> Iterator[str]:
    """Open the process group the launcher described (nothing in a world of one), close it after.

    Yields the backend. On CUDA each process takes the GPU of its local rank before anything loads, so the
    model and its batches land on that GPU (models.pick_device picks the current one)."""
    if not world.distributed:
        yield ""
        return
    import torch.distributed as dist

    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend, rank=world.rank, world_size=world.world_size)
    try:
        yield backend
    finally:
        dist.destroy_process_group()

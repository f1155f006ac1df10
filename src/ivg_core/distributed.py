"""Data-parallel runs: which process this is, and waiting for the others.

Launched with ``accelerate launch`` or ``torchrun``, every process runs the
same command; ``WORLD_SIZE`` and ``RANK`` in the environment tell them apart,
and accelerate's ``PartialState`` sets up the process group (gloo on the CPU,
NCCL on GPUs). Started plainly, a run is one process and needs neither.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Processes", "current_processes"]


@dataclass
class Processes:
    """This process's place among the processes of a run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    _state: object | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait_for_everyone(self) -> None:
        """Block until every process reaches this point (no-op for one process)."""
        if self._state is not None:
            self._state.wait_for_everyone()


def current_processes() -> Processes:
    """Return this process's rank among the launched processes."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    # Without CUDA, accelerate treats the processes as one unless told to use
    # the CPU, which sets up a gloo process group.
    state = PartialState(cpu=not torch.cuda.is_available())
    return Processes(
        rank=state.process_index,
        world_size=state.num_processes,
        local_rank=state.local_process_index,
        _state=state,
    )

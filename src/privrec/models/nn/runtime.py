"""Where torch runs: CPU threads, the device, and the torch.distributed process group.

Nothing here imports torch at module import, so every model module can import these helpers
and still be cheap to import (the zoo imports them all).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from privrec.core.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["DistInfo", "free_port", "init_process_group", "resolve_device", "torch_threads"]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on `n` CPU threads inside the block, restoring the previous setting after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """ "auto" -> CUDA when available (cuda:local_rank under torchrun), else CPU.

    Raises:
        ConfigError: a CUDA device was asked for and none is available.
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank or 0)
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device: {name!r} asked for CUDA but none is available; use 'auto' or 'cpu'"
        )
    return dev


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in torch.distributed (world_size 1 without a process group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls) -> DistInfo:
        """The initialised default process group's rank and size, else (0, 1)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(
                dist.get_rank(),
                dist.get_world_size(),
                int(os.environ.get("LOCAL_RANK", dist.get_rank())),
            )
        return cls()

    def share(self, n: int) -> np.ndarray:
        """The rows of an n-row global batch this rank trains on (strided: sizes differ by <= 1)."""
        return np.arange(self.rank, n, self.world_size)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_process_group(
    backend: str = "auto",
    *,
    rank: int | None = None,
    world_size: int | None = None,
    store: Any = None,
) -> DistInfo:
    """Join the default process group (torchrun's env:// variables unless rank/world_size given).

    backend "auto": NCCL when CUDA is available, else gloo. `store`: a rendezvous store (e.g. a
    `torch.distributed.TCPStore` client) to use instead of the env:// one.
    """
    import torch
    import torch.distributed as dist

    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {}
        if rank is not None:
            kwargs = {"rank": rank, "world_size": world_size}
        if store is not None:
            kwargs["store"] = store
        dist.init_process_group(backend=backend, **kwargs)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo.current()

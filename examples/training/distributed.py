"""Data-parallel training with ``torchrun`` on PyTorch's own engine (gloo on CPU).

Launch a script with ``torchrun --nproc_per_node 2 -m your.module`` (or
``python -m torch.distributed.run ...``); in the script::

    info = init_distributed()           # reads RANK / WORLD_SIZE / LOCAL_RANK
    model = wrap_ddp(model)             # DistributedDataParallel (unchanged in one process)
    loader = BatchLoader(x, y, batch_size=32, rank=info.rank, world_size=info.world_size)
    ...
    cleanup(wait=True)

Every rank must take the same number of optimizer steps (DDP all-reduces gradients in
``backward``): ``torch.utils.data.DistributedSampler`` (inside
:class:`~examples.training.BatchLoader`) pads the shards to equal length for that reason.
Run without ``torchrun``, :func:`init_distributed` returns a one-process :class:`DistInfo`
and the same script trains in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "DistInfo",
    "init_distributed",
    "wrap_ddp",
    "unwrap_model",
    "cleanup",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a data-parallel run.

    Args:
        rank: global rank, ``0 .. world_size - 1``.
        world_size: number of processes.
        local_rank: rank on this machine.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and writes files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an int, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"environment variable {name} must be >= 0, got {value}")
    return value


def current() -> DistInfo:
    """The :class:`DistInfo` of an initialised process group, else a one-process one."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return DistInfo(rank, dist.get_world_size(), _env_int("LOCAL_RANK", rank))
    return DistInfo()


def init_distributed(backend: str = "gloo", timeout: timedelta = timedelta(minutes=5)) -> DistInfo:
    """Join the process group that ``torchrun`` set up, from its environment variables.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and, through ``init_method="env://"``,
    ``MASTER_ADDR`` / ``MASTER_PORT``). With ``WORLD_SIZE`` unset or 1 no group is created and
    a one-process :class:`DistInfo` is returned. Calling it again returns the current group.

    Args:
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (CUDA).
        timeout: how long collectives wait for the other ranks before failing.
    """
    if not dist.is_available():  # pragma: no cover - torch builds without distributed
        raise RuntimeError("this torch build has no torch.distributed")
    if dist.is_initialized():
        return current()
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size == 0:
        raise ValueError("environment variable WORLD_SIZE must be >= 1, got 0")
    if rank >= world_size:
        raise ValueError(f"RANK ({rank}) must be < WORLD_SIZE ({world_size})")
    if world_size == 1:
        return DistInfo(rank, world_size, local_rank)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise RuntimeError(
                f"WORLD_SIZE={world_size} but {name} is not set; launch with torchrun "
                "(it sets MASTER_ADDR and MASTER_PORT) or set both yourself"
            )
    dist.init_process_group(
        backend=backend, init_method="env://", rank=rank, world_size=world_size, timeout=timeout
    )
    return DistInfo(rank, world_size, local_rank)


def wrap_ddp(model: nn.Module, **kwargs: object) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` (CPU: no ``device_ids``).

    Returns ``model`` unchanged when no process group is initialised, so one script runs in
    one process and under ``torchrun``. DDP broadcasts rank 0's parameters and buffers at
    construction, so every rank starts from the same weights.

    Args:
        model: the module, already on its device.
        **kwargs: passed to ``DistributedDataParallel`` (e.g. ``find_unused_parameters``).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return model
    if isinstance(model, DistributedDataParallel):
        raise ValueError("model is already wrapped in DistributedDataParallel")
    return DistributedDataParallel(model, **kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` (or ``torch.compile``) wrapper."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def cleanup(wait: bool = False) -> None:
    """Leave the process group (no-op when none is initialised). ``wait``: first wait at a
    barrier until every rank is here, so that no rank tears down gloo's connections while a
    peer still uses them (call it so on the success path only: a rank that failed may never
    arrive). Once, in CI, a rank aborted at exit after training had ended ("terminate called
    without an active exception") without the barrier."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()

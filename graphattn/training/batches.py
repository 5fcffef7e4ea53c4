"""Mini-batches of in-memory tensors, in an order that a checkpoint can reproduce.

The order of epoch ``e`` is a permutation drawn from a generator seeded with
``seed + e`` (as ``DistributedSampler``), so the whole data order is fixed by ``seed`` and
the epoch number: :class:`~graphattn.training.Trainer` calls :meth:`BatchLoader.set_epoch`
and records the epoch and the position in it, and a resumed run sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from .distributed import shard_indices

__all__ = ["BatchLoader"]


class BatchLoader:
    """Shuffled mini-batches over tensors that share their first dimension.

    Iterating gives one epoch of tuples ``(t1[idx], t2[idx], ...)``. With ``world_size > 1``
    each rank sees its own shard (padded so that every rank has the same number of batches).

    Shapes:
        - tensors: each ``(S, ...)``, same ``S``
        - each batch: a tuple of ``(batch_size, ...)`` (the last one may be smaller)

    Args:
        *tensors: the data.
        batch_size: samples per batch (per rank).
        shuffle: a new permutation every epoch; otherwise the stored order.
        seed: seed of the permutations; epoch ``e`` uses ``seed + e``.
        drop_last: drop a last, smaller batch.
        rank: this process's rank (data parallel).
        world_size: number of ranks.

    Example:
        >>> loader = BatchLoader(torch.arange(10), batch_size=4, seed=0)
        >>> len(loader), [b[0].shape[0] for b in loader]
        (3, [4, 4, 2])
        >>> loader.set_epoch(1); first = [b[0] for b in loader]
        >>> loader.set_epoch(1); torch.equal(torch.cat(first), torch.cat([b[0] for b in loader]))
        True
    """

    def __init__(
        self,
        *tensors: Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not tensors:
            raise ValueError("BatchLoader needs at least one tensor")
        sizes = [t.shape[0] if t.dim() > 0 else None for t in tensors]
        if None in sizes or len(set(sizes)) != 1:
            raise ValueError(f"tensors must share their first dimension, got sizes {sizes}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        shard_indices(0, rank, world_size)  # validates rank and world_size
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Samples in the whole data set (all ranks)."""
        return int(self.tensors[0].shape[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` for the next iteration."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = epoch

    def indices(self) -> Tensor:
        """``(M,)`` this rank's sample order for the current epoch."""
        n = self.num_samples
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g)  # (S,)
        else:
            order = torch.arange(n)
        mine = shard_indices(n, self.rank, self.world_size)
        return order[mine]

    def __len__(self) -> int:
        m = -(-self.num_samples // self.world_size)
        return m // self.batch_size if self.drop_last else -(-m // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        order = self.indices()
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]  # (batch,)
            yield tuple(t[idx] for t in self.tensors)

    def __repr__(self) -> str:
        return (
            f"BatchLoader(samples={self.num_samples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, rank={self.rank}/{self.world_size})"
        )

"""Mini-batches of in-memory tensors, in an order that a checkpoint can reproduce.

:class:`BatchLoader` is a ``torch.utils.data.DataLoader`` over a ``TensorDataset`` whose
sampler is a ``DistributedSampler``: the order of epoch ``e`` is the permutation drawn from a
generator seeded with ``seed + e``, so the whole data order is fixed by ``seed`` and the epoch
number. :class:`~examples.training.Trainer` calls :meth:`BatchLoader.set_epoch` and records
the epoch and the position in it, so a resumed run sees the same batches.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

__all__ = ["BatchLoader"]


class BatchLoader(DataLoader):
    """Shuffled mini-batches over tensors that share their first dimension.

    The same as ``DataLoader(TensorDataset(*tensors), batch_size, drop_last=drop_last,
    sampler=DistributedSampler(dataset, world_size, rank, shuffle=shuffle, seed=seed),
    generator=torch.Generator())``. The sampler gives each rank its own shard, padded so that
    every rank has the same number of batches (DDP needs every rank to step together). The
    loader's own generator keeps iteration from drawing the base seed of its workers from
    torch's global generator, so the global random stream (dropout, augmentation) is the
    same as if the batches were sliced by hand.

    Shapes:
        - tensors: each ``(S, ...)``, same ``S``
        - each batch: a list of ``(batch_size, ...)`` (the last one may be smaller)

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
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
        dataset = TensorDataset(*tensors)
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
        )
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            generator=torch.Generator(),
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` for the next iteration."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.sampler.set_epoch(epoch)

    def __repr__(self) -> str:
        s = self.sampler
        return (
            f"BatchLoader(samples={len(self.dataset)}, batch_size={self.batch_size}, "
            f"shuffle={s.shuffle}, seed={s.seed}, rank={s.rank}/{s.num_replicas})"
        )

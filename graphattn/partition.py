"""Mini-batches of random node partitions, for graphs bigger than one step's memory.

SGFormer and Polynormer train on graphs of millions of nodes this way: every epoch the nodes
are split at random into ``P`` parts of nearly equal size; a step sees one part, with global
attention over the part's nodes and local attention over the edges whose two ends fall in
it. Pure torch (no pyg-lib, no torch-sparse), and ready for data parallelism: with
``world_size`` processes each rank takes every ``world_size``-th part of the same shuffle.

Axis legend: ``N`` nodes, ``E`` edges, ``P`` parts, ``n`` nodes in a part.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_int

__all__ = ["NodePartitions", "PartitionBatch"]


@dataclass
class PartitionBatch:
    """One part of a random node partition.

    Attributes:
        nodes: the part's node ids in the full graph, ``(n,)``.
        edge_index: the edges with both ends in the part, renumbered to ``0 .. n-1``
            (PyG's convention: row 0 sources, row 1 targets), ``(2, e)``.
        part: the part's index in this epoch's partition.
    """

    nodes: Tensor
    edge_index: Tensor
    part: int


class NodePartitions:
    """Random node partitions of a graph, redrawn every epoch; iterate to get the parts.

    Args:
        edge_index: the full graph's edges ``(2, E)``.
        num_nodes: ``N``.
        num_parts: ``P``, parts per epoch (sizes differ by at most one node).
        seed: the partition of epoch ``t`` is drawn from ``seed + t`` (see
            :meth:`set_epoch`), so every process of a data-parallel run draws the same one.
        rank: this process's rank; it takes parts ``rank, rank + world_size, ...``.
        world_size: number of processes; ``num_parts`` must be a multiple of it so that every
            rank takes the same number of steps.

    Shapes:
        - yields :class:`PartitionBatch` with ``nodes`` ``(n,)`` and ``edge_index`` ``(2, e)``

    Example:
        >>> import torch
        >>> edge_index = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]])
        >>> parts = NodePartitions(edge_index, 6, num_parts=2, seed=0)
        >>> sorted(len(b.nodes) for b in parts)
        [3, 3]
    """

    def __init__(
        self,
        edge_index: Tensor,
        num_nodes: int,
        num_parts: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
            got = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else edge_index
            raise ValueError(f"edge_index must be a (2, E) tensor, got {got!r}")
        check_int("num_nodes", num_nodes)
        check_int("num_parts", num_parts)
        if num_parts > num_nodes:
            raise ValueError(f"num_parts ({num_parts}) must not exceed num_nodes ({num_nodes})")
        check_int("world_size", world_size)
        if num_parts % world_size:
            raise ValueError(
                f"num_parts ({num_parts}) must be a multiple of world_size ({world_size}), so "
                "that every rank takes the same number of steps"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank!r}")
        self.edge_index = edge_index.long()
        self.num_nodes, self.num_parts = num_nodes, num_parts
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the partition of ``epoch`` (as ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Steps per epoch on this rank."""
        return self.num_parts // self.world_size

    def _perm(self) -> Tensor:
        """This epoch's shuffle of the nodes ``(N,)``: node ``perm[i]`` goes to part
        ``i % P`` at position ``i // P``."""
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_nodes, generator=gen).to(self.edge_index.device)

    def assignment(self) -> tuple[Tensor, Tensor]:
        """This epoch's part of every node and its position inside the part, ``(N,)`` each."""
        perm = self._perm()
        order = torch.empty_like(perm)
        order[perm] = torch.arange(self.num_nodes, device=perm.device)  # rank of each node
        return order % self.num_parts, order // self.num_parts

    def __iter__(self) -> Iterator[PartitionBatch]:
        part, local = self.assignment()  # (N,), (N,)
        src, dst = self.edge_index
        same = part[src] == part[dst]  # (E,) edges inside one part
        e_part = part[dst][same]
        order = torch.argsort(e_part, stable=True)
        kept = torch.stack([local[src[same]], local[dst[same]]])[:, order]  # (2, E_in)
        ends = torch.bincount(e_part, minlength=self.num_parts).cumsum(0).tolist()
        perm = self._perm()
        for p in range(self.rank, self.num_parts, self.world_size):
            nodes = perm[p :: self.num_parts]  # (n,), position i holds local id i
            start = ends[p - 1] if p else 0
            yield PartitionBatch(nodes, kept[:, start : ends[p]], p)

"""Softmax over groups of edges: ``segment_softmax`` (any order, PyG's ``utils.softmax``).

Axis legend: ``E`` edges.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["segment_softmax"]


def segment_softmax(src: Tensor, index: Tensor, num_segments: int | None = None) -> Tensor:
    """Softmax of ``src`` over groups of rows that share an ``index`` (PyG's
    ``utils.softmax``): the maximum of each group is subtracted before ``exp``. Works with
    any row order; a group's rows sum to 1. Rows whose whole group is ``-inf`` give 0.

    Args:
        src: scores, ``(E, *)``.
        index: group of each row, ``(E,)`` integer.
        num_segments: number of groups (default ``index.max() + 1``).

    Shapes:
        - src: ``(E, *)``; index: ``(E,)``; returns ``(E, *)``.

    Example:
        >>> import torch
        >>> from graphattn import segment_softmax
        >>> s = torch.tensor([1.0, 1.0, 2.0, 0.0])
        >>> segment_softmax(s, torch.tensor([0, 0, 1, 1]))
        tensor([0.5000, 0.5000, 0.8808, 0.1192])
        >>> segment_softmax(torch.tensor([float("-inf")]), torch.tensor([0]))
        tensor([0.])
    """
    if index.dim() != 1 or index.shape[0] != src.shape[0]:
        raise ValueError(
            f"index must have shape ({src.shape[0]},) to match src, got {tuple(index.shape)}"
        )
    if index.dtype.is_floating_point or index.dtype == torch.bool:
        raise TypeError(f"index must have an integer dtype, got {index.dtype}")
    if num_segments is None:
        num_segments = int(index.max()) + 1 if index.numel() else 0
    idx = index.long().view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    shape = (num_segments, *src.shape[1:])
    with torch.no_grad():
        m = src.new_full(shape, -math.inf).scatter_reduce_(0, idx, src.detach(), "amax")
        m = torch.where(torch.isfinite(m), m, torch.zeros((), dtype=m.dtype, device=m.device))
    ex = (src - m.gather(0, idx)).exp()
    z = src.new_zeros(shape).scatter_add(0, idx, ex)
    z = torch.where(z > 0, z, torch.ones((), dtype=z.dtype, device=z.device))
    return ex / z.gather(0, idx)

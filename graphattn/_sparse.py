"""Linear projections of sparse CSR node features (bag-of-words inputs of Cora, CiteSeer,
PubMed) whose backward reuses the transposed sparsity pattern.

``F.linear`` on a CSR tensor transposes it in every backward pass (a sort of its nonzeros)
to form the weight gradient. The pattern of a feature matrix does not change between steps
(dropout on its values keeps it), so :func:`linear` keeps the transposed pattern of the last
few inputs, keyed by their index tensors, and only gathers the values.

Axis legend: ``N`` rows (nodes), ``F`` input features, ``O`` output features, ``nnz`` stored
values.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backends._chunks import csr_tensor

__all__ = ["linear"]

_CACHE: OrderedDict[tuple, tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = OrderedDict()
_CACHE_SIZE = 4


def linear(lin: nn.Linear, x: Tensor) -> Tensor:
    """``lin(x)``; for a sparse CSR ``x`` with constant values' gradient (input features) the
    backward pass reuses the cached transposed pattern.

    Shapes:
        - x: ``(N, F)`` dense or sparse CSR; returns ``(N, O)``
    """
    if x.layout != torch.sparse_csr or x.values().requires_grad or x.dim() != 2:
        return lin(x)
    if isinstance(lin.weight, nn.parameter.UninitializedParameter):
        return lin(x)  # a lazy projection: shaped by this first input
    crow, col, values = x.crow_indices(), x.col_indices(), x.values()
    out = _CSRLinear.apply(values, crow, col, tuple(x.shape), lin.weight)  # (N, O)
    return out if lin.bias is None else out + lin.bias


def _transposed(crow: Tensor, col: Tensor, shape: tuple[int, int]) -> tuple[Tensor, ...]:
    """``(perm, crow_t, col_t)`` of the ``(F, N)`` transpose, cached while the same index
    tensors (kept alive here, so their memory cannot be reused) come back unmodified."""
    key = (crow.data_ptr(), col.data_ptr(), crow._version, col._version, crow.numel(), shape)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key][2:]
    n, f = shape
    rows = torch.repeat_interleave(torch.arange(n, device=crow.device), crow.diff())  # (nnz,)
    perm = torch.sort(col, stable=True).indices  # (nnz,), by column then row
    crow_t = torch.zeros(f + 1, dtype=crow.dtype, device=crow.device)
    torch.cumsum(torch.bincount(col, minlength=f), 0, out=crow_t[1:])
    entry = (crow, col, perm, crow_t, rows[perm].to(col.dtype))
    _CACHE[key] = entry
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return entry[2:]


class _CSRLinear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, values: Tensor, crow: Tensor, col: Tensor, shape: tuple, weight: Tensor
    ) -> Tensor:
        ctx.save_for_backward(values, crow, col, weight)
        ctx.shape = shape
        return F.linear(csr_tensor(crow, col, values, shape), weight)  # (N, O)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        values, crow, col, weight = ctx.saved_tensors
        d_weight = None
        if ctx.needs_input_grad[4]:
            perm, crow_t, col_t = _transposed(crow, col, ctx.shape)
            n, f = ctx.shape
            xt = csr_tensor(crow_t, col_t, values[perm], (f, n))  # (F, N)
            d_weight = (xt @ grad.contiguous()).t()  # (O, F)
        return None, None, None, None, d_weight

"""Chunked gathers for the edge backend and the score functions it runs.

Per-edge gathers of node features (``E x G x D``) are never kept: they are made chunk by
chunk into flat buffers allocated once per call (``CHUNK_ELEMENTS`` elements each) and
reused. Writing into already-resident buffers is what makes this fast on CPU: freshly
allocated ``E x D`` temporaries cost page faults (see DESIGN.md, performance facts).

Axis legend: ``E`` edges, ``G`` groups (batch x heads), ``D`` feature size, ``n`` edges in a
chunk.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

from ..graph import EdgeStructure

__all__ = [
    "CHUNK_ELEMENTS",
    "Buffers",
    "csr_tensor",
    "chunk_size",
    "chunk_elements",
    "chunks",
    "rowdot",
    "by_source",
    "sum_to_dst",
    "sum_to_src",
    "add_chunk_to_dst",
    "segment_softmax_sorted",
]

#: elements of one per-chunk gather buffer (chunk edges x G x D); measured best near 2**20
#: on a 2-core CPU (benchmarks/bench_formulations.py).
CHUNK_ELEMENTS = 1 << 20
#: fewest edges in a chunk (tests lower both to exercise chunk boundaries)
MIN_CHUNK = 256


#: elements of each gather buffer on CUDA: there kernel launches, not caches, set the pace,
#: so chunks are 16x bigger (64 MiB in float32)
CUDA_CHUNK_ELEMENTS = 1 << 24


def chunk_elements(device: torch.device | None = None) -> int:
    """Elements of each gather buffer on ``device`` (``None``: the CPU)."""
    return CUDA_CHUNK_ELEMENTS if device is not None and device.type == "cuda" else CHUNK_ELEMENTS


def chunk_size(num_groups: int, dim: int, device: torch.device | None = None) -> int:
    """Edges per chunk for ``num_groups x dim`` elements per edge on ``device``."""
    return max(MIN_CHUNK, chunk_elements(device) // max(1, num_groups * dim))


def chunks(num_edges: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of ``size`` edges."""
    for a in range(0, num_edges, size):
        yield a, min(a + size, num_edges)


class _Pool(threading.local):
    """Flat buffers returned by finished calls, per thread, kept for the next call: freshly
    allocated memory costs a page fault per 4 KiB on first write, which made the per-call
    gather buffers cost more than the gathers themselves."""

    def __init__(self) -> None:
        self.free: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}


_POOL = _Pool()
#: buffers kept per (device, dtype) and thread
_POOL_SIZE = 4


class Buffers:
    """``count`` flat gather buffers of ``min(chunk, E) * G * D`` elements, reused per chunk
    and leased from a per-thread pool (use as a context manager to give them back).

    Example:
        >>> import torch
        >>> with Buffers(torch.zeros(1), num_edges=10, num_groups=2, dim=3, count=2) as bufs:
        ...     bufs.view(0, 4, 2, 3).shape
        torch.Size([4, 2, 3])
    """

    def __init__(self, ref: Tensor, num_edges: int, num_groups: int, dim: int, count: int):
        self.chunk = chunk_size(num_groups, dim, ref.device)
        size = max(1, min(self.chunk, num_edges) * num_groups * dim)
        self._key = (ref.device, ref.dtype)
        free = _POOL.free.setdefault(self._key, [])
        self._flat: list[Tensor] = []
        for _ in range(count):
            fits = [i for i, t in enumerate(free) if t.numel() >= size]
            if fits:
                self._flat.append(free.pop(min(fits, key=lambda i: free[i].numel())))
            else:
                self._flat.append(ref.new_empty(size))

    def __enter__(self) -> Buffers:
        return self

    def __exit__(self, *exc: object) -> None:
        free = _POOL.free.setdefault(self._key, [])
        free.extend(self._flat)
        free.sort(key=Tensor.numel, reverse=True)
        del free[_POOL_SIZE:]
        self._flat = []

    def view(self, i: int, n: int, g: int, d: int) -> Tensor:
        """A contiguous ``(n, g, d)`` view of the front of buffer ``i``."""
        return self._flat[i][: n * g * d].view(n, g, d)

    def gather(self, i: int, x: Tensor, index: Tensor) -> Tensor:
        """``x[index]`` (rows of an ``(N, G, D)`` tensor) written into buffer ``i``."""
        n, (_, g, d) = index.numel(), x.shape
        return torch.index_select(x, 0, index, out=self.view(i, n, g, d))


def rowdot(a: Tensor, b: Tensor, out: Tensor) -> None:
    """``out[n, g] = sum_d a[n, g, d] * b[n, g, d]`` via one batched matmul (fast on CPU)."""
    n, g, d = a.shape
    torch.bmm(a.view(n * g, 1, d), b.view(n * g, d, 1), out=out.view(n * g, 1, 1))


# ---------------------------------------------------------------------------- segment sums
# Sums of per-edge rows into their targets (edges sorted by target) or sources run as sparse
# CSR matrix products with 0/1 incidence matrices: much faster than ``index_add_`` on CPU
# (benchmarks/bench_formulations.py), and exact (each sum in edge order).
_SPMM_DTYPES = (torch.float32, torch.float64)


def _use_spmm(x: Tensor) -> bool:
    return x.dtype in _SPMM_DTYPES and x.device.type in ("cpu", "cuda") and x.numel() > 0


def _index(t: Tensor) -> Tensor:
    """Sparse index tensors as int32 where they fit: the sparse kernels convert int64 indices
    to int32 on every call otherwise."""
    return t.int() if t.numel() < 2**31 - 1 and (t.numel() == 0 or int(t.max()) < 2**31 - 1) else t


def csr_tensor(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """``torch.sparse_csr_tensor`` without torch's beta-state warning."""
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, col, values, shape)


def _pattern(st: EdgeStructure, name: str) -> tuple[Tensor, Tensor]:
    """Cached CSR index pairs ``(crow, col)`` of the sorted edges: ``"to_dst"`` (rows =
    targets, columns = edge positions), ``"to_src"`` (rows = sources, columns = edge
    positions), ``"adj"`` (rows = targets, columns = sources) and ``"adj_t"`` (rows =
    sources, columns = targets)."""
    key = ("pattern", name)
    if key not in st.cache:
        if name == "to_dst":
            pair = (st.ptr, torch.arange(st.src.numel(), device=st.src.device))
        elif name == "adj":
            pair = (st.ptr, st.src)
        else:
            perm, ptr, dst = by_source(st)
            pair = (ptr, perm) if name == "to_src" else (ptr, dst)
        st.cache[key] = (_index(pair[0]), _index(pair[1]))
    return st.cache[key]


def _incidence(st: EdgeStructure, side: str, dtype: torch.dtype) -> Tensor:
    """The ``(Nd, E)`` (``side="dst"``) or ``(Ns, E)`` (``"src"``) 0/1 incidence matrix of
    the sorted edges, cached on ``st``."""
    key = ("incidence", side, dtype)
    if key not in st.cache:
        crow, col = _pattern(st, "to_dst" if side == "dst" else "to_src")
        rows = st.num_dst if side == "dst" else st.num_src
        ones = torch.ones(col.numel(), dtype=dtype, device=col.device)
        st.cache[key] = csr_tensor(crow, col, ones, (rows, col.numel()))
    return st.cache[key]


def by_source(st: EdgeStructure) -> tuple[Tensor, Tensor, Tensor]:
    """The sorted edges ordered by source, cached on ``st``: ``perm`` ``(E,)`` (positions in
    the target order), ``ptr`` ``(Ns + 1,)`` and the target of each edge in that order."""
    if "by_source" not in st.cache:
        perm = torch.sort(st.src, stable=True).indices
        ptr = torch.zeros(st.num_src + 1, dtype=torch.long, device=st.src.device)
        torch.cumsum(torch.bincount(st.src, minlength=st.num_src), 0, out=ptr[1:])
        st.cache["by_source"] = (perm, ptr, st.dst[perm].contiguous())
    return st.cache["by_source"]


def sum_to_dst(st: EdgeStructure, x: Tensor) -> Tensor:
    """``out[i] = sum of x[e]`` over the sorted in-edges ``e`` of target ``i``.

    Shapes:
        - x: ``(E, *F)``; returns ``(Nd, *F)``
    """
    if not _use_spmm(x):
        out = x.new_zeros(st.num_dst, *x.shape[1:])
        return out.index_add_(0, st.dst, x)
    flat = x.reshape(x.shape[0], -1)
    return (_incidence(st, "dst", x.dtype) @ flat).view(st.num_dst, *x.shape[1:])


def sum_to_src(st: EdgeStructure, x: Tensor) -> Tensor:
    """``out[j] = sum of x[e]`` over the sorted edges ``e`` whose source is ``j``.

    Shapes:
        - x: ``(E, *F)``; returns ``(Ns, *F)``
    """
    if not _use_spmm(x):
        out = x.new_zeros(st.num_src, *x.shape[1:])
        return out.index_add_(0, st.src, x)
    flat = x.reshape(x.shape[0], -1)
    return (_incidence(st, "src", x.dtype) @ flat).view(st.num_src, *x.shape[1:])


def add_chunk_to_dst(st: EdgeStructure, out: Tensor, x: Tensor, a: int, z: int) -> None:
    """``out[i] += sum of x[e - a]`` over the sorted edges ``a <= e < z`` of target ``i``.

    Shapes:
        - out: ``(Nd, *F)``; x: ``(z - a, *F)``
    """
    if z <= a:
        return
    if not _use_spmm(x):
        out.index_add_(0, st.dst[a:z], x)
        return
    lo, hi = int(st.dst[a]), int(st.dst[z - 1]) + 1
    _, positions = _pattern(st, "to_dst")  # 0 .. E - 1
    crow = (st.ptr[lo : hi + 1].clamp(a, z) - a).to(positions.dtype)  # (rows + 1,)
    ones = torch.ones(z - a, dtype=x.dtype, device=x.device)
    part = csr_tensor(crow, positions[: z - a], ones, (hi - lo, z - a)) @ x.reshape(z - a, -1)
    out[lo:hi].add_(part.view(hi - lo, *x.shape[1:]))


def segment_softmax_sorted(scores: Tensor, st: EdgeStructure) -> Tensor:
    """In-place softmax of ``scores`` ``(E, G)`` over the in-edges of each target, for edges
    sorted by target. Targets without in-edges, or whose in-edges are all ``-inf``, give
    zeros (never NaN).

    Shapes:
        - scores: ``(E, G)`` in the sorted edge order of ``st``; returns the same tensor.
    """
    if scores.numel() == 0:
        return scores
    m = torch.segment_reduce(scores, "max", offsets=st.ptr, axis=0)  # (Nd, G)
    m = torch.where(torch.isfinite(m), m, torch.zeros((), dtype=m.dtype, device=m.device))
    scores.sub_(m.index_select(0, st.dst)).exp_()
    z = sum_to_dst(st, scores)  # (Nd, G)
    z = torch.where(z > 0, z, torch.ones((), dtype=z.dtype, device=z.device))
    return scores.div_(z.index_select(0, st.dst))


def weighted_sum_to_dst(st: EdgeStructure, w: Tensor, x: Tensor) -> Tensor | None:
    """``out[i, g] = sum of w[e, g] * x[src[e], g]`` over the sorted in-edges of ``i``: one
    sparse matrix product per group, or ``None`` where sparse products do not run (the
    caller then gathers chunk by chunk).

    Shapes:
        - w: ``(E, G)``; x: ``(Ns, G, D)``; returns ``(Nd, G, D)``
    """
    if not _use_spmm(x) or w.numel() == 0 or not _fits_cusparse(st, x):
        return None
    return _per_group(*_pattern(st, "adj"), w, x, st.num_dst)


def weighted_sum_to_src(st: EdgeStructure, w: Tensor, x: Tensor) -> Tensor | None:
    """``out[j, g] = sum of w[e, g] * x[dst[e], g]`` over the sorted edges whose source is
    ``j`` (the transposed product of :func:`weighted_sum_to_dst`), or ``None``.

    Shapes:
        - w: ``(E, G)``; x: ``(Nd, G, D)``; returns ``(Ns, G, D)``
    """
    if not _use_spmm(x) or w.numel() == 0 or not _fits_cusparse(st, x):
        return None
    perm, _, _ = by_source(st)
    return _per_group(*_pattern(st, "adj_t"), w.index_select(0, perm), x, st.num_src)


def _fits_cusparse(st: EdgeStructure, x: Tensor) -> bool:
    """cuSPARSE refuses a CSR matrix with more stored entries than cells (duplicated edges
    of a small graph); the CPU kernels sum duplicates."""
    return x.device.type != "cuda" or st.src.numel() <= st.num_dst * st.num_src


def _per_group(crow: Tensor, col: Tensor, w: Tensor, x: Tensor, rows: int) -> Tensor:
    """``(rows, G, D)``: per group ``g``, CSR(crow, col, w[:, g]) @ x[:, g]."""
    n, g, d = x.shape
    if g == 1:
        mat = csr_tensor(crow, col, w.reshape(-1), (rows, n))
        return (mat @ x.view(n, d)).view(rows, 1, d)
    wt = w.t().contiguous()  # (G, E)
    xt = x.permute(1, 0, 2).contiguous()  # (G, N, D)
    out = x.new_empty(g, rows, d)
    for i in range(g):
        torch.mm(csr_tensor(crow, col, wt[i], (rows, n)), xt[i], out=out[i])
    return out.permute(1, 0, 2).contiguous()  # (rows, G, D)

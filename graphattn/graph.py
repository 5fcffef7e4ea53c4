"""Typed graph structures: who attends to whom.

Attention is message passing: every target (destination, query) node ``i`` receives messages
from its source (key/value) nodes ``j``, one per in-edge ``j -> i``. A :class:`Graph` states
which in-edges exist. Edge lists follow PyG's convention: ``edge_index[0]`` holds sources,
``edge_index[1]`` targets, and a duplicated edge counts as often as it appears.

Axis legend used in shape comments: ``B`` batch, ``Nd`` target nodes, ``Ns`` source nodes,
``E`` edges.

Kinds:

============  ==================================================  =======================
kind          in-edges of target ``i``                            built with
============  ==================================================  =======================
complete      every source (self- or cross-attention)             :meth:`Graph.complete`
causal        sources ``j <= i``                                  :meth:`Graph.causal`
window        sources ``|i - j| <= radius`` (or ``0 <= i-j <= r``)  :meth:`Graph.window`
grid          cells within ``radius`` on an ``h x w`` image grid  :meth:`Graph.grid`
edges         an explicit edge list                               :meth:`Graph.from_edge_index`
per_sample    one edge list per sample of a padded batch          :meth:`Graph.per_sample`
============  ==================================================  =======================

Any graph can carry a key padding mask for batches (:meth:`Graph.pad`): padded source nodes
send no messages in that sample.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import torch
from torch import Tensor

from ._checks import check_int
from ._pyg import is_pyg_data, is_sparse_adjacency, is_sparse_tensor_object

if TYPE_CHECKING:  # named in annotations only: graphattn imports neither
    from torch_geometric.data import Data
    from torch_sparse import SparseTensor

__all__ = [
    "Graph",
    "CompleteGraph",
    "CausalGraph",
    "WindowGraph",
    "GridGraph",
    "EdgeListGraph",
    "PerSampleGraph",
    "EdgeStructure",
    "as_graph",
]

#: What the ``graph`` argument of the attention calls takes (see :func:`as_graph`); a list
#: holds one ``edge_index`` per sample (:meth:`Graph.per_sample`).
GraphLike: TypeAlias = "Graph | Tensor | list[Tensor] | SparseTensor | Data | None"

#: the sparse layouts :meth:`Graph.from_sparse` reads
_SPARSE_LAYOUTS = (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc)


@dataclass(frozen=True)
class EdgeStructure:
    """Edges sorted by target node (CSR by destination), as the edge backend consumes them.

    Attributes:
        perm: position of each sorted edge in the original edge list, or ``None`` when the
            original list is already sorted by target. Shape ``(E,)``.
        src: source of each sorted edge. Shape ``(E,)``.
        dst: target of each sorted edge (non-decreasing). Shape ``(E,)``.
        ptr: ``ptr[i]:ptr[i+1]`` are the sorted edges of target ``i``. Shape ``(Nd + 1,)``.
        num_src: number of source nodes ``Ns``.
        cache: derived structures (the order by source, sparse incidence matrices), built on
            first use by the edge backend.
    """

    perm: Tensor | None
    src: Tensor
    dst: Tensor
    ptr: Tensor
    num_src: int
    cache: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_dst(self) -> int:
        return self.ptr.numel() - 1


class Graph:
    """Base class of all graph kinds: the in-edges of ``num_dst`` targets from ``num_src``
    sources, plus an optional key padding mask.

    Subclasses describe structure; this class provides what every kind has: the edge count,
    a dense boolean mask (:meth:`materialize`), an edge list (:meth:`edge_index`), device
    moves (:meth:`to`) and padding (:meth:`pad`).

    Shapes:
        - ``key_padding_mask``: ``(B, Ns)`` bool, ``True`` marks a padded source node
          (the convention of ``nn.MultiheadAttention``).
    """

    #: a name for messages and reprs; capabilities are the attributes below, never this name.
    kind: str = "graph"
    #: whether the dense backend can run this kind without materialising a mask.
    mask_free: bool = False
    #: whether target ``i`` attends exactly to sources ``0..i`` (the fused kernel's
    #: ``is_causal``).
    is_causal: bool = False
    #: the layout attention weights come back in from every backend: ``"dense"``
    #: ``([B,] H, Nd, Ns)`` or ``"edges"`` ``([B,] E, H)`` aligned with :meth:`edge_index`.
    weights_layout: Literal["dense", "edges"] = "edges"

    def __init__(self, num_dst: int, num_src: int, device: torch.device | str | None = None):
        self.num_dst = check_int("num_dst", num_dst, minimum=0)
        self.num_src = check_int("num_src", num_src, minimum=0)
        self.device = canonical_device(device)
        self.key_padding_mask: Tensor | None = None
        self._cache: dict[Any, Any] = {}

    # ------------------------------------------------------------------ constructors
    @staticmethod
    def complete(num_dst: int, num_src: int | None = None, *, device=None) -> CompleteGraph:
        """Every target attends to every source: dense self-attention, or cross-attention
        when ``num_src`` differs from ``num_dst``."""
        return CompleteGraph(num_dst, num_dst if num_src is None else num_src, device=device)

    @staticmethod
    def causal(num_nodes: int, *, device=None) -> CausalGraph:
        """Target ``i`` attends to sources ``0..i`` (autoregressive self-attention)."""
        return CausalGraph(num_nodes, device=device)

    @staticmethod
    def window(num_nodes: int, radius: int, *, causal: bool = False, device=None) -> WindowGraph:
        """1-D sliding window: ``|i - j| <= radius`` (``0 <= i - j <= radius`` if causal)."""
        return WindowGraph(num_nodes, radius, causal=causal, device=device)

    @staticmethod
    def grid(height: int, width: int, radius: int = 1, *, device=None) -> GridGraph:
        """2-D neighbourhood on a row-major ``height x width`` grid: cell ``(r, c)`` attends
        to cells ``(r', c')`` with ``max(|r - r'|, |c - c'|) <= radius`` (itself included)."""
        return GridGraph(height, width, radius, device=device)

    @staticmethod
    def from_edge_index(
        edge_index: Tensor,
        num_dst: int | None = None,
        num_src: int | None = None,
    ) -> EdgeListGraph:
        """An explicit edge list in PyG's convention (``edge_index[0]`` = source,
        ``edge_index[1]`` = target). Sizes default to ``max index + 1``.

        Args:
            edge_index: integer tensor of shape ``(2, E)``.
            num_dst: number of target nodes.
            num_src: number of source nodes (defaults to ``num_dst`` when that is given).
        """
        return EdgeListGraph(edge_index, num_dst, num_src)

    @staticmethod
    def per_sample(
        edge_index: Sequence[Tensor] | Tensor,
        num_dst: int,
        num_src: int | None = None,
        *,
        edge_mask: Tensor | None = None,
        lengths: Tensor | list[int] | None = None,
    ) -> PerSampleGraph:
        """One graph per sample of a padded batch ``(B, N, C)``: see :class:`PerSampleGraph`.

        Args:
            edge_index: a list of ``B`` edge lists ``(2, E_b)``, or a padded ``(B, 2, E)``
                tensor; node ids are local to their sample (``0..N-1``).
            num_dst: target nodes per sample (the padded ``N``).
            num_src: source nodes per sample (defaults to ``num_dst``).
            edge_mask: with the padded form, ``(B, E)`` bool, ``True`` = a real edge
                (default: every column is real).
            lengths: real source nodes per sample ``(B,)``: pads the graph as :meth:`pad`
                does, and refuses edges from a padded source.

        Example:
            >>> import torch
            >>> g = Graph.per_sample([torch.tensor([[0, 1], [1, 0]]), torch.tensor([[2], [0]])], 3)
            >>> g.edge_index(), g.edge_batch  # local ids, and the sample of each edge
            (tensor([[0, 1, 2],
                    [1, 0, 0]]), tensor([0, 0, 1]))
            >>> g.flat().edge_index()  # node i of sample b is b * 3 + i
            tensor([[0, 1, 5],
                    [1, 0, 3]])
        """
        return PerSampleGraph(edge_index, num_dst, num_src, edge_mask=edge_mask, lengths=lengths)

    @staticmethod
    def from_sparse(adj_t: Tensor | SparseTensor) -> EdgeListGraph:
        """The edges of a sparse adjacency matrix in PyG's ``adj_t`` convention.

        ``adj_t`` is ``(N_dst, N_src)``: row ``i`` holds the in-edges of target ``i``, so a
        stored entry ``adj_t[i, j]`` is the edge ``j -> i`` (PyG's ``MessagePassing`` reads
        its rows as targets and its columns as sources; an adjacency ``adj[j, i]`` indexed
        by source first is ``adj_t = adj.t()``). Every stored entry is one edge, in stored
        order (by target for CSR), so ``edge_attr`` follows that order; its values are not
        read (a stored zero is an edge, as in PyG).

        Args:
            adj_t: a torch sparse COO, CSR or CSC matrix, or a ``torch_sparse.SparseTensor``.

        Shapes:
            - adj_t: ``(N_dst, N_src)``; the graph's ``edge_index()``: ``(2, nnz)``

        Example:
            >>> import torch
            >>> adj_t = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0]]).to_sparse_csr()
            >>> Graph.from_sparse(adj_t).edge_index()  # 1 -> 0, 2 -> 0, 2 -> 1
            tensor([[1, 2, 2],
                    [0, 0, 1]])
        """
        edge_index, num_dst, num_src = _adjacency_edges(adj_t)
        return EdgeListGraph(edge_index, num_dst, num_src)

    @staticmethod
    def from_pyg(data: Data) -> EdgeListGraph:
        """Build from a PyG ``Data`` or ``Batch``: its ``edge_index`` and ``num_nodes``, or
        its ``adj_t`` (``T.ToSparseTensor``; see :meth:`from_sparse`). A batch of complete
        graphs is recognised from the edges themselves."""
        edge_index = getattr(data, "edge_index", None)
        if edge_index is None:
            adj_t = getattr(data, "adj_t", None)
            if adj_t is not None:
                return Graph.from_sparse(adj_t)
            raise ValueError(
                f"data must have an edge_index or adj_t attribute, got {type(data).__name__}"
            )
        num_nodes = data.num_nodes
        return EdgeListGraph(edge_index, num_nodes, num_nodes)

    # ------------------------------------------------------------------ padding / device
    def pad(
        self,
        lengths: Tensor | list[int] | None = None,
        *,
        key_padding_mask: Tensor | None = None,
    ) -> Graph:
        """Return a copy whose sources are padded per sample.

        Args:
            lengths: number of real source nodes per sample, ``(B,)``; nodes at positions
                ``>= lengths[b]`` are padding.
            key_padding_mask: ``(B, Ns)`` bool, ``True`` = padded. Give one of the two.
        """
        if (lengths is None) == (key_padding_mask is None):
            raise ValueError("pad() takes exactly one of lengths or key_padding_mask")
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=self.device)
            if lengths.dim() != 1 or lengths.dtype.is_floating_point or lengths.is_complex():
                raise ValueError(
                    f"lengths must be a 1-D integer tensor, got shape {tuple(lengths.shape)} "
                    f"and dtype {lengths.dtype}"
                )
            if bool((lengths < 0).any()) or bool((lengths > self.num_src).any()):
                raise ValueError(
                    f"lengths must lie in [0, num_src={self.num_src}], got {lengths.tolist()}"
                )
            pos = torch.arange(self.num_src, device=self.device)
            mask = pos[None, :] >= lengths[:, None]  # (B, Ns)
        else:
            mask = key_padding_mask
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                raise TypeError(
                    "key_padding_mask must be a bool tensor (True = padded), got "
                    f"{getattr(mask, 'dtype', type(mask).__name__)}"
                )
            if mask.dim() != 2 or mask.shape[1] != self.num_src:
                raise ValueError(
                    f"key_padding_mask must have shape (B, num_src={self.num_src}), "
                    f"got {tuple(mask.shape)}"
                )
            mask = mask.to(self.device)
        out = copy.copy(self)
        out._cache = self._cache  # structure is shared; padding never enters the cache
        out.key_padding_mask = mask
        return out

    def unpadded(self) -> Graph:
        """A copy without the key padding mask."""
        out = copy.copy(self)
        out.key_padding_mask = None
        return out

    def to(self, device: torch.device | str) -> Graph:
        """A copy of the graph with its tensors on ``device`` (``self`` when already there;
        ``"cuda"`` means the current CUDA device, as for tensors)."""
        device = canonical_device(device)
        if device == self.device:
            return self
        out = copy.copy(self)
        out.device = device
        out._cache = {}
        for name, value in vars(self).items():
            if isinstance(value, Tensor) and name != "_cache":
                setattr(out, name, value.to(device))
        return out

    # ------------------------------------------------------------------ structure
    @property
    def num_edges(self) -> int:
        """Number of structural edges (duplicates counted, padding ignored)."""
        raise NotImplementedError

    @property
    def is_complete(self) -> bool:
        """Whether every target has exactly one in-edge from every source."""
        return False

    def complete_blocks(self) -> Tensor | None:
        """Node offsets ``(G + 1,)`` when this graph is a disjoint union of complete
        self-attention graphs over contiguous node ranges (block structure), else ``None``."""
        return None

    def in_degree(self) -> Tensor:
        """Number of in-edges of each target, ``(Nd,)`` int64 (padding ignored)."""
        st = self.edge_structure()
        return st.ptr[1:] - st.ptr[:-1]

    def edge_index(self) -> Tensor:
        """The edge list ``(2, E)`` (int64, PyG convention), built on demand and cached."""
        if "edge_index" not in self._cache:
            self._cache["edge_index"] = self._build_edge_index()
        return self._cache["edge_index"]

    def _build_edge_index(self) -> Tensor:
        mask = self.materialize_structure()  # (Nd, Ns)
        if torch.compiler.is_compiling():  # torch.compile / export: E is known, no nonzero
            nd, ns = mask.shape
            dst = torch.arange(nd, device=mask.device).repeat_interleave(ns)  # (Nd * Ns,)
            src = torch.arange(ns, device=mask.device).repeat(nd)  # (Nd * Ns,)
            return _compact(torch.stack([src, dst]), mask.reshape(-1), self.num_edges)
        return mask.nonzero().t().flip(0).contiguous()

    def edge_structure(self) -> EdgeStructure:
        """Edges sorted by target, cached (see :class:`EdgeStructure`)."""
        if "structure" not in self._cache:
            self._cache["structure"] = _sort_by_target(
                self.edge_index(), self.num_dst, self.num_src
            )
        return self._cache["structure"]

    def materialize_structure(self) -> Tensor:
        """Dense boolean ``(Nd, Ns)`` mask of the structure, ignoring padding (cached)."""
        if "mask" not in self._cache:
            self._cache["mask"] = self._build_mask()
        return self._cache["mask"]

    def _build_mask(self) -> Tensor:
        raise NotImplementedError

    def edge_counts(self) -> Tensor | None:
        """``(Nd, Ns)`` int64 number of copies of each edge, or ``None`` when no edge
        appears twice (then :meth:`materialize_structure` says everything)."""
        return None

    def materialize(self) -> Tensor:
        """Dense boolean mask, ``True`` where target ``i`` receives a message from ``j``.

        Shapes:
            ``(Nd, Ns)``, or ``(B, Nd, Ns)`` when the graph carries key padding.
        """
        mask = self.materialize_structure()  # (Nd, Ns), cached: never hand it out
        if self.key_padding_mask is not None:
            return mask[None] & ~self.key_padding_mask[:, None, :]  # (B, Nd, Ns)
        return mask.clone()

    def __repr__(self) -> str:
        pad = (
            "" if self.key_padding_mask is None else f", padded_batch={len(self.key_padding_mask)}"
        )
        return (
            f"{type(self).__name__}(num_dst={self.num_dst}, num_src={self.num_src}, "
            f"num_edges={self.num_edges}{self._extra_repr()}{pad}, device={self.device})"
        )

    def _extra_repr(self) -> str:
        return ""


class CompleteGraph(Graph):
    """Every target attends to every source (dense self- or cross-attention)."""

    kind = "complete"
    mask_free = True
    weights_layout = "dense"

    @property
    def num_edges(self) -> int:
        return self.num_dst * self.num_src

    @property
    def is_complete(self) -> bool:
        return True

    def _build_mask(self) -> Tensor:
        return torch.ones(self.num_dst, self.num_src, dtype=torch.bool, device=self.device)

    def _build_edge_index(self) -> Tensor:
        dst = torch.arange(self.num_dst, device=self.device).repeat_interleave(self.num_src)
        src = torch.arange(self.num_src, device=self.device).repeat(self.num_dst)
        return torch.stack([src, dst])


class CausalGraph(Graph):
    """Target ``i`` attends to sources ``0..i``."""

    kind = "causal"
    mask_free = True
    is_causal = True
    weights_layout = "dense"

    def __init__(self, num_nodes: int, device=None):
        super().__init__(num_nodes, num_nodes, device)

    @property
    def num_edges(self) -> int:
        return self.num_dst * (self.num_dst + 1) // 2

    def _build_mask(self) -> Tensor:
        n = self.num_dst
        return torch.ones(n, n, dtype=torch.bool, device=self.device).tril()


class WindowGraph(Graph):
    """1-D sliding window of ``radius`` (symmetric, or causal: ``0 <= i - j <= radius``)."""

    kind = "window"

    def __init__(self, num_nodes: int, radius: int, *, causal: bool = False, device=None):
        super().__init__(num_nodes, num_nodes, device)
        self.radius = check_int("radius", radius, minimum=0)
        self.causal = bool(causal)

    @property
    def num_edges(self) -> int:
        n, r = self.num_dst, min(self.radius, max(self.num_dst - 1, 0))
        one_side = r * n - r * (r + 1) // 2  # pairs with 1 <= i - j <= r
        return n + one_side * (1 if self.causal else 2)

    def _build_edge_index(self) -> Tensor:
        # O(N * radius) memory (the dense mask would be N x N); same order as mask.nonzero():
        # by target, then by source.
        n, r = self.num_dst, min(self.radius, max(self.num_dst - 1, 0))
        offsets = torch.arange(-r, 1 if self.causal else r + 1, device=self.device)  # (W,)
        dst = torch.arange(n, device=self.device)[:, None].expand(n, len(offsets))  # (N, W)
        src = dst + offsets  # (N, W)
        valid = (src >= 0) & (src < n)  # (N, W)
        if torch.compiler.is_compiling():  # torch.compile / export: E is known, no nonzero
            return _compact(torch.stack([src, dst]).view(2, -1), valid.view(-1), self.num_edges)
        return torch.stack([src[valid], dst[valid]])  # (2, E)

    def _build_mask(self) -> Tensor:
        pos = torch.arange(self.num_dst, device=self.device)
        diff = pos[:, None] - pos[None, :]  # (Nd, Ns): i - j
        if self.causal:
            return (diff >= 0) & (diff <= self.radius)
        return diff.abs() <= self.radius

    def _extra_repr(self) -> str:
        return f", radius={self.radius}, causal={self.causal}"


class GridGraph(Graph):
    """Neighbourhoods of radius ``radius`` (Chebyshev distance) on a row-major image grid."""

    kind = "grid"

    def __init__(self, height: int, width: int, radius: int = 1, device=None):
        self.height = check_int("height", height, minimum=0)
        self.width = check_int("width", width, minimum=0)
        self.radius = check_int("radius", radius, minimum=0)
        super().__init__(height * width, height * width, device)

    def _span(self, n: int) -> int:
        r = min(self.radius, max(n - 1, 0))
        return n + 2 * (r * n - r * (r + 1) // 2)

    @property
    def num_edges(self) -> int:
        return self._span(self.height) * self._span(self.width)

    def _build_mask(self) -> Tensor:
        rows = torch.arange(self.height, device=self.device).repeat_interleave(self.width)
        cols = torch.arange(self.width, device=self.device).repeat(self.height)
        near_r = (rows[:, None] - rows[None, :]).abs() <= self.radius
        near_c = (cols[:, None] - cols[None, :]).abs() <= self.radius
        return near_r & near_c  # (Nd, Ns)

    def _build_edge_index(self) -> Tensor:
        # O(N * (2 radius + 1)^2) memory, no N x N mask; same order as mask.nonzero(): by
        # target, then by source (row-major offsets keep a valid cell's sources increasing).
        h, w, dev = self.height, self.width, self.device
        rr = min(self.radius, max(h - 1, 0))
        rc = min(self.radius, max(w - 1, 0))
        dr = torch.arange(-rr, rr + 1, device=dev).repeat_interleave(2 * rc + 1)  # (W,)
        dc = torch.arange(-rc, rc + 1, device=dev).repeat(2 * rr + 1)  # (W,)
        rows = torch.arange(h, device=dev).repeat_interleave(w)[:, None]  # (N, 1)
        cols = torch.arange(w, device=dev).repeat(h)[:, None]  # (N, 1)
        sr, sc = rows + dr, cols + dc  # (N, W): source cells
        valid = (sr >= 0) & (sr < h) & (sc >= 0) & (sc < w)  # (N, W)
        src = sr * w + sc  # (N, W)
        dst = (rows * w + cols).expand_as(src)  # (N, W)
        if torch.compiler.is_compiling():  # torch.compile / export: E is known, no nonzero
            return _compact(torch.stack([src, dst]).view(2, -1), valid.view(-1), self.num_edges)
        return torch.stack([src[valid], dst[valid]])  # (2, E)

    def _extra_repr(self) -> str:
        return f", height={self.height}, width={self.width}, radius={self.radius}"


class EdgeListGraph(Graph):
    """An explicit edge list in PyG's convention. Duplicated edges count as often as they
    appear (as in PyG's ``softmax``/``scatter``), on every backend."""

    kind = "edges"

    def __init__(
        self,
        edge_index: Tensor,
        num_dst: int | None = None,
        num_src: int | None = None,
    ):
        if not isinstance(edge_index, Tensor):
            raise TypeError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__}")
        if (
            edge_index.dtype.is_floating_point
            or edge_index.is_complex()
            or edge_index.dtype == (torch.bool)
        ):
            raise TypeError(f"edge_index must have an integer dtype, got {edge_index.dtype}")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(
                f"edge_index must have shape (2, E) (row 0 = sources, row 1 = targets), "
                f"got {tuple(edge_index.shape)}"
            )
        edge_index = edge_index.long()
        num_edges = edge_index.shape[1]
        if num_src is None and num_dst is not None:
            num_src = num_dst
        if num_dst is not None and torch.compiler.is_compiling():
            # torch.compile / export: the range check runs inside the compiled code (reading
            # the ids into Python would break the graph); a bad id raises a RuntimeError.
            check_int("num_dst", num_dst, minimum=0)
            check_int("num_src", num_src, minimum=0)
            if num_edges > 0:
                src, dst = edge_index[0], edge_index[1]
                ok = (src >= 0).all() & (src < num_src).all() & (dst >= 0).all()
                torch._assert_async(
                    ok & (dst < num_dst).all(),
                    "edge_index has an index out of range (negative, or a source >= num_src "
                    "or a target >= num_dst)",
                )
            super().__init__(num_dst, num_src, edge_index.device)
            self._edge_index = edge_index
            return
        if num_edges > 0:
            lo = int(edge_index.min())
            if lo < 0:
                raise IndexError(f"edge_index has a negative index {lo}")
        hi_src = int(edge_index[0].max()) + 1 if num_edges else 0
        hi_dst = int(edge_index[1].max()) + 1 if num_edges else 0
        if num_dst is None:
            num_dst = max(hi_dst, hi_src) if num_src is None else hi_dst
        if num_src is None:
            num_src = max(hi_dst, hi_src)
        check_int("num_dst", num_dst, minimum=0)
        check_int("num_src", num_src, minimum=0)
        if hi_src > num_src:
            raise IndexError(
                f"edge_index[0] (sources) has index {hi_src - 1}, out of range for "
                f"num_src={num_src}"
            )
        if hi_dst > num_dst:
            raise IndexError(
                f"edge_index[1] (targets) has index {hi_dst - 1}, out of range for "
                f"num_dst={num_dst}"
            )
        super().__init__(num_dst, num_src, edge_index.device)
        self._edge_index = edge_index

    @property
    def num_edges(self) -> int:
        return self._edge_index.shape[1]

    def _build_edge_index(self) -> Tensor:
        return self._edge_index

    def edge_counts(self) -> Tensor | None:
        if "counts" in self._cache:
            return self._cache["counts"]
        counts = torch.zeros(self.num_dst * self.num_src, dtype=torch.long, device=self.device)
        src, dst = self._edge_index
        counts.index_add_(0, dst * self.num_src + src, torch.ones_like(src))
        counts = counts.view(self.num_dst, self.num_src)
        if torch.compiler.is_compiling():  # whether an edge repeats is data: counts always
            return counts
        self._cache["counts"] = counts if bool((counts > 1).any()) else None
        return self._cache["counts"]

    def _build_mask(self) -> Tensor:
        mask = torch.zeros(self.num_dst, self.num_src, dtype=torch.bool, device=self.device)
        src, dst = self._edge_index
        mask[dst, src] = True
        return mask

    def has_duplicates(self) -> bool:
        """Whether any edge appears more than once."""
        if "dups" not in self._cache:
            key = self._edge_index[1] * self.num_src + self._edge_index[0]  # (E,)
            size = self.num_dst * self.num_src
            if key.numel() == 0:
                dups = False
            elif size <= max(4 * key.numel(), 1 << 22):  # counting beats sorting
                dups = bool(torch.bincount(key, minlength=size).max() > 1)
            else:
                dups = key.numel() != torch.unique(key).numel()
            self._cache["dups"] = dups
        return self._cache["dups"]

    @property
    def is_complete(self) -> bool:
        if torch.compiler.is_compiling() and "dups" not in self._cache:
            return False  # compiled code reads no edge ids into Python (a complete edge
            # list then runs as a graph: same numbers)
        return (
            self.num_edges == self.num_dst * self.num_src
            and self.num_edges > 0
            and not self.has_duplicates()
        )

    def complete_blocks(self) -> Tensor | None:
        """Node offsets ``(G + 1,)`` if this graph is a disjoint union of complete
        self-attention graphs over contiguous node ranges (a PyG batch of complete graphs,
        one block per sample), else ``None``. A single complete graph is one block (``None``
        in compiled code, unless found before: it reads the edge ids)."""
        if "blocks" in self._cache:
            return self._cache["blocks"]
        if torch.compiler.is_compiling():
            return None
        self._cache["blocks"] = blocks = self._find_complete_blocks()
        return blocks

    def _find_complete_blocks(self) -> Tensor | None:
        n, e = self.num_dst, self.num_edges
        if n != self.num_src or e == 0 or n == 0:
            return None
        src, dst = self._edge_index
        # In-edges of i must be exactly the range [lo_i, hi_i] containing i, without copies.
        lo = torch.full((n,), n, dtype=torch.long, device=self.device)
        lo.scatter_reduce_(0, dst, src, "amin")
        hi = torch.full((n,), -1, dtype=torch.long, device=self.device)
        hi.scatter_reduce_(0, dst, src, "amax")
        deg = torch.bincount(dst, minlength=n)
        idx = torch.arange(n, device=self.device)
        if not bool(((lo <= idx) & (idx <= hi) & (deg == hi - lo + 1)).all()):
            return None
        # Every node of a block shares its block's [lo, hi]; blocks tile 0..n-1.
        starts = torch.unique(lo)
        if not bool((lo[starts] == starts).all()):
            return None
        ptr = torch.cat([starts, torch.tensor([n], device=self.device)])
        sizes = ptr[1:] - ptr[:-1]
        block_of = torch.repeat_interleave(torch.arange(len(sizes), device=self.device), sizes)
        if not bool((hi == ptr[1:][block_of] - 1).all()):
            return None
        if int((sizes * sizes).sum()) != e or self.has_duplicates():
            return None
        return ptr


class PerSampleGraph(Graph):
    """One graph per sample of a padded batch ``(B, N, C)``: sample ``b``'s edges join its
    own nodes ``0..N-1``, and no edge crosses samples.

    Attention folds the batch into the node axis: :func:`~graphattn.graph_attention` (and so
    :class:`~graphattn.GraphAttention`) turns ``(B, H, N, D)`` into ``(1, H, B * N, D)``,
    runs any backend on :meth:`flat`, the block-diagonal union of the samples' graphs over
    ``B * N`` nodes (node ``i`` of sample ``b`` is ``b * N + i``, as in a PyG ``Batch``), and
    unfolds the output. The backends see one ordinary edge list, so every one of them runs
    it, and the result is what running the samples one by one gives (no edge crosses
    samples; a sample without edges gets zero output). The dense backend then masks
    ``(B * Nd) x (B * Ns)`` pairs, ``B`` times those of ``B`` separate masks; ``auto`` judges
    the density of that flat graph, so big batches of sparse graphs run on the edge list.

    Sizes are per sample (``num_dst``, ``num_src``: the padded ``N``), so the graph checks
    against the inputs' ``N`` as any other, and its key padding mask is ``(B, Ns)`` as for
    any other graph (:meth:`pad`, ``key_padding_mask=`` of the modules). Edges keep the
    order they are given in: sample 0's, then sample 1's, and so on (with the padded form,
    the real edges of each row in column order); per-edge inputs (a per-edge
    ``attn_bias`` ``(E, H)``, ``edge_features``, ``edge_attr`` ``(E, edge_dim)``) and the
    attention weights ``(E, H)`` (on :meth:`flat`) follow it, ``E`` counting the edges of
    all samples.

    ``graph_attention`` and ``GraphAttention`` take the two forms directly as ``graph``: a
    list of ``B`` edge lists, or a ``(B, 2, E)`` tensor whose columns are all real edges;
    build the graph with :meth:`Graph.per_sample` for an ``edge_mask`` or ``lengths``
    (``GraphTransformer`` reads a list as one graph per layer: give it the built graph).

    Args:
        edge_index: a list of ``B`` integer tensors ``(2, E_b)``, or one ``(B, 2, E)``
            tensor padded along ``E``; row 0 sources, row 1 targets, ids local to the sample.
        num_dst: target nodes per sample.
        num_src: source nodes per sample (defaults to ``num_dst``).
        edge_mask: ``(B, E)`` bool, ``True`` = real edge, for the padded form; the other
            columns are ignored whatever they hold.
        lengths: real source nodes per sample ``(B,)``, as :meth:`Graph.pad` (edges from a
            padded source are refused).
        name: the argument's name in error messages.

    Shapes:
        - edge_index: ``B x (2, E_b)`` or ``(B, 2, E)``; edge_mask: ``(B, E)``
        - :meth:`~graphattn.Graph.edge_index`: ``(2, E)`` local ids, ``E = sum_b E_b``;
          :attr:`edge_batch`: ``(E,)``
        - :meth:`materialize`: ``(B, Nd, Ns)``; key_padding_mask: ``(B, Ns)``

    Example:
        >>> import torch
        >>> from graphattn import GraphAttention
        >>> attn = GraphAttention(8, 2)
        >>> x = torch.randn(2, 4, 8)  # (B, N, C)
        >>> graphs = [torch.tensor([[0, 1, 2], [1, 2, 3]]), torch.tensor([[3], [0]])]
        >>> attn(x, graphs).shape  # sample b attends over graphs[b] only
        torch.Size([2, 4, 8])
    """

    kind = "per_sample"

    def __init__(
        self,
        edge_index: Sequence[Tensor] | Tensor,
        num_dst: int,
        num_src: int | None = None,
        *,
        edge_mask: Tensor | None = None,
        lengths: Tensor | list[int] | None = None,
        name: str = "edge_index",
    ):
        check_int("num_dst", num_dst, minimum=0)
        num_src = num_dst if num_src is None else check_int("num_src", num_src, minimum=0)
        if isinstance(edge_index, Tensor):
            local, edge_batch, batch, columns = _padded_edges(edge_index, edge_mask, name)
        elif isinstance(edge_index, list | tuple):
            if edge_mask is not None:
                raise ValueError(
                    f"edge_mask is for a padded (B, 2, E) {name}; a list of {len(edge_index)} "
                    f"edge lists has no padding to mask"
                )
            local, edge_batch, batch, columns = _listed_edges(edge_index, name)
        else:
            raise TypeError(
                f"{name} must be a list of (2, E_b) tensors (one per sample) or a padded "
                f"(B, 2, E) tensor, got {type(edge_index).__name__}"
            )
        _check_local_ids(local, edge_batch, columns, num_dst, num_src, name)
        super().__init__(num_dst, num_src, local.device)
        self.batch_size = batch
        self._local = local  # (2, E) ids within each sample
        #: the sample of each edge ``(E,)`` (PyG's ``batch`` vector, for edges)
        self.edge_batch = edge_batch
        src = local[0] + edge_batch * num_src  # (E,) ids in the flat graph
        dst = local[1] + edge_batch * num_dst  # (E,)
        self._flat = EdgeListGraph(torch.stack([src, dst]), batch * num_dst, batch * num_src)
        if lengths is not None:
            self.key_padding_mask = self.pad(lengths).key_padding_mask  # (B, Ns)
            from_padded = self.key_padding_mask[edge_batch, local[0]]  # (E,)
            if bool(from_padded.any()):
                e = int(from_padded.nonzero()[0])
                b, j = int(edge_batch[e]), int(local[0, e])
                length = int((~self.key_padding_mask[b]).sum())
                raise ValueError(
                    f"{name}[{b}][0, {int(columns[e])}] = {j} is a padded source of sample "
                    f"{b} (lengths[{b}]={length}): its edges cannot carry messages"
                )

    @property
    def num_edges(self) -> int:
        """Edges of all samples together (duplicates counted)."""
        return self._local.shape[1]

    def flat(self) -> EdgeListGraph:
        """The block-diagonal graph over ``B * Nd`` targets and ``B * Ns`` sources that
        attention runs on: target ``i`` of sample ``b`` is ``b * Nd + i``, source ``j`` is
        ``b * Ns + j``, edges in the order of :meth:`~graphattn.Graph.edge_index`; padded
        ``(1, B * Ns)`` when this graph is padded."""
        if self.key_padding_mask is None:
            return self._flat
        return self._flat.pad(key_padding_mask=self.key_padding_mask.reshape(1, -1))

    def pad(
        self,
        lengths: Tensor | list[int] | None = None,
        *,
        key_padding_mask: Tensor | None = None,
    ) -> PerSampleGraph:
        """:meth:`Graph.pad`, with one row per sample: ``lengths`` ``(B,)`` or
        ``key_padding_mask`` ``(B, Ns)``."""
        out = super().pad(lengths, key_padding_mask=key_padding_mask)
        rows = out.key_padding_mask.shape[0]
        if rows != self.batch_size:
            given = "lengths" if lengths is not None else "key_padding_mask"
            raise ValueError(
                f"{given} has {rows} rows but the per-sample graph has B={self.batch_size} samples"
            )
        return out

    def to(self, device: torch.device | str) -> PerSampleGraph:
        out = super().to(device)
        if out is not self:
            out._flat = self._flat.to(device)
        return out

    def _build_edge_index(self) -> Tensor:
        return self._local

    def _keys(self) -> Tensor:
        """Each edge's position in a ``(B, Nd, Ns)`` mask, flattened ``(E,)``."""
        src, dst = self._local
        return (self.edge_batch * self.num_dst + dst) * self.num_src + src

    def _build_mask(self) -> Tensor:
        b, nd, ns = self.batch_size, self.num_dst, self.num_src
        mask = torch.zeros(b * nd * ns, dtype=torch.bool, device=self.device)
        mask[self._keys()] = True
        return mask.view(b, nd, ns)

    def materialize_structure(self) -> Tensor:
        """Dense boolean ``(B, Nd, Ns)`` mask of each sample's structure, ignoring padding
        (cached)."""
        return super().materialize_structure()

    def materialize(self) -> Tensor:
        """Dense boolean ``(B, Nd, Ns)`` mask, ``True`` where target ``i`` of sample ``b``
        receives a message from its source ``j`` (padding applied)."""
        mask = self.materialize_structure()  # (B, Nd, Ns), cached: never hand it out
        if self.key_padding_mask is not None:
            return mask & ~self.key_padding_mask[:, None, :]
        return mask.clone()

    def edge_counts(self) -> Tensor | None:
        """``(B, Nd, Ns)`` int64 copies of each edge, or ``None`` when no edge appears
        twice."""
        if not self._flat.has_duplicates():
            return None
        b, nd, ns = self.batch_size, self.num_dst, self.num_src
        counts = torch.zeros(b * nd * ns, dtype=torch.long, device=self.device)
        counts.index_add_(0, self._keys(), torch.ones_like(self.edge_batch))
        return counts.view(b, nd, ns)

    def in_degree(self) -> Tensor:
        """Number of in-edges of each target of each sample, ``(B, Nd)`` int64."""
        return self._flat.in_degree().view(self.batch_size, self.num_dst)

    def edge_structure(self) -> EdgeStructure:
        """Refused: the samples' targets share ids; the structure attention uses is
        ``flat().edge_structure()``."""
        raise TypeError(
            "a PerSampleGraph has no single edge structure over its per-sample ids; attention "
            "runs on graph.flat() (B * N nodes): use graph.flat().edge_structure()"
        )

    def _extra_repr(self) -> str:
        return f", batch_size={self.batch_size}"


def _listed_edges(edges: Sequence[Tensor], name: str) -> tuple[Tensor, Tensor, int, Tensor]:
    """``(local, edge_batch, B, columns)`` of a list of per-sample edge lists: the edges
    ``(2, E)``, the sample of each ``(E,)``, the batch size and each edge's column in its
    sample's list ``(E,)``."""
    if len(edges) == 0:
        raise ValueError(f"{name} must hold one edge list per sample, got an empty list")
    device = None
    for b, ei in enumerate(edges):
        if not isinstance(ei, Tensor):
            raise TypeError(
                f"{name}[{b}] must be a torch.Tensor (a list {name} holds one (2, E_b) "
                f"edge_index tensor per sample), got {type(ei).__name__}"
            )
        if ei.dtype.is_floating_point or ei.is_complex() or ei.dtype == torch.bool:
            raise TypeError(f"{name}[{b}] must have an integer dtype, got {ei.dtype}")
        if ei.dim() != 2 or ei.shape[0] != 2:
            raise ValueError(
                f"{name}[{b}] must have shape (2, E_b) (row 0 = sources, row 1 = targets), "
                f"got {tuple(ei.shape)}"
            )
        device = ei.device if device is None else device
        if ei.device != device:
            raise ValueError(f"{name}[{b}] is on {ei.device} but {name}[0] is on {device}")
    counts = torch.tensor([ei.shape[1] for ei in edges], device=device)  # (B,)
    local = torch.cat([ei.long() for ei in edges], dim=1)  # (2, E)
    edge_batch = torch.repeat_interleave(torch.arange(len(edges), device=device), counts)
    starts = torch.cumsum(counts, 0) - counts  # (B,) first edge of each sample
    columns = torch.arange(local.shape[1], device=device) - starts[edge_batch]  # (E,)
    return local, edge_batch, len(edges), columns


def _padded_edges(
    edge_index: Tensor, edge_mask: Tensor | None, name: str
) -> tuple[Tensor, Tensor, int, Tensor]:
    """``(local, edge_batch, B, columns)`` (see :func:`_listed_edges`) of a padded
    ``(B, 2, E)`` edge tensor and its ``(B, E)`` mask of real edges."""
    if edge_index.dtype.is_floating_point or edge_index.is_complex():
        raise TypeError(f"{name} must have an integer dtype, got {edge_index.dtype}")
    if edge_index.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype, got {edge_index.dtype}")
    if edge_index.dim() != 3 or edge_index.shape[1] != 2:
        shared = " (one (2, E) edge_index shared by all samples is Graph.from_edge_index)"
        raise ValueError(
            f"{name} must be a list of (2, E_b) tensors or a padded (B, 2, E) tensor, got "
            f"shape {tuple(edge_index.shape)}{shared if edge_index.dim() == 2 else ''}"
        )
    b, _, e = edge_index.shape
    if b == 0:
        raise ValueError(
            f"{name} must hold at least one sample, got shape {tuple(edge_index.shape)}"
        )
    if edge_mask is None:
        edge_mask = torch.ones(b, e, dtype=torch.bool, device=edge_index.device)
    elif not isinstance(edge_mask, Tensor) or edge_mask.dtype != torch.bool:
        raise TypeError(
            "edge_mask must be a bool tensor (True = real edge), got "
            f"{getattr(edge_mask, 'dtype', type(edge_mask).__name__)}"
        )
    elif edge_mask.shape != (b, e):
        raise ValueError(
            f"edge_mask must have shape (B={b}, E={e}) to match {name} of shape "
            f"{tuple(edge_index.shape)}, got {tuple(edge_mask.shape)}"
        )
    edge_mask = edge_mask.to(edge_index.device)
    local = edge_index.long().transpose(0, 1)[:, edge_mask]  # (2, B, E) -> (2, E_real)
    rows = torch.arange(b, device=edge_index.device)[:, None].expand(b, e)  # (B, E)
    cols = torch.arange(e, device=edge_index.device)[None, :].expand(b, e)  # (B, E)
    return local, rows[edge_mask], b, cols[edge_mask]


def _check_local_ids(
    local: Tensor, edge_batch: Tensor, columns: Tensor, num_dst: int, num_src: int, name: str
) -> None:
    """Every source id in ``[0, num_src)`` and target id in ``[0, num_dst)``; otherwise
    raise naming the first bad entry as ``name[b][row, column]``."""
    sizes = torch.tensor([num_src, num_dst], device=local.device)[:, None]  # (2, 1)
    bad = (local < 0) | (local >= sizes)  # (2, E)
    if local.numel() == 0 or not bool(bad.any()):
        return
    e = int(bad.any(0).nonzero()[0])
    row = 0 if bool(bad[0, e]) else 1
    role, size_name, size = (
        ("source", "num_src", num_src) if row == 0 else ("target", "num_dst", num_dst)
    )
    value, b = int(local[row, e]), int(edge_batch[e])
    raise IndexError(
        f"{name}[{b}][{row}, {int(columns[e])}] = {value} (a {role} of sample {b}) is out of "
        f"range for {size_name}={size}: node ids are local to their sample, 0..{size - 1}"
    )


def _compact(x: Tensor, valid: Tensor, count: int) -> Tensor:
    """``x[:, valid]`` for a ``valid`` mask with ``count`` True entries known in advance:
    static shapes (a cumulative sum and a scatter, no ``nonzero``), for torch.compile,
    ``torch.export`` and ONNX.

    Shapes:
        - x: ``(R, M)``; valid: ``(M,)`` bool; returns ``(R, count)``
    """
    pos = torch.cumsum(valid.long(), 0) - 1  # (M,): slot of each valid column
    pos = torch.where(valid, pos, count)  # invalid columns land in a spare last slot
    out = x.new_zeros(x.shape[0], count + 1)  # (R, count + 1)
    out.scatter_(1, pos.expand_as(x), x)
    return out[:, :count]


def _sort_by_target(edge_index: Tensor, num_dst: int, num_src: int) -> EdgeStructure:
    src, dst = edge_index[0], edge_index[1]
    if torch.compiler.is_compiling():  # no data-dependent branch, no data-dependent size
        perm = torch.sort(dst, stable=True).indices
        src, dst = src[perm], dst[perm]
        ptr = torch.searchsorted(dst, torch.arange(num_dst + 1, device=dst.device))
        return EdgeStructure(perm, src.contiguous(), dst.contiguous(), ptr, num_src)
    if dst.numel() > 1 and bool((dst[1:] < dst[:-1]).any()):
        perm = torch.sort(dst, stable=True).indices
        src, dst = src[perm], dst[perm]
    else:
        perm = None
    deg = torch.bincount(dst, minlength=num_dst)
    ptr = torch.zeros(num_dst + 1, dtype=torch.long, device=dst.device)
    torch.cumsum(deg, 0, out=ptr[1:])
    return EdgeStructure(perm, src.contiguous(), dst.contiguous(), ptr, num_src)


def canonical_device(device: torch.device | str | None) -> torch.device:
    """``device`` as tensors report it: ``None`` is the CPU, and a CUDA device without an
    index is the current one (``"cuda"`` -> ``cuda:0``), so that graphs and tensors compare
    equal."""
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _adjacency_edges(adj_t: Tensor | SparseTensor) -> tuple[Tensor, int, int]:
    """``(edge_index, num_dst, num_src)`` of a sparse ``adj_t`` (see
    :meth:`Graph.from_sparse`)."""
    if is_sparse_tensor_object(adj_t):
        row, col, _ = adj_t.coo()  # (nnz,) targets, (nnz,) sources
        num_dst, num_src = adj_t.sparse_sizes()
        return torch.stack([col, row]).long(), num_dst, num_src
    if not isinstance(adj_t, Tensor) or adj_t.layout not in _SPARSE_LAYOUTS:
        layout = getattr(adj_t, "layout", type(adj_t).__name__)
        raise TypeError(
            f"adj_t must be a sparse matrix of layout torch.sparse_coo, torch.sparse_csr or "
            f"torch.sparse_csc, or a torch_sparse.SparseTensor, got {layout}: convert it, "
            f"e.g. with adj_t.to_sparse_coo()"
        )
    if adj_t.dim() != 2:
        raise ValueError(
            f"adj_t must be one (N_dst, N_src) matrix without batch or dense dimensions "
            f"(edge features go to edge_attr), got shape {tuple(adj_t.shape)}"
        )
    num_dst, num_src = adj_t.shape
    if adj_t.layout == torch.sparse_coo:
        row, col = adj_t._indices()  # stored order, coalesced or not (as PyG's to_edge_index)
    elif adj_t.layout == torch.sparse_csr:
        row, col = _ptr_to_index(adj_t.crow_indices()), adj_t.col_indices()
    else:
        row, col = adj_t.row_indices(), _ptr_to_index(adj_t.ccol_indices())
    return torch.stack([col, row]).long(), num_dst, num_src  # (2, nnz): sources, targets


def _ptr_to_index(ptr: Tensor) -> Tensor:
    """Compressed pointers ``(N + 1,)`` -> the index of each stored entry ``(nnz,)``."""
    counts = ptr.diff()
    return torch.repeat_interleave(torch.arange(counts.numel(), device=ptr.device), counts)


def as_graph(
    graph: GraphLike,
    num_dst: int,
    num_src: int,
    device: torch.device | str | None = None,
    *,
    batch: int | None = None,
    name: str = "graph",
) -> Graph:
    """Normalise the ``graph`` argument of the attention calls (``name``: the caller's name
    for it, in messages).

    ``None`` is the complete graph over ``num_dst x num_src`` on ``device`` (the inputs');
    a dense integer tensor is a PyG-style ``edge_index`` with those sizes; a sparse matrix
    (torch COO, CSR or CSC, or a ``torch_sparse.SparseTensor``) is PyG's ``adj_t`` of shape
    ``(N_dst, N_src)``, rows = targets (:meth:`Graph.from_sparse`); a PyG ``Data`` or
    ``Batch`` gives its graph (:meth:`Graph.from_pyg`); a :class:`Graph` is checked against
    the sizes.

    One graph per sample (:class:`PerSampleGraph`): a list of ``B`` edge lists ``(2, E_b)``
    or a ``(B, 2, E)`` tensor of real edges, each sample's ids local (``num_dst x num_src``
    per sample), is built into one; these and a built per-sample graph need ``batch``, the
    inputs' ``B`` (callers with a batch of samples pass it; others refuse them).
    """
    if graph is None:
        return CompleteGraph(num_dst, num_src, device=device)
    given = graph
    if is_sparse_adjacency(graph):  # before the (B, 2, E) test: a sparse matrix may be 3-D
        graph = Graph.from_sparse(graph)
    elif isinstance(graph, list | tuple) or (isinstance(graph, Tensor) and graph.dim() == 3):
        if batch is not None and len(graph) != batch:
            form = (
                f"a list of {len(graph)} edge lists"
                if isinstance(graph, list | tuple)
                else f"a (B, 2, E) tensor of shape {tuple(graph.shape)}"
            )
            raise ValueError(
                f"{name} is {form}, one per sample, but the batch has B={batch} samples"
            )
        graph = PerSampleGraph(graph, num_dst, num_src, name=name)
    elif isinstance(graph, Tensor):
        return EdgeListGraph(graph, num_dst, num_src)
    elif is_pyg_data(graph):
        graph = Graph.from_pyg(graph)
    elif not isinstance(graph, Graph):
        raise TypeError(
            f"{name} must be a graphattn.Graph, an edge_index tensor, a list of per-sample "
            f"edge_index tensors, a sparse adjacency adj_t, a PyG Data or Batch, or None, got "
            f"{type(graph).__name__}"
        )
    if graph.num_dst != num_dst or graph.num_src != num_src:
        hint = ""
        if is_sparse_adjacency(given):
            hint = " (adj_t is (N_dst, N_src), rows = targets: transpose an adj[source, target])"
        per = " per sample" if isinstance(graph, PerSampleGraph) else ""
        raise ValueError(
            f"{name} has num_dst={graph.num_dst}, num_src={graph.num_src}{per} but the inputs "
            f"have {num_dst} target and {num_src} source nodes{hint}"
        )
    if isinstance(graph, PerSampleGraph):
        if batch is None:
            raise ValueError(
                f"{name} is a per-sample graph ({graph.batch_size} samples), which only "
                f"attention over a batch (B, N, C) takes (GraphAttention, graph_attention); "
                f"where all nodes form one graph, pass its flat() graph over B * N nodes "
                f"(Graph.per_sample(...).flat(), as a PyG Batch)"
            )
        if graph.batch_size != batch:
            raise ValueError(
                f"{name} has {graph.batch_size} samples but the batch has B={batch} samples"
            )
    return graph

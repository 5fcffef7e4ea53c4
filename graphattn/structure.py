"""Learned graph structure: attention weights as a weighted graph, and a learned structural
bias over the complete graph.

A softmax never gives exactly zero, so the attention of a dense layer is a weighted complete
graph. :func:`attention_to_graph` keeps the strongest in-edges of every target (top-k, or the
smallest set reaching a probability mass) and returns an edge list that later, sparse layers
can run on. :class:`LearnedStructureBias` learns which pairs should talk, independently of
the content: per-pair (or low-rank) logits added to the attention scores, with a sparsity
penalty and a report of the graph it has learned.

Axis legend: ``B`` batch, ``H`` heads, ``Nd`` targets, ``Ns`` sources, ``E`` edges,
``R`` rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ._checks import check_int
from .functional import AttentionWeights
from .graph import CompleteGraph, EdgeListGraph, Graph

__all__ = ["WeightedGraph", "attention_to_graph", "LearnedStructureBias"]


@dataclass
class WeightedGraph:
    """A pruned attention graph: the kept edges and their weights.

    Attributes:
        graph: the kept edges as an :class:`~graphattn.EdgeListGraph` with the sizes of the
            original graph, sorted by target, then source; no duplicated edges.
        weights: the reduced weight of each kept edge (what the selection ranked), ``(E,)``.
        head_weights: the weight of each kept edge in every head, ``(E, H)`` (averaged over
            the batch; duplicated edges of the original graph summed).
    """

    graph: EdgeListGraph
    weights: Tensor
    head_weights: Tensor

    @property
    def edge_index(self) -> Tensor:
        """The kept edges ``(2, E)`` (row 0 sources, row 1 targets)."""
        return self.graph.edge_index()

    def log_bias(self, eps: float = 1e-12) -> Tensor:
        """``log(head_weights)``, ``(E, H)``: a per-edge ``attn_bias=`` for a later layer on
        :attr:`graph`, so that it starts from the preferences of the layer that was pruned
        (with zero content scores it reproduces the kept weights, renormalised)."""
        return self.head_weights.clamp_min(eps).log()


def _per_edge(weights: AttentionWeights | Tensor) -> tuple[Graph, Tensor]:
    """Batch-averaged per-edge weights ``(E, H)`` aligned with ``graph.edge_index()``."""
    if isinstance(weights, AttentionWeights):
        graph, vals = weights.graph, weights.values
        if weights.batched:
            vals = vals.mean(0)  # ([B,] E, H) or ([B,] H, Nd, Ns) -> no batch
        unbatched = AttentionWeights(vals, graph, weights.layout, batched=False)
        return graph, unbatched.to_edges()  # (E, H)
    if not isinstance(weights, Tensor):
        raise TypeError(
            f"weights must be AttentionWeights or a dense tensor, got {type(weights).__name__}"
        )
    if weights.dim() not in (2, 3, 4):
        raise ValueError(
            "a weights tensor must be dense: (Nd, Ns), (H, Nd, Ns) or (B, H, Nd, Ns), got "
            f"{tuple(weights.shape)}; pass per-edge weights as AttentionWeights"
        )
    vals = weights
    if vals.dim() == 4:
        vals = vals.mean(0)  # (H, Nd, Ns)
    elif vals.dim() == 2:
        vals = vals[None]  # (1, Nd, Ns)
    graph = CompleteGraph(vals.shape[-2], vals.shape[-1], device=vals.device)
    src, dst = graph.edge_index()
    return graph, vals[:, dst, src].t()  # (E, H)


def _coalesce(graph: Graph, per_edge: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unique edges: ``src (E',)``, ``dst (E',)`` and the summed weights ``(E', H)``."""
    src, dst = graph.edge_index()
    if graph.edge_counts() is None:
        return src, dst, per_edge
    key = dst * graph.num_src + src  # (E,)
    uniq, inverse = torch.unique(key, return_inverse=True)
    summed = per_edge.new_zeros(len(uniq), per_edge.shape[1]).index_add_(0, inverse, per_edge)
    return uniq % graph.num_src, uniq // graph.num_src, summed


def attention_to_graph(
    weights: AttentionWeights | Tensor,
    *,
    top_k: int | None = None,
    mass: float | None = None,
    reduce_heads: Literal["mean", "max"] = "mean",
) -> WeightedGraph:
    """Prune attention weights into a sparse graph: the strongest in-edges of every target.

    Selection runs per target node on one score per edge: the weight reduced over heads
    (``reduce_heads``) and averaged over the batch (padded edges count as 0 in that mean).
    Edges whose score is exactly 0 (absent, or padded in every sample) are never kept.

    - ``top_k``: keep the ``k`` highest-scoring in-edges of each target, i.e. exactly
      ``min(k, d)`` of them, where ``d`` is the number of its in-edges with a nonzero score.
    - ``mass``: keep the smallest set of in-edges, taken in decreasing score, whose score
      reaches the fraction ``mass`` of the target's total (the total is 1 for
      ``reduce_heads="mean"``).
    - both: keep at most ``k`` edges, fewer when ``mass`` is reached first.

    Ties are broken deterministically: among equal scores, the smaller source index wins.
    Duplicated edges of an edge-list graph are merged first (their weights summed).

    Args:
        weights: :class:`~graphattn.AttentionWeights` (per edge or dense, batched or not), or
            a dense tensor ``(Nd, Ns)``, ``(H, Nd, Ns)`` or ``(B, H, Nd, Ns)`` over the
            complete graph.
        top_k: number of in-edges to keep per target (``>= 1``).
        mass: probability mass to keep per target, in ``(0, 1]``.
        reduce_heads: ``"mean"`` or ``"max"`` over heads for the selection score.

    Shapes:
        - returns a :class:`WeightedGraph` with ``weights (E,)`` and ``head_weights (E, H)``.

    Example:
        >>> import torch
        >>> w = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
        >>> attention_to_graph(w, top_k=1).edge_index
        tensor([[0, 2, 2],
                [0, 1, 2]])
        >>> attention_to_graph(w, mass=0.6).edge_index  # row 2 needs 0.4 + 0.3
        tensor([[0, 2, 0, 2],
                [0, 1, 2, 2]])
    """
    if top_k is None and mass is None:
        raise ValueError("attention_to_graph needs top_k, mass, or both")
    check_int("top_k", top_k, optional=True)
    if mass is not None and not 0.0 < float(mass) <= 1.0:
        raise ValueError(f"mass must lie in (0, 1], got {mass}")
    if reduce_heads not in ("mean", "max"):
        raise ValueError(f"reduce_heads must be 'mean' or 'max', got {reduce_heads!r}")

    graph, per_edge = _per_edge(weights)
    with torch.no_grad():
        per_edge = per_edge.detach()
        src, dst, per_edge = _coalesce(graph, per_edge)  # (E,), (E,), (E, H)
        score = per_edge.mean(1) if reduce_heads == "mean" else per_edge.amax(1)  # (E,)
        present = score > 0
        src, dst, per_edge, score = src[present], dst[present], per_edge[present], score[present]

        # order: target ascending, score descending, source ascending (stable sorts, last key
        # first)
        order = torch.argsort(src, stable=True)
        order = order[torch.argsort(score[order], descending=True, stable=True)]
        order = order[torch.argsort(dst[order], stable=True)]
        d_sorted, s_sorted = dst[order], score[order].double()
        deg = torch.bincount(d_sorted, minlength=graph.num_dst)  # (Nd,)
        ptr = torch.zeros(graph.num_dst + 1, dtype=torch.long, device=deg.device)
        torch.cumsum(deg, 0, out=ptr[1:])
        start = ptr[d_sorted]  # (E,) first sorted edge of each edge's target
        keep = torch.ones_like(d_sorted, dtype=torch.bool)
        if top_k is not None:
            rank = torch.arange(len(d_sorted), device=deg.device) - start  # (E,)
            keep &= rank < top_k
        if mass is not None:
            before = torch.cumsum(s_sorted, 0) - s_sorted  # (E,) exclusive prefix sum
            before_in_row = before - before[start]  # (E,) mass of better in-edges
            total = torch.zeros(graph.num_dst, dtype=torch.double, device=deg.device)
            total.index_add_(0, d_sorted, s_sorted)
            keep &= before_in_row < float(mass) * total[d_sorted]
        kept = order[keep]
        kept = kept[torch.argsort(dst[kept] * graph.num_src + src[kept])]  # (dst, src) order
        edge_index = torch.stack([src[kept], dst[kept]])  # (2, E_kept)
    pruned = EdgeListGraph(edge_index, graph.num_dst, graph.num_src)
    return WeightedGraph(pruned, score[kept], per_edge[kept])


class LearnedStructureBias(nn.Module):
    """A learned, content-independent structural bias over the complete graph.

    Produces logits ``L[h, i, j]`` that are added to the attention scores
    (``attn_bias=`` of :class:`~graphattn.GraphAttention`), either one free logit per pair and
    head, or low rank, ``L[h] = prior + U[h] V[h]^T`` (rank ``r``), which costs
    ``H * (Nd + Ns) * r`` parameters instead of ``H * Nd * Ns``.

    ``softmax(L[h, i])`` is the attention target ``i`` would give with zero content scores:
    the learned graph, reported by :meth:`learned_graph`.

    The sparsity penalty (:meth:`sparsity_penalty`) is the entropy of that softmax, averaged
    over heads and targets and divided by ``log(Ns)`` (so it lies in ``[0, 1]``; 1 means
    uniform). It is chosen over a penalty on the logits themselves (L1, mean sigmoid) because
    the softmax of each target is unchanged by adding a constant to all its logits: a penalty
    on raw logits or on sigmoid gates can be driven to 0 by such a shift without making the
    attention any sparser, whereas the entropy only falls when a target concentrates on
    fewer sources (``exp(entropy)`` is its effective in-degree). Like every symmetric
    penalty of a softmax, its gradient is zero at exactly uniform logits; the task loss moves
    the logits off that point.

    Args:
        num_nodes: number of target nodes ``Nd`` (and of sources when ``num_src`` is None).
        num_heads: number of heads ``H``.
        rank: ``None`` for per-pair logits, else the rank ``r`` of the low-rank factors.
        init: initial logits. A float fills every pair (any constant gives uniform attention,
            since a per-target shift does nothing); a tensor ``(Nd, Ns)`` or ``(H, Nd, Ns)``
            starts from a prior (e.g. 0 on the edges of a window graph, -4 elsewhere). With
            ``rank`` the prior is a fixed buffer and ``U V^T`` is learned on top of it.
        num_src: number of source nodes ``Ns`` for cross-attention (default ``num_nodes``).

    Shapes:
        - ``forward()``: ``(1, H, Nd, Ns)``, a dense bias for ``attn_bias=``.
        - ``edge_bias(graph)``: ``(E, H)``, a per-edge bias on a sparse graph.

    Example:
        >>> import torch
        >>> from graphattn import GraphAttention
        >>> attn, structure = GraphAttention(16, 4), LearnedStructureBias(10, 4, rank=2)
        >>> x = torch.randn(3, 10, 16)
        >>> y = attn(x, attn_bias=structure())
        >>> loss = y.square().mean() + 0.01 * structure.sparsity_penalty()
        >>> structure.learned_graph(top_k=3).graph.num_edges
        30
    """

    def __init__(
        self,
        num_nodes: int,
        num_heads: int,
        *,
        rank: int | None = None,
        init: float | Tensor = 0.0,
        num_src: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        num_src = num_nodes if num_src is None else num_src
        sizes = (("num_nodes", num_nodes), ("num_heads", num_heads), ("num_src", num_src))
        for name, value in sizes:
            check_int(name, value)
        check_int("rank", rank, optional=True)
        self.num_dst, self.num_src, self.num_heads, self.rank = num_nodes, num_src, num_heads, rank
        factory = {"device": device, "dtype": dtype}
        shape = (num_heads, num_nodes, num_src)
        if isinstance(init, Tensor):
            if (
                init.dim() not in (2, 3)
                or init.shape[-2:] != shape[1:]
                or (init.dim() == 3 and init.shape[0] not in (1, num_heads))
            ):
                raise ValueError(
                    f"init must be a float, (Nd={num_nodes}, Ns={num_src}) or "
                    f"(H={num_heads}, Nd, Ns), got {tuple(init.shape)}"
                )
            prior = init.detach().to(**factory).expand(shape).clone()  # (H, Nd, Ns)
        else:
            prior = torch.full(shape, float(init), **factory)
        # the initial (per-pair) or fixed (low-rank) logits; saved only in low-rank mode
        self.register_buffer("prior", prior, persistent=rank is not None)  # (H, Nd, Ns)
        if rank is None:
            self.logits = nn.Parameter(torch.empty(shape, **factory))  # (H, Nd, Ns)
            self.register_parameter("u", None)
            self.register_parameter("v", None)
        else:
            self.register_parameter("logits", None)
            self.u = nn.Parameter(torch.empty(num_heads, num_nodes, rank, **factory))  # (H,Nd,R)
            self.v = nn.Parameter(torch.empty(num_heads, num_src, rank, **factory))  # (H, Ns, R)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Per-pair logits back to ``init``; low-rank factors drawn so that ``U V^T`` has
        entries of standard deviation 0.1 (both factors nonzero, so both get gradients)."""
        with torch.no_grad():
            if self.rank is None:
                self.logits.copy_(self.prior)
            else:
                std = (0.1 / math.sqrt(self.rank)) ** 0.5
                nn.init.normal_(self.u, std=std)
                nn.init.normal_(self.v, std=std)

    def structure_logits(self) -> Tensor:
        """The logits ``(H, Nd, Ns)``."""
        if self.rank is None:
            return self.logits
        return self.prior + torch.einsum("hir,hjr->hij", self.u, self.v)  # (H, Nd, Ns)

    def forward(self) -> Tensor:
        """The dense bias ``(1, H, Nd, Ns)`` to pass as ``attn_bias=``."""
        return self.structure_logits()[None]

    def edge_bias(self, graph: Graph | Tensor) -> Tensor:
        """The logits of the edges of a sparse graph (or ``edge_index``), ``(E, H)``, to pass
        as a per-edge ``attn_bias=`` when the layer runs on that graph."""
        edge_index = graph.edge_index() if isinstance(graph, Graph) else graph
        src, dst = edge_index[0], edge_index[1]
        if len(src) and (int(src.max()) >= self.num_src or int(dst.max()) >= self.num_dst):
            raise IndexError(
                f"graph has nodes beyond this module's Nd={self.num_dst}, Ns={self.num_src}"
            )
        return self.structure_logits()[:, dst, src].t()  # (E, H)

    def probabilities(self) -> Tensor:
        """``softmax`` of the logits over sources, ``(H, Nd, Ns)``: the learned graph."""
        return torch.softmax(self.structure_logits(), dim=-1)

    def sparsity_penalty(self) -> Tensor:
        """Mean normalised entropy of :meth:`probabilities` (a scalar in ``[0, 1]``,
        differentiable); see the class docstring for why entropy."""
        logp = torch.log_softmax(self.structure_logits(), dim=-1)  # (H, Nd, Ns)
        entropy = -(logp.exp() * logp).sum(-1)  # (H, Nd)
        return entropy.mean() / math.log(self.num_src) if self.num_src > 1 else entropy.mean()

    def learned_graph(
        self,
        *,
        top_k: int | None = None,
        mass: float | None = None,
        reduce_heads: Literal["mean", "max"] = "mean",
    ) -> WeightedGraph:
        """The learned graph pruned with :func:`attention_to_graph` (``top_k`` and/or
        ``mass``)."""
        with torch.no_grad():
            probs = self.probabilities()
        return attention_to_graph(probs, top_k=top_k, mass=mass, reduce_heads=reduce_heads)

    def extra_repr(self) -> str:
        parts = [f"num_nodes={self.num_dst}", f"num_heads={self.num_heads}"]
        if self.num_src != self.num_dst:
            parts.append(f"num_src={self.num_src}")
        parts.append(f"rank={self.rank}")
        return ", ".join(parts)

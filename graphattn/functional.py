"""The functional entry point: ``graph_attention`` and ``segment_softmax``.

``graph_attention(q, k, v, graph)`` computes, for every target ``i`` and head ``h``,
``out[i] = sum_j softmax_j(<q_i, k_j> * scale + bias_ij) v_j`` over the in-edges ``j -> i`` of
``graph``, with the layout of ``F.scaled_dot_product_attention``. It picks a backend:

- ``"dense"``: ``F.scaled_dot_product_attention`` (fused kernel) with a mask from the graph;
- ``"edges"``: message passing over the edge list, memory ``O(E * H)``;
- ``"auto"``: the rule in :class:`AutoPolicy` (see :data:`auto_policy`).

Axis legend: ``B`` batch, ``H`` heads, ``Nd`` targets, ``Ns`` sources, ``D`` head dim,
``Dv`` value head dim, ``E`` edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor

from ._dense import (
    dense_attention,
    dense_reasons,
    edge_bias_to_dense,
    packable_blocks,
    packed_block_attention,
)
from ._edges import edge_attention
from .graph import Graph, as_graph

__all__ = [
    "graph_attention",
    "segment_softmax",
    "AttentionOutput",
    "AttentionWeights",
    "AutoPolicy",
    "auto_policy",
    "choose_backend",
    "BackendName",
    "BackendNotSupportedError",
]

BackendName = Literal["auto", "dense", "edges"]
_BACKENDS = ("auto", "dense", "edges")


class BackendNotSupportedError(ValueError):
    """No backend (or not the requested one) can serve a call; the message lists why."""


@dataclass
class AutoPolicy:
    """The rule behind ``backend="auto"``; change the fields of :data:`auto_policy` to
    override it globally, or pass ``backend=`` per call.

    The rule, in order:

    1. Complete and causal graphs, and a complete graph or an unpadded batch of complete
       graphs given as an edge list, go to ``dense`` (the fused kernel, with no mask or a
       padding mask).
    2. Calls the dense backend cannot serve (per-edge values, masks above
       ``max_mask_elements``) go to ``edges``.
    3. Otherwise ``dense`` if the edge density ``E / (Nd * Ns)`` is at least
       :meth:`density_threshold` of the head dim ``D``, else ``edges``.

    The threshold ``crossover_density * (1 + crossover_head_dim / D)`` fits the crossover
    measured by ``python -m benchmarks.bench_crossover`` (forward + backward, fp32, 2 CPU
    threads, random graphs, N = 256 .. 4096): the density at which dense wins is nearly
    independent of ``N`` for ``N >= 512`` and lies between 1/32 and 1/16 for ``D = 64`` and
    between 1/16 and 1/8 for ``D = 8`` (the defaults give 0.047 and 0.095), because the dense
    kernel's per-score overhead matters more at small ``D``.

    Attributes:
        crossover_density: the threshold for a large head dim.
        crossover_head_dim: how much a small head dim raises the threshold.
        max_mask_elements: the largest ``Nd * Ns`` mask the dense backend materialises.
    """

    crossover_density: float = 0.04
    crossover_head_dim: float = 11.0
    max_mask_elements: int = 1 << 26

    def density_threshold(self, head_dim: int) -> float:
        """Edge density above which ``auto`` runs the dense backend."""
        return self.crossover_density * (1.0 + self.crossover_head_dim / max(1, head_dim))


#: the process-wide auto rule; mutate its fields to override.
auto_policy = AutoPolicy()


@dataclass
class AttentionWeights:
    """Attention weights in one of two layouts, convertible into the other.

    Attributes:
        values: ``(B, E, H)`` per edge, aligned with ``graph.edge_index()``, when
            ``layout == "edges"``; ``(B, H, Nd, Ns)`` when ``layout == "dense"``. The
            batch dimension is absent when the inputs had none.
        graph: the graph the weights live on.
        layout: ``"edges"`` or ``"dense"``.

    Weights are taken before dropout; a padded or absent edge has weight 0, and the weights
    of each target's in-edges sum to 1 (or to 0 for a target without in-edges).
    """

    values: Tensor
    graph: Graph
    layout: Literal["edges", "dense"]
    batched: bool = True

    def to_dense(self) -> Tensor:
        """Dense weights ``([B,] H, Nd, Ns)``; duplicated edges are summed."""
        if self.layout == "dense":
            return self.values
        vals = self.values if self.batched else self.values[None]  # (B, E, H)
        b, _, h = vals.shape
        g = self.graph
        src, dst = g.edge_index()
        dense = vals.new_zeros(b, h, g.num_dst * g.num_src)
        dense.index_add_(2, dst * g.num_src + src, vals.permute(0, 2, 1))
        dense = dense.view(b, h, g.num_dst, g.num_src)
        return dense if self.batched else dense[0]

    def to_edges(self) -> Tensor:
        """Per-edge weights ``([B,] E, H)`` aligned with ``graph.edge_index()``. Coming from
        the dense layout, the weight of a duplicated edge is split evenly among its copies
        (exact when the copies share their bias)."""
        if self.layout == "edges":
            return self.values
        vals = self.values if self.batched else self.values[None]  # (B, H, Nd, Ns)
        g = self.graph
        src, dst = g.edge_index()
        per_edge = vals[:, :, dst, src]  # (B, H, E)
        counts = g.edge_counts()
        if counts is not None:
            per_edge = per_edge / counts[dst, src].to(per_edge.dtype)
        per_edge = per_edge.permute(0, 2, 1)  # (B, E, H)
        return per_edge if self.batched else per_edge[0]


@dataclass
class AttentionOutput:
    """What ``graph_attention(..., need_weights=True)`` and ``GraphAttention(...,
    return_attention=True)`` return.

    Attributes:
        out: the attention output.
        attention: the weights, see :class:`AttentionWeights`.
        backend: the backend that ran (``"dense"`` or ``"edges"``).
    """

    out: Tensor
    attention: AttentionWeights
    backend: str


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


def _check_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() not in (3, 4):
            raise ValueError(
                f"{name} must have shape ([B,] H, N, D) (3 or 4 dims), got {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if not (q.dim() == k.dim() == v.dim()):
        raise ValueError(
            f"q, k, v must have the same number of dims, got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must share a device, got {q.device}, {k.device}, {v.device}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-2] != v.shape[:-2]:
        raise ValueError(
            f"q, k, v must agree in batch and heads ([B,] H), got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k head dims differ: {q.shape[-1]} vs {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same number of nodes: {k.shape[-2]} vs {v.shape[-2]}"
        )


def _classify_bias(bias: Tensor, graph: Graph, b: int, h: int) -> Literal["edges", "dense"]:
    """Decide whether ``bias`` is per edge ``([B,] E, H)`` or dense ``(…, H, Nd, Ns)``."""
    if not isinstance(bias, Tensor):
        raise TypeError(f"bias must be a torch.Tensor, got {type(bias).__name__}")
    nd, ns, e = graph.num_dst, graph.num_src, graph.num_edges
    shape = tuple(bias.shape)
    as_edges = (
        bias.dim() in (2, 3) and shape[-2:] == (e, h) and (bias.dim() == 2 or shape[0] in (1, b))
    )
    as_dense = bias.dim() >= 3 and shape[-2:] == (nd, ns)
    if as_dense:
        try:
            torch.broadcast_shapes(shape, (b, h, nd, ns))
        except RuntimeError:
            as_dense = False
        as_dense = as_dense and bias.dim() <= 4
    if as_edges and as_dense:
        raise ValueError(
            f"bias of shape {shape} is ambiguous (per edge (B, E={e}, H={h}) or dense "
            f"(H, Nd={nd}, Ns={ns})): pass a dense bias as 4 dims (B or 1, H or 1, Nd, Ns)"
        )
    if as_edges:
        return "edges"
    if as_dense:
        return "dense"
    raise ValueError(
        f"bias must be per edge ([B,] E={e}, H={h}) or dense (…, H={h} or 1, Nd={nd}, Ns={ns}), "
        f"got {shape}"
    )


def choose_backend(
    graph: Graph,
    *,
    head_dim: int = 64,
    has_edge_values: bool = False,
    policy: AutoPolicy | None = None,
) -> Literal["dense", "edges"]:
    """The backend ``"auto"`` picks for ``graph`` and query/key head dim ``head_dim``
    (see :class:`AutoPolicy`)."""
    policy = policy or auto_policy
    if has_edge_values:
        return "edges"
    if graph.mask_free or graph.is_complete:
        return "dense"
    if packable_blocks(graph) is not None:
        return "dense"
    if dense_reasons(graph, has_edge_values=False, max_mask_elements=policy.max_mask_elements):
        return "edges"
    size = graph.num_dst * graph.num_src
    if size == 0:
        return "edges"
    density = graph.num_edges / size
    return "dense" if density >= policy.density_threshold(head_dim) else "edges"


@overload
def graph_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: Graph | Tensor | None = ...,
    *,
    bias: Tensor | None = ...,
    edge_values: Tensor | None = ...,
    dropout_p: float = ...,
    scale: float | None = ...,
    need_weights: Literal[False] = ...,
    backend: BackendName = ...,
) -> Tensor: ...
@overload
def graph_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: Graph | Tensor | None = ...,
    *,
    bias: Tensor | None = ...,
    edge_values: Tensor | None = ...,
    dropout_p: float = ...,
    scale: float | None = ...,
    need_weights: Literal[True],
    backend: BackendName = ...,
) -> AttentionOutput: ...
def graph_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: Graph | Tensor | None = None,
    *,
    bias: Tensor | None = None,
    edge_values: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    need_weights: bool = False,
    backend: BackendName = "auto",
) -> Tensor | AttentionOutput:
    """Multi-head attention over the in-edges of a graph.

    Equivalent to ``F.scaled_dot_product_attention(q, k, v, attn_mask=graph.materialize())``
    with a zero output for targets without in-edges, but the graph may be sparse and the
    cost then grows with the number of edges.

    Args:
        q: queries of the target nodes.
        k: keys of the source nodes.
        v: values of the source nodes.
        graph: a :class:`~graphattn.Graph`, a PyG ``edge_index`` ``(2, E)`` (row 0 sources,
            row 1 targets), or ``None`` for the complete graph. Its key padding mask, if any,
            must have ``B`` rows.
        bias: additive score bias, per edge ``(E, H)`` / ``(B, E, H)`` aligned with
            ``graph.edge_index()``, or dense, broadcastable to ``(B, H, Nd, Ns)``.
        edge_values: added to the value of each edge before weighting, ``(E, H, Dv)`` or
            ``(B, E, H, Dv)`` (TransformerConv's edge features). Edges backend only.
        dropout_p: dropout probability on the attention weights (use 0 in evaluation).
        scale: score scale, default ``1 / sqrt(D)``.
        need_weights: also return the attention weights (see :class:`AttentionOutput`).
        backend: ``"auto"``, ``"dense"`` or ``"edges"``.

    Shapes:
        - q: ``([B,] H, Nd, D)``; k: ``([B,] H, Ns, D)``; v: ``([B,] H, Ns, Dv)``
        - returns ``([B,] H, Nd, Dv)``

    Returns:
        The output tensor, or an :class:`AttentionOutput` when ``need_weights=True``.

    Raises:
        BackendNotSupportedError: the requested backend cannot serve the call (the message
            says why).
    """
    _check_inputs(q, k, v)
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must lie in [0, 1), got {dropout_p}")
    batched = q.dim() == 4
    if not batched:
        q, k, v = q[None], k[None], v[None]
    b, h, nd, d = q.shape
    ns = k.shape[-2]
    graph = as_graph(graph, nd, ns)
    if graph.device != q.device:
        raise ValueError(f"graph is on {graph.device} but q is on {q.device}; use graph.to()")
    pad = graph.key_padding_mask
    if pad is not None and pad.shape[0] != b:
        raise ValueError(
            f"graph's key_padding_mask has {pad.shape[0]} rows but the batch has B={b}"
        )
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)

    bias_kind = None if bias is None else _classify_bias(bias, graph, b, h)
    if bias is not None:
        if bias.device != q.device:
            raise ValueError(f"bias is on {bias.device} but q is on {q.device}")
        if not bias.is_floating_point():
            raise TypeError(f"bias must be a floating-point tensor, got {bias.dtype}")
    if edge_values is not None:
        edge_values = _check_edge_values(edge_values, graph, b, h, v.shape[-1], v)

    reasons = {
        "dense": dense_reasons(
            graph,
            has_edge_values=edge_values is not None,
            max_mask_elements=auto_policy.max_mask_elements
            if backend == "auto"
            else graph.num_dst * graph.num_src,
        ),
        "edges": [],
    }
    if backend == "auto":
        chosen = choose_backend(graph, head_dim=d, has_edge_values=edge_values is not None)
    else:
        chosen = backend
    if reasons[chosen]:
        raise BackendNotSupportedError(
            f"backend {chosen!r} cannot serve this call: " + "; ".join(reasons[chosen])
        )

    blocks = packable_blocks(graph) if chosen == "dense" else None
    if blocks is not None:
        eb = None
        if bias_kind == "edges":
            eb = (bias if bias.dim() == 3 else bias[None]).expand(b, -1, -1)
        db = bias if bias_kind == "dense" else None
        out, weights = packed_block_attention(
            q,
            k,
            v,
            graph,
            blocks,
            edge_bias=eb,
            dense_bias=None if db is None else db.reshape((1,) * (4 - db.dim()) + db.shape),
            scale=scale,
            dropout_p=dropout_p,
            need_weights=need_weights,
        )
        layout = "edges"
    elif chosen == "dense":
        dense_bias = bias
        if bias_kind == "edges":
            eb = bias if bias.dim() == 3 else bias[None]
            dense_bias = edge_bias_to_dense(eb.expand(b, -1, -1), graph)
        elif bias_kind == "dense":
            while dense_bias.dim() < 4:
                dense_bias = dense_bias[None]
        per_edge_layout = graph.kind in ("edges", "window", "grid")

        def to_edges(dense_w: Tensor) -> tuple[Tensor, Tensor]:
            """(B, H, Nd, Ns) -> per-edge (B, E, H), and the dense weights rebuilt from them
            (the output is computed from those, so the per-edge weights are differentiable)."""
            per_edge = AttentionWeights(dense_w, graph, "dense").to_edges()  # (B, E, H)
            if bias_kind == "edges" and graph.edge_counts() is not None:
                per_edge = _split_by_bias(per_edge, bias, graph, b)
            return per_edge, AttentionWeights(per_edge, graph, "edges").to_dense()

        res = dense_attention(
            q,
            k,
            v,
            graph,
            bias=dense_bias,
            scale=scale,
            dropout_p=dropout_p,
            need_weights=need_weights,
            reparam=to_edges if per_edge_layout else None,
        )
        out, weights = res.out, res.weights
        layout: Literal["edges", "dense"] = "edges" if per_edge_layout else "dense"
    else:
        out, weights = _run_edges(
            q, k, v, graph, bias, bias_kind, edge_values, scale, dropout_p, need_weights
        )
        layout = "edges"
        if weights is not None and graph.kind in ("complete", "causal"):
            if weights.dim() == 3:  # with edge values: a dense copy, off the output's path
                weights = AttentionWeights(weights, graph, "edges").to_dense()
            layout = "dense"
    if not batched:
        out = out[0]
    if not need_weights:
        return out
    if not batched:
        weights = weights[0]
    return AttentionOutput(out, AttentionWeights(weights, graph, layout, batched), chosen)


def _split_by_bias(weights: Tensor, bias: Tensor, graph: Graph, b: int) -> Tensor:
    """Per-edge weights ``(B, E, H)`` split evenly among duplicated edges, re-split in
    proportion to ``exp(bias)`` of each copy (what the edge backend computes)."""
    src, dst = graph.edge_index()
    eb = (bias if bias.dim() == 3 else bias[None]).expand(b, -1, -1)  # (B, E, H)
    key = dst * graph.num_src + src  # (E,), copies of one edge share a key
    share = segment_softmax(eb.transpose(0, 1), key, graph.num_dst * graph.num_src)  # (E, B, H)
    counts = graph.edge_counts()[dst, src].to(weights.dtype)  # (E,)
    return weights * counts[None, :, None] * share.transpose(0, 1).to(weights.dtype)


def _check_edge_values(ev: Tensor, graph: Graph, b: int, h: int, dv: int, v: Tensor) -> Tensor:
    if not isinstance(ev, Tensor):
        raise TypeError(f"edge_values must be a torch.Tensor, got {type(ev).__name__}")
    e = graph.num_edges
    given = tuple(ev.shape)
    if ev.dim() == 3:
        ev = ev[None]
    if ev.dim() != 4 or ev.shape[1:] != (e, h, dv) or ev.shape[0] not in (1, b):
        raise ValueError(f"edge_values must have shape ([B,] E={e}, H={h}, Dv={dv}), got {given}")
    if ev.dtype != v.dtype or ev.device != v.device:
        raise TypeError(
            f"edge_values must match v's dtype and device ({v.dtype}, {v.device}), "
            f"got {ev.dtype}, {ev.device}"
        )
    return ev


def _run_edges(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: Graph,
    bias: Tensor | None,
    bias_kind: str | None,
    edge_values: Tensor | None,
    scale: float,
    dropout_p: float,
    need_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """Edge backend on batched inputs; returns out ``(B, H, Nd, Dv)`` and, if
    ``need_weights``, weights ``(B, E, H)`` in the graph's edge order."""
    b, h, nd, d = q.shape
    ns, dv = k.shape[-2], v.shape[-1]
    st = graph.edge_structure()
    src, dst = graph.edge_index()
    e = src.numel()
    # node-major layout, batch and heads merged into G = B * H groups
    qn = q.permute(2, 0, 1, 3).reshape(nd, b * h, d)  # (Nd, G, D)
    kn = k.permute(2, 0, 1, 3).reshape(ns, b * h, d)  # (Ns, G, D)
    vn = v.permute(2, 0, 1, 3).reshape(ns, b * h, dv)  # (Ns, G, Dv)
    edge_bias = None  # (E, G) in the graph's edge order
    if bias_kind == "edges":
        eb = bias if bias.dim() == 3 else bias[None]  # (B', E, H)
        edge_bias = eb.expand(b, e, h).permute(1, 0, 2).reshape(e, b * h)
    elif bias_kind == "dense":
        db = bias
        while db.dim() < 4:
            db = db[None]
        db = db.expand(b, h, nd, ns)
        edge_bias = db[:, :, dst, src].permute(2, 0, 1).reshape(e, b * h)  # (E, G)
    if graph.key_padding_mask is not None:
        padded = graph.key_padding_mask[:, src].t()  # (E, B)
        neg = torch.zeros(e, b, dtype=q.dtype, device=q.device).masked_fill_(padded, -math.inf)
        neg = neg[:, :, None].expand(e, b, h).reshape(e, b * h)
        edge_bias = neg if edge_bias is None else edge_bias + neg
    ev = None
    if edge_values is not None:
        ev = edge_values.expand(b, e, h, dv).permute(1, 0, 2, 3).reshape(e, b * h, dv)
    if st.perm is not None:
        edge_bias = None if edge_bias is None else edge_bias[st.perm]
        ev = None if ev is None else ev[st.perm]
    # Dense-layout weights (complete, causal graphs) are returned as (B, H, Nd, Ns); the
    # output is then computed from them, so that they lie on its autograd path.
    dense_out = need_weights and graph.kind in ("complete", "causal") and ev is None
    out, alpha = edge_attention(
        qn,
        kn,
        vn,
        st,
        bias=edge_bias,
        edge_values=ev,
        scale=scale,
        dropout_p=dropout_p,
        aggregate=not dense_out,
    )
    if out is not None:
        out = out.view(nd, b, h, dv).permute(1, 2, 0, 3)  # (B, H, Nd, Dv)
    if not need_weights:
        return out, None
    if st.perm is not None:
        unsorted = torch.empty_like(alpha)
        unsorted[st.perm] = alpha
        alpha = unsorted
    weights = alpha.view(e, b, h).permute(1, 0, 2).to(q.dtype)  # (B, E, H)
    if dense_out:
        weights = AttentionWeights(weights, graph, "edges").to_dense()  # (B, H, Nd, Ns)
        dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
        out = torch.matmul(dropped, v)  # (B, H, Nd, Dv)
    return out, weights

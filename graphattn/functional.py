"""The functional entry point: ``graph_attention``.

``graph_attention(q, k, v, graph)`` computes, for every target ``i`` and head ``h``,
``out[i] = sum_j softmax_j(score(q_i, k_j) + bias_ij) v_j`` over the in-edges ``j -> i`` of
``graph``, with the layout of ``F.scaled_dot_product_attention``. The score is the scaled
dot product by default, or any score function of :mod:`graphattn.scores` (GAT, GATv2, your
own). The call is validated once into an :class:`~graphattn.backends.AttentionCall`, a
backend is chosen (:mod:`graphattn.dispatch`) and run:

- ``"dense"``: ``F.scaled_dot_product_attention`` (fused kernel) with a mask from the graph;
- ``"blocks"``: a batch of complete graphs packed into one fused call;
- ``"edges"``: message passing over the edge list, memory ``O(E * H)``;
- ``"auto"``: the first backend in the order of :class:`AutoPolicy` that can serve the call.

Axis legend: ``B`` batch, ``H`` heads, ``Nd`` targets, ``Ns`` sources, ``D`` head dim,
``Dv`` value head dim, ``De`` edge feature dim, ``E`` edges.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, overload

import torch
from torch import Tensor

from ._checks import WITH_WEIGHTS, renamed, weights_flag
from ._finite import all_finite, mask_padded_inputs, wider_dtype, zero_padded_nodes
from .backends import AttentionCall, Backend, BackendNotSupportedError, BackendResult, backend_names
from .dispatch import AutoPolicy, auto_policy, choose_backend, select_backend
from .graph import Graph, GraphLike, PerSampleGraph, as_graph
from .scores import Score, as_score
from .softmax import segment_softmax
from .weights import AttentionWeights

__all__ = [
    "graph_attention",
    "graph_attention_with_weights",
    "zero_padded_nodes",
    "segment_softmax",
    "AttentionOutput",
    "AttentionWeights",
    "AutoPolicy",
    "auto_policy",
    "choose_backend",
    "BackendName",
    "BackendNotSupportedError",
]

#: ``"auto"`` or the name of a registered backend (``"dense"``, ``"blocks"``, ``"edges"``).
BackendName = str
#: a score: a :class:`~graphattn.scores.Score`, a callable on one chunk of edges, or ``None``
ScoreLike = Score | Callable[[Tensor, Tensor, Tensor | None], Tensor] | None


@dataclass
class AttentionOutput:
    """What :func:`graph_attention_with_weights` and
    :meth:`GraphAttention.forward_with_weights <graphattn.GraphAttention.forward_with_weights>`
    return.

    Attributes:
        out: the attention output.
        attention: the weights, see :class:`AttentionWeights`.
        backend: the name of the backend that ran (``"dense"``, ``"blocks"``, ``"edges"``).
    """

    out: Tensor
    attention: AttentionWeights
    backend: str


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
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same number of nodes: {k.shape[-2]} vs {v.shape[-2]}"
        )


def _classify_bias(bias: Tensor, graph: Graph, b: int, h: int) -> Literal["edges", "dense"]:
    """Decide whether ``bias`` is per edge ``([B,] E, H)`` or dense ``(…, H, Nd, Ns)``."""
    if not isinstance(bias, Tensor):
        raise TypeError(f"attn_bias must be a torch.Tensor, got {type(bias).__name__}")
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
            f"attn_bias of shape {shape} is ambiguous (per edge (B, E={e}, H={h}) or dense "
            f"(H, Nd={nd}, Ns={ns})): pass a dense bias as 4 dims (B or 1, H or 1, Nd, Ns)"
        )
    if as_edges:
        return "edges"
    if as_dense:
        return "dense"
    raise ValueError(
        f"attn_bias must be per edge ([B,] E={e}, H={h}) or dense (…, H={h} or 1, Nd={nd}, "
        f"Ns={ns}), got {shape}"
    )


@overload
def graph_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: GraphLike = ...,
    *,
    score: ScoreLike = ...,
    attn_bias: Tensor | None = ...,
    edge_features: Tensor | None = ...,
    edge_values: Tensor | None = ...,
    dropout_p: float = ...,
    scale: float | None = ...,
    need_weights: Literal[False] = ...,
    backend: BackendName = ...,
    bias: Tensor | None = ...,
) -> Tensor: ...
@overload
def graph_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: GraphLike = ...,
    *,
    score: ScoreLike = ...,
    attn_bias: Tensor | None = ...,
    edge_features: Tensor | None = ...,
    edge_values: Tensor | None = ...,
    dropout_p: float = ...,
    scale: float | None = ...,
    need_weights: Literal[True],
    backend: BackendName = ...,
    bias: Tensor | None = ...,
) -> AttentionOutput: ...  # deprecated: graph_attention_with_weights
def graph_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: GraphLike = None,
    *,
    score: ScoreLike = None,
    attn_bias: Tensor | None = None,
    edge_features: Tensor | None = None,
    edge_values: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    need_weights: bool = False,
    backend: BackendName = "auto",
    bias: Tensor | None = None,
) -> Tensor:
    """Multi-head attention over the in-edges of a graph.

    With the default score this is ``F.scaled_dot_product_attention(q, k, v,
    attn_mask=graph.materialize())`` with a zero output for targets without in-edges, but the
    graph may be sparse and the cost then grows with the number of edges.

    Args:
        q: target features (queries; for GAT the per-node scalars ``<a_dst, W x_i>``).
        k: source features (keys; for GAT ``<a_src, W x_j>``).
        v: values of the source nodes.
        graph: a :class:`~graphattn.Graph`, a PyG ``edge_index`` ``(2, E)`` (row 0 sources,
            row 1 targets), a sparse ``adj_t`` ``(Nd, Ns)`` (rows = targets) or a PyG ``Data``
            (see :func:`~graphattn.graph.as_graph`), or ``None`` for the complete graph. Its
            key padding mask, if any, must have ``B`` rows. One graph per sample: a list of
            ``B`` edge lists ``(2, E_b)`` with ids local to their sample, a ``(B, 2, E)``
            tensor, or :meth:`~graphattn.Graph.per_sample` (with an ``edge_mask``); the
            weights then come per edge ``(E, H)`` on its ``flat()`` graph (see
            :class:`~graphattn.graph.PerSampleGraph`).
        score: a score function (:mod:`graphattn.scores`: ``DotProduct`` by default, ``GAT``,
            ``GATv2``) or a callable on one chunk of edges (see :class:`~graphattn.scores.Custom`).
        attn_bias: additive score bias (after the score function), per edge ``(E, H)`` /
            ``(B, E, H)`` aligned with ``graph.edge_index()``, or dense, broadcastable to
            ``(B, H, Nd, Ns)``.
        edge_features: per-edge input of the score, ``([B,] E, H, De)``: added to the key of
            the dot product (TransformerConv's edge features) and inside GAT's and GATv2's
            LeakyReLU. Edge backend only.
        edge_values: added to the value of each edge before weighting, ``([B,] E, H, Dv)``.
            Edge backend only.
        dropout_p: dropout probability on the attention weights (use 0 in evaluation).
        scale: multiplies the dot-product score, default ``1 / sqrt(D)``; other scores take no
            scale.
        need_weights: deprecated: ``True`` returns an :class:`AttentionOutput`, with a
            ``FutureWarning``; call :func:`graph_attention_with_weights` instead.
        backend: ``"auto"`` or a registered backend (``dense``, ``blocks``, ``edges``,
            ``fused``, ``linear``, or your own: :func:`~graphattn.backends.backend_names`).
        bias: the old name of ``attn_bias`` (deprecated).

    Shapes:
        - q: ``([B,] H, Nd, D)``; k: ``([B,] H, Ns, D)``; v: ``([B,] H, Ns, Dv)``
        - returns ``([B,] H, Nd, Dv)``

    Returns:
        The output tensor (the weights: :func:`graph_attention_with_weights`).

    Raises:
        BackendNotSupportedError: the requested backend cannot serve the call (the message
            lists every backend's reasons and the call's shapes).
    """
    attn_bias = renamed("attn_bias", attn_bias, "bias", bias, None)
    need_weights = weights_flag(
        need_weights, None, "graph_attention", "graph_attention_with_weights"
    )
    call, samples = _make_call(
        q, k, v, graph, score, attn_bias, edge_features, edge_values, dropout_p, scale, need_weights
    )
    if backend != "auto" and backend not in backend_names():
        raise ValueError(f"backend must be 'auto' or one of {backend_names()}, got {backend!r}")
    chosen = select_backend(call, backend)
    res = _run_finite(chosen, call)
    call.score.step()
    out = res.out if samples is None else _unfold_samples(res.out, samples)
    out = out if call.batched else out[0]
    if not need_weights:
        return out
    if samples is not None:  # per edge on the flat graph, whose batch is 1: (E, H)
        attention = AttentionWeights(res.weights[0], call.graph, "edges", batched=False)
        return AttentionOutput(out, attention, chosen.name)
    weights = res.weights if call.batched else res.weights[0]
    attention = AttentionWeights(weights, call.graph, call.graph.weights_layout, call.batched)
    return AttentionOutput(out, attention, chosen.name)


def graph_attention_with_weights(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: GraphLike = None,
    *,
    score: ScoreLike = None,
    attn_bias: Tensor | None = None,
    edge_features: Tensor | None = None,
    edge_values: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    backend: BackendName = "auto",
) -> AttentionOutput:
    """:func:`graph_attention`, also returning the attention weights and the backend that ran.

    The arguments are :func:`graph_attention`'s. The weights are part of the autograd graph
    (the output is computed from them), so gradient-based explanations can use them.

    Shapes:
        - q, k, v: as :func:`graph_attention`.
        - returns ``out`` ``([B,] H, Nd, Dv)``; ``attention`` per edge ``([B,] E, H)`` or
          dense ``([B,] H, Nd, Ns)``, as the graph's ``weights_layout`` says (see
          :class:`AttentionWeights`).

    Example:
        >>> import torch
        >>> from graphattn import Graph, graph_attention_with_weights
        >>> q = k = v = torch.randn(2, 4, 16, 8)  # (B, H, N, D)
        >>> res = graph_attention_with_weights(q, k, v, Graph.window(16, 2))
        >>> res.out.shape, res.attention.to_dense().shape
        (torch.Size([2, 4, 16, 8]), torch.Size([2, 4, 16, 16]))
    """
    return graph_attention(
        q,
        k,
        v,
        graph,
        score=score,
        attn_bias=attn_bias,
        edge_features=edge_features,
        edge_values=edge_values,
        dropout_p=dropout_p,
        scale=scale,
        need_weights=WITH_WEIGHTS,
        backend=backend,
    )


def _make_call(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: GraphLike,
    score: ScoreLike,
    bias: Tensor | None,
    edge_features: Tensor | None,
    edge_values: Tensor | None,
    dropout_p: float,
    scale: float | None,
    need_weights: bool,
) -> tuple[AttentionCall, int | None]:
    """Validate the arguments of :func:`graph_attention` once, into a batched call; with a
    per-sample graph, the call on its flat graph and the batch size ``B`` to unfold the
    output into (else ``None``)."""
    _check_inputs(q, k, v)
    score = as_score(score)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must lie in [0, 1), got {dropout_p}")
    batched = q.dim() == 4
    if not batched:
        q, k, v = q[None], k[None], v[None]
    score.check(q, k)
    b, h, nd, d = q.shape
    ns = k.shape[-2]
    graph = as_graph(graph, nd, ns, q.device, batch=b)
    if graph.device != q.device:
        raise ValueError(f"graph is on {graph.device} but q is on {q.device}; use graph.to()")
    pad = graph.key_padding_mask
    if pad is not None and pad.shape[0] != b:
        raise ValueError(
            f"graph's key_padding_mask has {pad.shape[0]} rows but the batch has B={b}"
        )
    if score.uses_scale:
        scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
        if not math.isfinite(scale):
            raise ValueError(f"scale must be a finite number, got {scale}")
    elif scale is not None:
        raise ValueError(f"scale={scale} was given but score {score!r} takes no scale")
    else:
        scale = 1.0
    bias_layout = None
    if bias is not None:
        bias, bias_layout = _check_bias(bias, graph, b, h, q)
    if edge_features is not None:
        de = score.edge_feature_dim(d)
        edge_features = _check_per_edge("edge_features", edge_features, graph, b, h, de, "De", q)
    if edge_values is not None:
        dv = v.shape[-1]
        edge_values = _check_per_edge("edge_values", edge_values, graph, b, h, dv, "Dv", v)
    samples = None
    if isinstance(graph, PerSampleGraph):  # one graph over B * N nodes, a batch of one
        samples = b
        q, k, v = _fold_samples(q), _fold_samples(k), _fold_samples(v)  # (1, H, B * N, C)
        if bias is not None:
            bias, bias_layout = _per_sample_bias(bias, bias_layout, graph, h), "edges"
        edge_features = _one_row("edge_features", edge_features, graph)
        edge_values = _one_row("edge_values", edge_values, graph)
        graph = graph.flat()
    call = AttentionCall(
        q=q,
        k=k,
        v=v,
        graph=graph,
        score=score,
        scale=scale,
        bias=bias,
        bias_layout=bias_layout,
        edge_features=edge_features,
        edge_values=edge_values,
        dropout_p=float(dropout_p),
        need_weights=bool(need_weights),
        batched=batched,
        policy=auto_policy,
    )
    return call, samples


def _fold_samples(x: Tensor) -> Tensor:
    """``(B, H, N, C)`` -> ``(1, H, B * N, C)``: the samples one after another along the node
    axis (node ``i`` of sample ``b`` at ``b * N + i``, as in :meth:`PerSampleGraph.flat`)."""
    b, h, n, c = x.shape
    return x.transpose(0, 1).reshape(1, h, b * n, c)


def _unfold_samples(x: Tensor, b: int) -> Tensor:
    """``(1, H, B * N, C)`` -> ``(B, H, N, C)``, the inverse of :func:`_fold_samples`."""
    _, h, bn, c = x.shape
    return x.reshape(h, b, bn // b, c).transpose(0, 1)


def _per_sample_bias(
    bias: Tensor, layout: Literal["edges", "dense"], graph: PerSampleGraph, h: int
) -> Tensor:
    """A per-sample graph's bias per edge of its flat graph ``(1, E, H)``, from a per-edge
    ``(1, E, H)`` bias or a dense ``(B or 1, H or 1, Nd, Ns)`` one (read at each edge of
    its own sample)."""
    if layout == "edges":
        return _one_row("attn_bias", bias, graph)
    b = graph.batch_size
    src, dst = graph.edge_index()  # (E,) ids within each sample
    dense = bias.expand(b, h, graph.num_dst, graph.num_src)  # (B, H, Nd, Ns)
    return dense[graph.edge_batch, :, dst, src][None]  # (1, E, H)


def _one_row(name: str, t: Tensor | None, graph: PerSampleGraph) -> Tensor | None:
    """A per-edge input of a per-sample graph, which must not have one row per sample: each
    edge belongs to one sample already."""
    if t is None or t.shape[0] == 1:
        return t
    e = graph.num_edges
    raise ValueError(
        f"{name} has a batch dimension of {t.shape[0]} but the graph is per sample: give "
        f"one row per edge of all samples, (E={e}, ...) in graph.edge_index() order (sample "
        f"0's edges first), got shape {tuple(t.shape)}"
    )


def _run_finite(chosen: Backend, call: AttentionCall) -> BackendResult:
    """Run ``call`` on ``chosen`` under the rules of :mod:`graphattn._finite`.

    The clean path runs once and sums the output. A non-finite output is looked into: when
    padded sources hold non-finite values the call runs again with them zeroed; when the
    inputs are finite (scores overflowed) it runs again in the next wider type and the
    result is cast back. Compiled code zeroes padded sources up front (no data-dependent
    branch) and skips the rest.

    Raises:
        FloatingPointError: a float64 call with finite inputs gave a non-finite output.
    """
    if torch.compiler.is_compiling():
        return chosen.run(mask_padded_inputs(call))
    res = chosen.run(call)
    if all_finite(res.out):
        return res
    masked = mask_padded_inputs(call)
    if masked is not call:  # NaN or inf in padded sources: run without them
        call, res = masked, chosen.run(masked)
        if all_finite(res.out):
            return res
    inputs = (call.q, call.k, call.v, call.bias, call.edge_features, call.edge_values)
    clean = all_finite(*inputs)
    dtype = call.q.dtype
    wide = wider_dtype(dtype)
    if wide is None:
        if clean:
            raise FloatingPointError(
                "attention scores overflowed float64 on finite inputs (a score beyond "
                f"{torch.finfo(dtype).max:.3g}); scale the queries and keys down. "
                f"Call: {call.describe()}"
            )
        return res  # non-finite inputs: the output is non-finite where the rules say
    names = ("q", "k", "v", "bias", "edge_features", "edge_values")
    up = {  # the same call in the wider type (autograd flows through the casts)
        name: None if t is None else t.to(wide) for name, t in zip(names, inputs, strict=True)
    }
    wide_call = replace(call, **up)
    backend = chosen if not chosen.reasons(wide_call) else select_backend(wide_call, "auto")
    wres = _run_finite(backend, wide_call)
    weights = None if wres.weights is None else wres.weights.to(dtype)
    return BackendResult(wres.out.to(dtype), weights)


def _check_bias(
    bias: Tensor, graph: Graph, b: int, h: int, q: Tensor
) -> tuple[Tensor, Literal["edges", "dense"]]:
    """Classify and normalise ``bias``: per edge -> ``(B or 1, E, H)``, dense ->
    ``(B or 1, H or 1, Nd, Ns)``."""
    layout = _classify_bias(bias, graph, b, h)
    if bias.device != q.device:
        raise ValueError(f"bias is on {bias.device} but q is on {q.device}")
    if not bias.is_floating_point():
        raise TypeError(f"bias must be a floating-point tensor, got {bias.dtype}")
    if layout == "edges":
        return (bias if bias.dim() == 3 else bias[None]), layout
    while bias.dim() < 4:
        bias = bias[None]
    return bias, layout


def _check_per_edge(
    name: str, t: Tensor, graph: Graph, b: int, h: int, dim: int, dim_name: str, ref: Tensor
) -> Tensor:
    """Check a per-edge tensor ``([B,] E, H, dim)``; returns it as ``(B or 1, E, H, dim)``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    e = graph.num_edges
    given = tuple(t.shape)
    if t.dim() == 3:
        t = t[None]
    if t.dim() != 4 or t.shape[1:] != (e, h, dim) or t.shape[0] not in (1, b):
        raise ValueError(
            f"{name} must have shape ([B,] E={e}, H={h}, {dim_name}={dim}), got {given}"
        )
    if t.dtype != ref.dtype or t.device != ref.device:
        raise TypeError(
            f"{name} must match the dtype and device of the node features "
            f"({ref.dtype}, {ref.device}), got {t.dtype}, {t.device}"
        )
    return t

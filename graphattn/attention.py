"""``GraphAttention``: multi-head attention whose keys are the in-edges of a graph.

On the complete graph it is ``nn.MultiheadAttention`` (same parameters, same numbers; see
:meth:`GraphAttention.from_multihead_attention`); on an edge list it is PyG's
``TransformerConv`` with an output projection and without the root weight.

Axis legend: ``B`` batch, ``Nd`` targets, ``Ns`` sources, ``E`` edges, ``H`` heads,
``Dh`` head dim, ``C`` embed dim.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_int, renamed
from ._finite import zero_padded_nodes
from .backends import backend_names
from .functional import AttentionOutput, BackendName, graph_attention
from .graph import Graph, as_graph
from .scores import Score, ScoreFn

#: source features inside the module: one tensor for keys and values, or (keys, values)
SourceInput = Tensor | tuple[Tensor, Tensor]


def _split_source(x_src: SourceInput) -> tuple[Tensor, Tensor]:
    return (x_src, x_src) if isinstance(x_src, Tensor) else x_src


def _map_source(x_src: SourceInput, fn: Callable[[Tensor], Tensor]) -> SourceInput:
    return fn(x_src) if isinstance(x_src, Tensor) else (fn(x_src[0]), fn(x_src[1]))


__all__ = ["GraphAttention", "RotaryFn"]

#: A rotary (or any query/key) transform: ``(q, k) -> (q, k)`` on ``(B, H, N, Dh)`` tensors,
#: e.g. :class:`graphattn.RotaryEmbedding`.
RotaryFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class GraphAttention(nn.Module):
    """Multi-head attention over the edges of a graph (self- or cross-attention).

    Args:
        embed_dim: model width ``C`` (queries and outputs).
        num_heads: number of heads; must divide ``embed_dim``.
        dropout: dropout on the attention weights during training.
        bias: add biases to the input and output projections.
        kdim: feature size of key inputs (default ``embed_dim``).
        vdim: feature size of value inputs (default ``embed_dim``).
        edge_dim: feature size of edge features ``edge_attr``; they are projected to
            ``C`` and added to keys and values of their edge, like TransformerConv's
            ``edge_dim`` (``None``: no edge features).
        score: the score function of queries and keys (:mod:`graphattn.scores`): the scaled
            dot product by default, or any score on ``(n, H, Dh)`` features such as
            :class:`~graphattn.scores.GATv2` or your own function or ``nn.Module``
            (registered as a submodule, so its parameters train with the layer).
        backend: ``"auto"`` or a registered backend (see :func:`graph_attention`).
        batch_first: batched inputs and outputs are ``(B, N, C)``; ``False``: ``(N, B, C)``,
            as ``nn.MultiheadAttention(batch_first=False)`` (its default, which
            :meth:`from_multihead_attention` carries over).

    Shapes:
        - x: ``(Nd, C)`` or ``(B, Nd, C)`` (``(Nd, B, C)`` with ``batch_first=False``); x_src:
          ``(Ns, kdim)`` or ``(B, Ns, kdim)`` (``(Ns, B, kdim)``); x_value: the same with
          ``vdim``
        - edge_attr: ``(E, edge_dim)``; key_padding_mask: ``(B, Ns)`` bool, True = padded
        - output: same layout as ``x``, last dim ``C``

    Example:
        >>> import torch
        >>> from graphattn import GraphAttention, Graph
        >>> attn = GraphAttention(16, 4)
        >>> x = torch.randn(2, 10, 16)
        >>> attn(x, Graph.window(10, radius=2)).shape
        torch.Size([2, 10, 16])
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        edge_dim: int | None = None,
        score: Score | ScoreFn | None = None,
        backend: BackendName = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        self.batch_first = bool(batch_first)
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            check_int(name, value)
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if backend != "auto" and backend not in backend_names():
            raise ValueError(f"backend must be 'auto' or one of {backend_names()}, got {backend!r}")
        if score is not None and not isinstance(score, Score) and not callable(score):
            raise TypeError(f"score must be a Score or a callable, got {type(score).__name__}")
        self.score = score  # an nn.Module hook registers as a submodule
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.edge_dim = edge_dim
        self.dropout = dropout
        self.backend: BackendName = backend
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **factory))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.lin_edge = (
            nn.Linear(edge_dim, embed_dim, bias=False, **factory) if edge_dim is not None else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as ``nn.MultiheadAttention`` does (Xavier-uniform projections, zero
        biases)."""
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            nn.init.xavier_uniform_(self.q_proj_weight)
            nn.init.xavier_uniform_(self.k_proj_weight)
            nn.init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
        self.out_proj.reset_parameters()
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)
        if self.lin_edge is not None:
            self.lin_edge.reset_parameters()

    @classmethod
    def from_transformer_conv(
        cls, conv: nn.Module, *, backend: BackendName = "auto"
    ) -> GraphAttention:
        """A ``GraphAttention`` with a copy of a PyG ``TransformerConv``'s weights: on the same
        ``edge_index`` (and ``edge_attr``) both give the same output. The output projection
        is the identity, since TransformerConv has none.

        The conv must have ``root_weight=False`` (no skip connection), ``concat=True``,
        ``beta=False``, biased projections, and ``in_channels == heads * out_channels``.
        """
        for attr in ("lin_query", "lin_key", "lin_value", "heads", "out_channels"):
            if not hasattr(conv, attr):
                raise TypeError(
                    f"conv must be a torch_geometric TransformerConv, got {type(conv).__name__}"
                )
        if getattr(conv, "root_weight", False):
            raise ValueError(
                "conv has root_weight=True (a skip connection GraphAttention does not have); "
                "build it with root_weight=False"
            )
        if not getattr(conv, "concat", True) or getattr(conv, "beta", False):
            raise ValueError("conv must have concat=True and beta=False")
        embed = conv.heads * conv.out_channels
        lins = (conv.lin_query, conv.lin_key, conv.lin_value)
        for name, lin in zip(("lin_query", "lin_key", "lin_value"), lins, strict=True):
            if lin.in_channels != embed or lin.bias is None:
                raise ValueError(
                    f"conv.{name} must map {embed} (= heads * out_channels) features with a "
                    f"bias, got in_channels={lin.in_channels}, bias={lin.bias is not None}"
                )
        lin_edge = getattr(conv, "lin_edge", None)
        ref = conv.lin_query.weight
        new = cls(
            embed,
            conv.heads,
            dropout=float(getattr(conv, "dropout", 0.0)),
            edge_dim=None if lin_edge is None else lin_edge.in_channels,
            backend=backend,
            device=ref.device,
            dtype=ref.dtype,
        )
        with torch.no_grad():
            new.in_proj_weight.copy_(torch.cat([lin.weight for lin in lins]))
            new.in_proj_bias.copy_(torch.cat([lin.bias for lin in lins]))
            new.out_proj.weight.copy_(torch.eye(embed, dtype=ref.dtype, device=ref.device))
            new.out_proj.bias.zero_()
            if lin_edge is not None:
                new.lin_edge.weight.copy_(lin_edge.weight)
        return new

    @classmethod
    def from_multihead_attention(
        cls, mha: nn.MultiheadAttention, *, backend: BackendName = "auto"
    ) -> GraphAttention:
        """A ``GraphAttention`` with a copy of ``mha``'s weights and its ``batch_first``: on
        the complete graph both give the same output for the same inputs."""
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"mha must be an nn.MultiheadAttention, got {type(mha).__name__}")
        if mha.bias_k is not None or mha.bias_v is not None:
            raise ValueError("mha has add_bias_kv=True, which GraphAttention does not support")
        if mha.add_zero_attn:
            raise ValueError("mha has add_zero_attn=True, which GraphAttention does not support")
        ref = mha.out_proj.weight
        new = cls(
            mha.embed_dim,
            mha.num_heads,
            dropout=mha.dropout,
            bias=mha.in_proj_bias is not None,
            kdim=mha.kdim,
            vdim=mha.vdim,
            backend=backend,
            device=ref.device,
            dtype=ref.dtype,
            batch_first=mha.batch_first,
        )
        with torch.no_grad():
            for name, _ in new.named_parameters():
                new.get_parameter(name).copy_(mha.get_parameter(name))
        return new

    def _project(self, x: Tensor, x_src: SourceInput | None) -> tuple[Tensor, Tensor, Tensor]:
        """Input projections; returns q, k, v as ``(B, N, C)``."""
        c = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:c], b[c : 2 * c], b[2 * c :])
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            if x_src is None:
                return F.linear(x, w, b).chunk(3, dim=-1)  # 3 x (B, Nd, C)
            if isinstance(x_src, Tensor):
                kv_b = None if b is None else b[c:]
                k, v = F.linear(x_src, w[c:], kv_b).chunk(2, dim=-1)  # 2 x (B, Ns, C)
                return F.linear(x, w[:c], bq), k, v
            wq, wk, wv = w[:c], w[c : 2 * c], w[2 * c :]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        key_in, value_in = (x, x) if x_src is None else _split_source(x_src)
        return F.linear(x, wq, bq), F.linear(key_in, wk, bk), F.linear(value_in, wv, bv)

    def _check(self, x: Tensor, x_src: SourceInput | None) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (2, 3):
            raise ValueError(f"x must have shape (N, C) or (B, N, C), got {tuple(x.shape)}")
        if x.shape[-1] != self.embed_dim:
            raise ValueError(f"x has feature size {x.shape[-1]} but embed_dim is {self.embed_dim}")
        if x_src is None:
            if not self._qkv_same_embed_dim:
                raise ValueError(
                    f"self-attention needs kdim == vdim == embed_dim; this module has "
                    f"kdim={self.kdim}, vdim={self.vdim}: pass x_src"
                )
            return
        if isinstance(x_src, Tensor):
            if self.kdim != self.vdim:
                raise ValueError(
                    f"kdim ({self.kdim}) != vdim ({self.vdim}): pass x_src=keys, x_value=values"
                )
            pairs = (("x_src", x_src, "kdim", self.kdim),)
        elif isinstance(x_src, tuple) and len(x_src) == 2:
            pairs = (
                ("x_src (keys)", x_src[0], "kdim", self.kdim),
                ("x_value (values)", x_src[1], "vdim", self.vdim),
            )
        else:
            raise TypeError(f"x_src must be a torch.Tensor, got {type(x_src).__name__}")
        for name, t, dim_name, dim in pairs:
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != x.dim():
                raise ValueError(
                    f"{name} must have as many dims as x ({x.dim()}), got {tuple(t.shape)}"
                )
            if x.dim() == 3 and t.shape[0] != x.shape[0]:
                raise ValueError(f"x has batch {x.shape[0]} but {name} has {t.shape[0]}")
            if t.shape[-1] != dim:
                raise ValueError(f"{name} has feature size {t.shape[-1]} but {dim_name} is {dim}")
            if t.dtype != x.dtype or t.device != x.device:
                raise TypeError(
                    f"{name} ({t.dtype}, {t.device}) must match x ({x.dtype}, {x.device})"
                )
        if len(pairs) == 2 and pairs[0][1].shape[-2] != pairs[1][1].shape[-2]:
            raise ValueError(
                f"keys and values must have the same number of nodes, got "
                f"{pairs[0][1].shape[-2]} and {pairs[1][1].shape[-2]}"
            )

    @overload
    def forward(
        self,
        x: Tensor,
        graph: Graph | Tensor | None = ...,
        *,
        x_src: Tensor | None = ...,
        x_value: Tensor | None = ...,
        edge_attr: Tensor | None = ...,
        key_padding_mask: Tensor | None = ...,
        attn_bias: Tensor | None = ...,
        rotary: RotaryFn | None = ...,
        need_weights: Literal[False] = ...,
        bias: Tensor | None = ...,
        return_attention: bool | None = ...,
    ) -> Tensor: ...
    @overload
    def forward(
        self,
        x: Tensor,
        graph: Graph | Tensor | None = ...,
        *,
        x_src: Tensor | None = ...,
        x_value: Tensor | None = ...,
        edge_attr: Tensor | None = ...,
        key_padding_mask: Tensor | None = ...,
        attn_bias: Tensor | None = ...,
        rotary: RotaryFn | None = ...,
        need_weights: Literal[True],
        bias: Tensor | None = ...,
        return_attention: bool | None = ...,
    ) -> AttentionOutput: ...
    def forward(
        self,
        x: Tensor,
        graph: Graph | Tensor | None = None,
        *,
        x_src: Tensor | None = None,
        x_value: Tensor | None = None,
        edge_attr: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        attn_bias: Tensor | None = None,
        rotary: RotaryFn | None = None,
        need_weights: bool = False,
        bias: Tensor | None = None,
        return_attention: bool | None = None,
    ) -> Tensor | AttentionOutput:
        """Attend from every target node to its in-edges' sources.

        Args:
            x: target (query) node features.
            graph: a :class:`Graph`, a PyG ``edge_index`` or ``None`` (complete graph).
            x_src: source node features for cross-attention (default: ``x``); the keys
                (``kdim`` wide) when ``x_value`` is given. A tuple is refused: PyG's
                ``(x_src, x_dst)`` and MHA's ``(key, value)`` would read it differently.
            x_value: separate value features of the sources (``vdim`` wide), as the
                ``value`` of ``nn.MultiheadAttention`` (default: ``x_src``).
            edge_attr: edge features ``(E, edge_dim)`` aligned with ``graph.edge_index()``.
            key_padding_mask: ``(B, Ns)`` bool, True = padded source (as in
                ``nn.MultiheadAttention``).
            attn_bias: additive score bias, see :func:`graph_attention`.
            rotary: a transform ``(q, k) -> (q, k)`` of the projected queries and keys
                ``(B, H, N, Dh)``, applied right after the projections (before edge features
                and attention), e.g. a :class:`~graphattn.RotaryEmbedding`. Use
                ``functools.partial(rope, q_pos=..., k_pos=...)`` for explicit positions.
            need_weights: also return the attention weights.
            bias: the old name of ``attn_bias`` (deprecated: ``bias`` means the projection
                biases of the constructor).
            return_attention: the old name of ``need_weights`` (deprecated).

        Shapes:
            - x: ``([B,] Nd, C)``; x_src: ``([B,] Ns, kdim)``; returns ``([B,] Nd, C)``.

        Returns:
            The output, or an :class:`AttentionOutput` (``out``, ``attention``, ``backend``)
            when ``need_weights=True``.
        """
        attn_bias = renamed("attn_bias", attn_bias, "bias", bias, None)
        need_weights = renamed(
            "need_weights", need_weights, "return_attention", return_attention, False
        )
        x_src = _source(x_src, x_value)
        seq_first = not self.batch_first and isinstance(x, Tensor) and x.dim() == 3
        if seq_first:  # (N, B, C) -> (B, N, C), and back at the end
            x = x.transpose(0, 1)
            x_src = _batch_major(x_src)
        self._check(x, x_src)
        batched = x.dim() == 3
        if not batched:
            x = x[None]
            x_src = None if x_src is None else _map_source(x_src, lambda t: t[None])
        bsz, nd, _ = x.shape
        ns = nd if x_src is None else _split_source(x_src)[0].shape[1]
        h, dh = self.num_heads, self.head_dim
        graph = as_graph(graph, nd, ns, x.device)
        if graph.device != x.device:
            graph = graph.to(x.device)
        if key_padding_mask is not None:
            if not batched and key_padding_mask.dim() == 1:
                key_padding_mask = key_padding_mask[None]
            graph = graph.pad(key_padding_mask=key_padding_mask)
        pad = graph.key_padding_mask  # (B, Ns) or None
        if x_src is None:  # padded nodes' NaN or inf must not reach the gradients either
            x = zero_padded_nodes(x, pad)
        else:
            x_src = _map_source(x_src, lambda t: zero_padded_nodes(t, pad))
        q, k, v = self._project(x, x_src)
        q = q.view(bsz, nd, h, dh).transpose(1, 2)  # (B, H, Nd, Dh)
        k = k.view(bsz, ns, h, dh).transpose(1, 2)  # (B, H, Ns, Dh)
        v = v.view(bsz, ns, h, dh).transpose(1, 2)  # (B, H, Ns, Dh)
        if rotary is not None:
            q, k = _apply_rotary(rotary, q, k)
        edge_features = None
        if edge_attr is not None:
            edge_features = self._edge_features(edge_attr, graph)  # (E, H, Dh)
        elif self.lin_edge is not None:
            raise ValueError("this module was built with edge_dim; pass edge_attr")
        res = graph_attention(
            q,
            k,
            v,
            graph,
            attn_bias=attn_bias,
            edge_features=edge_features,
            edge_values=edge_features,
            dropout_p=self.dropout if self.training else 0.0,
            need_weights=need_weights,
            score=self.score,
            backend=self.backend,
        )
        out = res.out if need_weights else res
        out = out.transpose(1, 2).reshape(bsz, nd, self.embed_dim)  # (B, Nd, C)
        out = self.out_proj(out)
        if not batched:
            out = out[0]
        if seq_first:
            out = out.transpose(0, 1)  # (Nd, B, C)
        if not need_weights:
            return out
        if not batched:
            res.attention.values = res.attention.values[0]
            res.attention.batched = False
        return AttentionOutput(out, res.attention, res.backend)

    def _edge_features(self, edge_attr: Tensor, graph: Graph) -> Tensor:
        """Projected edge features ``(E, H, Dh)``, added to the key of their edge inside the
        score (``<q_i, k_j + e_ij>``) and to its value, as in ``TransformerConv``."""
        if self.lin_edge is None:
            raise ValueError("edge_attr was given but this module has edge_dim=None")
        e = graph.num_edges
        if edge_attr.dim() != 2 or edge_attr.shape != (e, self.edge_dim):
            raise ValueError(
                f"edge_attr must have shape (E={e}, edge_dim={self.edge_dim}), "
                f"got {tuple(edge_attr.shape)}"
            )
        return self.lin_edge(edge_attr).view(e, self.num_heads, self.head_dim)

    def extra_repr(self) -> str:
        parts = [f"embed_dim={self.embed_dim}", f"num_heads={self.num_heads}"]
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        if not self._qkv_same_embed_dim:
            parts += [f"kdim={self.kdim}", f"vdim={self.vdim}"]
        if self.edge_dim is not None:
            parts.append(f"edge_dim={self.edge_dim}")
        if not self.batch_first:
            parts.append("batch_first=False")
        if self.score is not None and not isinstance(self.score, nn.Module):
            parts.append(f"score={self.score!r}")
        parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


def _source(x_src: object, x_value: object) -> object:
    """The module's source input: ``x_src``, or ``(x_src, x_value)`` when values are given
    apart. A tuple ``x_src`` is refused, naming both readings."""
    if isinstance(x_src, tuple | list):
        raise TypeError(
            f"x_src must be a tensor, got a {type(x_src).__name__} of {len(x_src)}: a pair is "
            "ambiguous (PyG reads (x_src, x_dst), nn.MultiheadAttention (key, value)). Pass "
            "the targets as x, the keys as x_src and separate values as x_value"
        )
    if x_value is None:
        return x_src
    if x_src is None:
        raise ValueError("x_value was given without x_src: pass the keys as x_src")
    return (x_src, x_value)


def _batch_major(x_src: object) -> object:
    """Sequence-first source features ``(Ns, B, C)`` (or a pair of them) as ``(B, Ns, C)``;
    anything else unchanged (the checks that follow name what is wrong)."""
    if isinstance(x_src, Tensor) and x_src.dim() == 3:
        return x_src.transpose(0, 1)
    if isinstance(x_src, tuple) and len(x_src) == 2:
        return tuple(_batch_major(t) for t in x_src)
    return x_src


def _apply_rotary(rotary: RotaryFn, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """``rotary(q, k)``, checked to return tensors of the shapes it was given."""
    if not callable(rotary):
        raise TypeError(f"rotary must be callable (q, k) -> (q, k), got {type(rotary).__name__}")
    res = rotary(q, k)
    if not (isinstance(res, tuple | list) and len(res) == 2):
        raise TypeError(f"rotary must return a pair (q, k), got {type(res).__name__}")
    q2, k2 = res
    if q2.shape != q.shape or k2.shape != k.shape:
        raise ValueError(
            f"rotary must keep the shapes of q {tuple(q.shape)} and k {tuple(k.shape)}, "
            f"got {tuple(q2.shape)} and {tuple(k2.shape)}"
        )
    return q2, k2

"""``GraphAttention``: multi-head attention whose keys are the in-edges of a graph.

On the complete graph it is ``nn.MultiheadAttention`` (same parameters, same numbers; see
:meth:`GraphAttention.from_multihead_attention`); on an edge list it is PyG's
``TransformerConv`` with an output projection and without the root weight. It takes PyG's
inputs too: ``in_channels`` (also lazy, ``-1``), ``(x_src, x_dst)`` pairs, sparse ``adj_t``
graphs and ``Data`` / ``Batch`` objects.

Axis legend: ``B`` batch, ``Nd`` targets, ``Ns`` sources, ``E`` edges, ``H`` heads,
``Dh`` head dim, ``C`` embed dim.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from ._checks import WITH_WEIGHTS, check_int, renamed, weights_flag
from ._finite import zero_padded_nodes
from ._pyg import data_inputs, is_pyg_data
from .backends import backend_names
from .functional import AttentionOutput, BackendName, graph_attention, graph_attention_with_weights
from .graph import Graph, GraphLike, as_graph
from .scores import Score, ScoreFn

if TYPE_CHECKING:  # named in annotations only
    from torch_geometric.data import Data

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
        in_channels: input widths in PyG's way, instead of ``kdim``/``vdim``: an int ``F``
            for targets and sources alike (one packed ``in_proj_weight`` ``(3C, F)``), or
            ``(F_src, F_dst)`` (``q_proj_weight`` ``(C, F_dst)``, ``k_proj_weight`` and
            ``v_proj_weight`` ``(C, F_src)``). ``-1``, alone or in the pair, shapes that
            projection from the first input it sees, like PyG's ``Linear(-1, ...)`` (build
            the optimizer after that first call). ``None`` (default): ``embed_dim``.
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
        - x: ``(Nd, C)`` or ``(B, Nd, C)`` (``(Nd, B, C)`` with ``batch_first=False``), ``C``
          being ``F_dst`` with ``in_channels``; x_src: ``(Ns, kdim)`` or ``(B, Ns, kdim)``
          (``(Ns, B, kdim)``), ``kdim`` being ``F_src``; x_value: the same with ``vdim``
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
        in_channels: int | tuple[int, int] | None = None,
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
        f_q, f_k, f_v = _input_widths(embed_dim, in_channels, kdim, vdim)  # -1: lazy
        self.in_channels = tuple(in_channels) if isinstance(in_channels, list) else in_channels
        self.edge_dim = edge_dim
        self.dropout = dropout
        self.backend: BackendName = backend
        # one packed in_proj_weight (3C, F) when q, k and v read one input: an int in_channels,
        # or MHA's kdim == vdim == embed_dim; a (src, dst) pair gets q/k/v_proj_weight
        self._packed = isinstance(in_channels, int) or (
            in_channels is None and f_k == f_v == embed_dim
        )
        if self._packed:
            self.in_proj_weight = _weight(3 * embed_dim, f_q, factory)
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = _weight(embed_dim, f_q, factory)
            self.k_proj_weight = _weight(embed_dim, f_k, factory)
            self.v_proj_weight = _weight(embed_dim, f_v, factory)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.lin_edge = (
            nn.Linear(edge_dim, embed_dim, bias=False, **factory) if edge_dim is not None else None
        )
        self.reset_parameters()

    @property
    def qdim(self) -> int:
        """Feature size of query (target) inputs; ``-1`` until a lazy projection is shaped."""
        return _in_width(self.in_proj_weight if self._packed else self.q_proj_weight)

    @property
    def kdim(self) -> int:
        """Feature size of key inputs; ``-1`` until a lazy projection is shaped."""
        return _in_width(self.in_proj_weight if self._packed else self.k_proj_weight)

    @property
    def vdim(self) -> int:
        """Feature size of value inputs; ``-1`` until a lazy projection is shaped."""
        return _in_width(self.in_proj_weight if self._packed else self.v_proj_weight)

    def reset_parameters(self) -> None:
        """Initialise as ``nn.MultiheadAttention`` does (Xavier-uniform projections, zero
        biases); a lazy projection is initialised when its first input shapes it."""
        for w in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if w is not None and not _lazy(w):
                nn.init.xavier_uniform_(w)
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
        ``beta=False`` and biased projections; an ``in_channels`` other than
        ``heads * out_channels`` becomes the new module's ``in_channels``.
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
            if _lazy(lin.weight):
                raise ValueError(
                    f"conv.{name} is lazy (in_channels=-1): run one forward pass first so "
                    "that its shape is known"
                )
            if lin.bias is None:
                raise ValueError(f"conv.{name} must have a bias (build the conv with bias=True)")
        f_src, f_dst = conv.lin_key.weight.shape[1], conv.lin_query.weight.shape[1]
        lin_edge = getattr(conv, "lin_edge", None)
        ref = conv.lin_query.weight
        new = cls(
            embed,
            conv.heads,
            dropout=float(getattr(conv, "dropout", 0.0)),
            in_channels=None if f_src == f_dst == embed else (f_src, f_dst),
            edge_dim=None if lin_edge is None else lin_edge.in_channels,
            backend=backend,
            device=ref.device,
            dtype=ref.dtype,
        )
        with torch.no_grad():
            if new._packed:
                new.in_proj_weight.copy_(torch.cat([lin.weight for lin in lins]))
            else:
                for w, lin in zip(
                    (new.q_proj_weight, new.k_proj_weight, new.v_proj_weight), lins, strict=True
                ):
                    w.copy_(lin.weight)
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
        if self._packed:
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
        if x.shape[-1] != self.qdim:
            raise ValueError(
                f"x has feature size {x.shape[-1]} but {self._width_name('q')} is {self.qdim}"
            )
        if x_src is None:
            if self.in_channels is None and not self._packed:
                raise ValueError(
                    f"self-attention needs kdim == vdim == embed_dim; this module has "
                    f"kdim={self.kdim}, vdim={self.vdim}: pass x_src"
                )
            if not self.qdim == self.kdim == self.vdim:
                raise ValueError(
                    f"self-attention needs one input width, but in_channels={self.in_channels!r}"
                    f" gives sources and targets different ones: pass PyG's (x_src, x_dst) "
                    f"as x, or the sources as x_src"
                )
            return
        k_name, v_name = self._width_name("k"), self._width_name("v")
        if isinstance(x_src, Tensor):
            if self.kdim != self.vdim:
                raise ValueError(
                    f"kdim ({self.kdim}) != vdim ({self.vdim}): pass x_src=keys, x_value=values"
                )
            pairs = (("x_src", x_src, k_name, self.kdim),)
        elif isinstance(x_src, tuple) and len(x_src) == 2:
            pairs = (
                ("x_src (keys)", x_src[0], k_name, self.kdim),
                ("x_value (values)", x_src[1], v_name, self.vdim),
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

    def _width_name(self, role: Literal["q", "k", "v"]) -> str:
        """The constructor argument that set the input width of ``role``, for messages."""
        if self.in_channels is None:
            return {"q": "embed_dim", "k": "kdim", "v": "vdim"}[role]
        if isinstance(self.in_channels, int):
            return "in_channels"
        return "in_channels[1] (targets)" if role == "q" else "in_channels[0] (sources)"

    def _materialize(self, x: Tensor, x_src: SourceInput | None) -> None:
        """Shape the lazy (``-1``) projections from their first inputs and initialise them
        (Xavier-uniform, as :meth:`reset_parameters`)."""
        keys, values = (x, x) if x_src is None else _split_source(x_src)
        inputs = {"in_proj_weight": x, "q_proj_weight": x, "k_proj_weight": keys}
        inputs["v_proj_weight"] = values
        for name, t in inputs.items():
            w = getattr(self, name)
            if w is None or not _lazy(w):
                continue
            if not isinstance(t, Tensor) or t.dim() not in (2, 3):
                return  # _check names what is wrong
            rows = 3 * self.embed_dim if name == "in_proj_weight" else self.embed_dim
            with torch.no_grad():
                w.materialize((rows, t.shape[-1]))
                nn.init.xavier_uniform_(w)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        """``nn.Module``'s, but an unshaped lazy parameter is saved as it is (it cannot be
        detached), as torch's and PyG's lazy layers do."""
        if not any(_lazy(p) for p in self._parameters.values() if p is not None):
            super()._save_to_state_dict(destination, prefix, keep_vars)
            return
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars or _lazy(p) else p.detach()
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = buf if keep_vars else buf.detach()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        """``nn.Module``'s, after shaping each lazy projection from the checkpoint's width
        (its rows stay the module's, so a wrong checkpoint is still refused)."""
        for name, w in self._parameters.items():
            saved = state_dict.get(prefix + name)
            if w is None or not _lazy(w) or not isinstance(saved, Tensor) or _lazy(saved):
                continue
            rows = 3 * self.embed_dim if name == "in_proj_weight" else self.embed_dim
            w.materialize((rows, saved.shape[-1]))
        super()._load_from_state_dict(state_dict, prefix, *args)

    @overload
    def forward(
        self,
        x: Tensor | tuple[Tensor, Tensor] | Data,
        graph: GraphLike = ...,
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
        x: Tensor | tuple[Tensor, Tensor] | Data,
        graph: GraphLike = ...,
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
    ) -> AttentionOutput: ...  # deprecated: forward_with_weights
    def forward(
        self,
        x: Tensor | tuple[Tensor, Tensor] | Data,
        graph: GraphLike = None,
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
    ) -> Tensor:
        """Attend from every target node to its in-edges' sources.

        Args:
            x: target (query) node features; or PyG's pair ``(x_src, x_dst)`` of source and
                target features (then no ``x_src=``); or a PyG ``Data`` / ``Batch``, whose
                ``x``, graph (``edge_index``, else ``adj_t``) and, when the module has
                ``edge_dim`` and no ``edge_attr`` is passed, ``edge_attr`` are used.
            graph: a :class:`Graph`, a PyG ``edge_index``, a sparse adjacency ``adj_t``
                ``(Nd, Ns)`` whose rows are the targets (:meth:`Graph.from_sparse`), a PyG
                ``Data`` / ``Batch`` (its graph only), or ``None`` (complete graph); one
                graph per sample: a list of ``B`` edge lists ``(2, E_b)`` (ids local to the
                sample), a ``(B, 2, E)`` tensor or :meth:`Graph.per_sample` (with an
                ``edge_mask``), see :class:`~graphattn.graph.PerSampleGraph`.
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
            need_weights: deprecated: ``True`` returns an :class:`AttentionOutput`, with a
                ``FutureWarning``; call :meth:`forward_with_weights` instead.
            bias: the old name of ``attn_bias`` (deprecated: ``bias`` means the projection
                biases of the constructor).
            return_attention: the old name of ``need_weights`` (deprecated).

        Shapes:
            - x: ``([B,] Nd, C)``; x_src: ``([B,] Ns, kdim)``; returns ``([B,] Nd, C)``.

        Returns:
            The output (the weights: :meth:`forward_with_weights`).
        """
        attn_bias = renamed("attn_bias", attn_bias, "bias", bias, None)
        need_weights = weights_flag(
            need_weights,
            return_attention,
            "GraphAttention.forward",
            "GraphAttention.forward_with_weights",
        )
        if is_pyg_data(x):
            x, graph, edge_attr = data_inputs(
                x, graph, edge_attr, self.lin_edge is not None, "graph"
            )
        x, x_src = _target_and_source(x, x_src)
        x_src = _source(x_src, x_value)
        seq_first = not self.batch_first and isinstance(x, Tensor) and x.dim() == 3
        if seq_first:  # (N, B, C) -> (B, N, C), and back at the end
            x = x.transpose(0, 1)
            x_src = _batch_major(x_src)
        if self.in_channels is not None:
            self._materialize(x, x_src)
        self._check(x, x_src)
        batched = x.dim() == 3
        if not batched:
            x = x[None]
            x_src = None if x_src is None else _map_source(x_src, lambda t: t[None])
        bsz, nd, _ = x.shape
        ns = nd if x_src is None else _split_source(x_src)[0].shape[1]
        h, dh = self.num_heads, self.head_dim
        graph = as_graph(graph, nd, ns, x.device, batch=bsz)
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
        res = (graph_attention_with_weights if need_weights else graph_attention)(
            q,
            k,
            v,
            graph,
            attn_bias=attn_bias,
            edge_features=edge_features,
            edge_values=edge_features,
            dropout_p=self.dropout if self.training else 0.0,
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
        if not batched and res.attention.batched:  # (a per-sample graph's are unbatched)
            res.attention.values = res.attention.values[0]
            res.attention.batched = False
        return AttentionOutput(out, res.attention, res.backend)

    def forward_with_weights(
        self, x: Tensor | tuple[Tensor, Tensor] | Data, graph: GraphLike = None, **kwargs: Any
    ) -> AttentionOutput:
        """:meth:`forward`, also returning the attention weights and the backend that ran.

        Takes :meth:`forward`'s arguments (``x_src``, ``x_value``, ``edge_attr``,
        ``key_padding_mask``, ``attn_bias``, ``rotary``). As timm's ``forward_intermediates``,
        it calls the module's code directly: forward hooks do not run.

        Shapes:
            - x: as :meth:`forward`; ``out`` ``([B,] Nd, C)``; ``attention`` per edge
              ``([B,] E, H)`` or dense ``([B,] H, Nd, Ns)`` (see
              :class:`~graphattn.AttentionWeights`).

        Example:
            >>> import torch
            >>> from graphattn import Graph, GraphAttention
            >>> attn = GraphAttention(32, 4)
            >>> res = attn.forward_with_weights(torch.randn(10, 32), Graph.window(10, 1))
            >>> res.out.shape, res.attention.to_dense().shape  # weights (H, Nd, Ns)
            (torch.Size([10, 32]), torch.Size([4, 10, 10]))
        """
        return GraphAttention.forward(self, x, graph, need_weights=WITH_WEIGHTS, **kwargs)

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
        if isinstance(self.in_channels, int):  # the widths, once lazy ones are shaped
            parts.append(f"in_channels={self.qdim}")
        elif self.in_channels is not None:
            parts.append(f"in_channels=({self.kdim}, {self.qdim})")
        elif not self._packed:
            parts += [f"kdim={self.kdim}", f"vdim={self.vdim}"]
        if self.edge_dim is not None:
            parts.append(f"edge_dim={self.edge_dim}")
        if not self.batch_first:
            parts.append("batch_first=False")
        if self.score is not None and not isinstance(self.score, nn.Module):
            parts.append(f"score={self.score!r}")
        parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


def _input_widths(
    embed_dim: int,
    in_channels: int | tuple[int, int] | None,
    kdim: int | None,
    vdim: int | None,
) -> tuple[int, int, int]:
    """The input widths of queries, keys and values (``-1``: lazy), from ``in_channels``
    (PyG's name) or ``kdim`` / ``vdim`` (``nn.MultiheadAttention``'s)."""
    if in_channels is None:
        return embed_dim, embed_dim if kdim is None else kdim, embed_dim if vdim is None else vdim
    if kdim is not None or vdim is not None:
        raise ValueError(
            f"give in_channels (PyG's input widths) or kdim/vdim (nn.MultiheadAttention's), "
            f"not both; got in_channels={in_channels!r}, kdim={kdim}, vdim={vdim}"
        )
    if isinstance(in_channels, tuple | list):
        if len(in_channels) != 2:
            raise ValueError(
                f"in_channels must be an int or a (src, dst) pair, got {in_channels!r}"
            )
        f_src = _check_width("in_channels[0]", in_channels[0])
        f_dst = _check_width("in_channels[1]", in_channels[1])
        return f_dst, f_src, f_src
    f = _check_width("in_channels", in_channels)
    return f, f, f


def _check_width(name: str, value: Any) -> int:
    """A positive input width, or ``-1`` (lazy)."""
    if isinstance(value, int) and not isinstance(value, bool) and value == -1:
        return -1
    return check_int(name, value, hint=" or -1 (lazy: shaped by the first input)")


def _weight(rows: int, cols: int, factory: dict[str, Any]) -> nn.Parameter:
    """An empty ``(rows, cols)`` projection weight; unshaped (lazy) when ``cols == -1``."""
    if cols == -1:
        return UninitializedParameter(**factory)
    return nn.Parameter(torch.empty(rows, cols, **factory))


def _in_width(weight: Tensor) -> int:
    """The input width of a projection weight ``(out, in)``; ``-1`` while it is lazy."""
    return -1 if _lazy(weight) else weight.shape[1]


def _target_and_source(x: object, x_src: object) -> tuple[object, object]:
    """``(x, x_src)`` with PyG's pair ``x = (x_src, x_dst)`` taken apart."""
    if not isinstance(x, tuple | list):
        return x, x_src
    if len(x) != 2:
        raise TypeError(
            f"x must be a tensor or PyG's (x_src, x_dst) pair, got a {type(x).__name__} of {len(x)}"
        )
    if x_src is not None:
        raise TypeError(
            "x is PyG's (x_src, x_dst) pair and x_src= was given too: give the sources once "
            "(keys as x_src=, with separate values as x_value=)"
        )
    return x[1], x[0]


def _source(x_src: object, x_value: object) -> object:
    """The module's source input: ``x_src``, or ``(x_src, x_value)`` when values are given
    apart. A tuple ``x_src`` is refused, naming both readings."""
    if isinstance(x_src, tuple | list):
        raise TypeError(
            f"x_src must be a tensor, got a {type(x_src).__name__} of {len(x_src)}: a pair is "
            "ambiguous (PyG reads (x_src, x_dst), nn.MultiheadAttention (key, value)). Pass "
            "PyG's pair as x=(x_src, x_dst), or the keys as x_src= and separate values as "
            "x_value="
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


def _lazy(t: Tensor | None) -> bool:
    """Whether ``t`` is a lazy parameter still waiting for its shape (``torch.compile`` traces
    this ``isinstance``, not ``torch.nn.parameter.is_lazy``)."""
    return isinstance(t, UninitializedParameter)

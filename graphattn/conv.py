"""Graph-attention layers with PyG's constructor arguments: :class:`GATConv`,
:class:`GATv2Conv` and :class:`TransformerConv`.

Each gives the numbers of the PyG layer of the same name (same parameters, same names, so
``load_state_dict`` of a PyG layer's state works; :func:`graphattn.from_pyg` converts one),
but runs on graphattn's operator: the score function (:mod:`graphattn.scores`) is computed
on the edge backend without storing anything of size ``E x C`` (GAT needs two scalars per
node and head), or on the dense backend when the graph is complete.

Differences from PyG, all deliberate:

- attention weights come back before dropout (PyG's ``GATConv`` returns them after);
- ``edge_attr`` given to a layer built without ``edge_dim`` is refused (``GATConv``
  ignores it silently);
- ``forward_with_weights`` returns the weights as a :class:`ConvOutput` (``out``, per-edge
  ``attention``, and the ``edge_index`` they align with, self-loops included); with
  ``return_attention_weights=True`` PyG's ``(out, (edge_index, alpha))``, whose first part is
  the edge list also when the graph came as a sparse ``adj_t`` (PyG gives that matrix back,
  with ``alpha`` as its values).

PyG's inputs work as in PyG: ``(x_src, x_dst)`` pairs, a sparse ``adj_t`` (torch COO, CSR or
CSC, ``(N_dst, N_src)``, rows = targets; see :meth:`graphattn.Graph.from_sparse`) or a
:class:`~graphattn.Graph` in place of ``edge_index``, and ``conv(data)`` for a PyG ``Data``
or ``Batch`` (``data.x``, ``data.edge_index`` or ``data.adj_t``, and ``data.edge_attr`` when
the layer has ``edge_dim``).

The self-loop handling (remove existing loops, add one per node with ``fill_value`` for
their edge features) is PyG's; for a given ``edge_index`` tensor it is computed once and
reused while the same, unmodified tensor is passed again.

Axis legend: ``Nd`` targets, ``Ns`` sources, ``E`` edges, ``H`` heads, ``C`` channels per
head, ``F`` input features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from ._checks import WITH_WEIGHTS, check_int, weights_flag
from ._pyg import data_inputs, is_pyg_data
from ._sparse import linear as _linear
from .functional import AttentionOutput, BackendName, graph_attention, graph_attention_with_weights
from .graph import Graph, GraphLike, as_graph
from .scores import GAT, GATv2, _check_slope
from .weights import AttentionWeights

if TYPE_CHECKING:  # named in annotations only
    from torch_geometric.data import Data

__all__ = ["ConvOutput", "GATConv", "GATv2Conv", "TransformerConv", "add_self_loops"]

#: node features: one tensor, or PyG's ``(x_src, x_dst)`` pair for bipartite graphs
NodeInput = Tensor | tuple[Tensor, Tensor]
FillValue = float | Tensor | str | None
_REDUCE = {"add": "sum", "sum": "sum", "mean": "mean", "min": "amin", "max": "amax", "mul": "prod"}


@dataclass
class ConvOutput:
    """What a conv layer's ``forward_with_weights`` returns.

    Attributes:
        out: node outputs ``(Nd, out_features)``.
        attention: per-edge weights ``(E, H)`` (before dropout), aligned with
            :attr:`edge_index`.
        backend: the backend that ran.
    """

    out: Tensor
    attention: AttentionWeights
    backend: str

    @property
    def edge_index(self) -> Tensor:
        """The edge list ``(2, E)`` the weights align with (with the layer's self-loops)."""
        return self.attention.graph.edge_index()


# ---------------------------------------------------------------------------- self-loops
def add_self_loops(
    edge_index: Tensor,
    edge_attr: Tensor | None,
    num_nodes: int,
    fill_value: FillValue = "mean",
) -> tuple[Tensor, Tensor | None]:
    """PyG's ``remove_self_loops`` then ``add_self_loops``: drop every edge ``i -> i`` and
    append one loop per node ``0..num_nodes-1``, whose edge features are ``fill_value``: a
    number or tensor, or the reduction (``"add"``, ``"mean"``, ``"min"``, ``"max"``,
    ``"mul"``) of the features of the node's in-edges (0 without in-edges); ``None`` gives
    ones.

    Shapes:
        - edge_index: ``(2, E)``; edge_attr: ``(E, *)``
        - returns ``(2, E' + num_nodes)`` and ``(E' + num_nodes, *)``

    Example:
        >>> import torch
        >>> ei = torch.tensor([[0, 1, 1], [1, 1, 0]])
        >>> add_self_loops(ei, None, 2)[0]
        tensor([[0, 1, 0, 1],
                [1, 0, 0, 1]])
    """
    keep = edge_index[0] != edge_index[1]  # (E,)
    kept = edge_index[:, keep]
    loops = torch.arange(num_nodes, device=edge_index.device).expand(2, num_nodes)
    out_index = torch.cat([kept, loops], dim=1)
    if edge_attr is None:
        return out_index, None
    attr = edge_attr[keep]
    return out_index, torch.cat([attr, _loop_attr(attr, kept[1], num_nodes, fill_value)])


def _loop_attr(attr: Tensor, dst: Tensor, num_nodes: int, fill_value: FillValue) -> Tensor:
    size = (num_nodes, *attr.shape[1:])
    if fill_value is None:
        return attr.new_ones(size)
    if isinstance(fill_value, int | float) and not isinstance(fill_value, bool):
        return attr.new_full(size, float(fill_value))
    if isinstance(fill_value, Tensor):
        value = fill_value.to(attr.device, attr.dtype)
        if value.dim() != attr.dim():
            value = value.unsqueeze(0)
        return value.expand(size).contiguous()
    if isinstance(fill_value, str) and fill_value in _REDUCE:
        inside = dst < num_nodes  # (E,)
        idx = dst[inside].view(-1, *([1] * (attr.dim() - 1))).expand(-1, *attr.shape[1:])
        return attr.new_zeros(size).scatter_reduce(
            0, idx, attr[inside], _REDUCE[fill_value], include_self=False
        )
    raise ValueError(
        f"fill_value must be a number, a tensor, None or one of {sorted(_REDUCE)}, "
        f"got {fill_value!r}"
    )


@dataclass(frozen=True)
class _Prepared:
    """A layer's graph: ``graph`` (with the added self-loops), the positions ``kept`` of the
    input edges it keeps, in order (``None``: all of them), and the input's edge count.

    Under ``torch.compile`` / ``torch.export`` the input's own loops are not removed (that
    would make the edge count depend on the data): ``graph`` is every input edge, then the
    added loops, and ``drop`` ``(E + N,)`` marks the input loops, which a ``-inf`` score bias
    removes (:meth:`bias`): the same outputs, with zero weights on those edges."""

    graph: Graph
    kept: Tensor | None
    num_input_edges: int
    drop: Tensor | None = None

    def bias(self, heads: int, dtype: torch.dtype) -> Tensor | None:
        """The per-edge score bias ``(E', H)`` that removes the dropped edges, or ``None``."""
        if self.drop is None:
            return None
        zero = torch.zeros((), dtype=dtype, device=self.drop.device)
        bias = torch.where(self.drop, torch.full_like(zero, -math.inf), zero)  # (E',)
        return bias[:, None].expand(-1, heads)  # (E', H)


class _GraphCache:
    """The graph (with self-loops) of the last ``edge_index`` tensor, reused while the same
    tensor object comes back unmodified (its version counter unchanged)."""

    def __init__(self) -> None:
        self._index: Tensor | None = None
        self._key: tuple[Any, ...] | None = None
        self._value: _Prepared | None = None

    def get(self, edge_index: Tensor, key: tuple[Any, ...]) -> _Prepared | None:
        if torch.compiler.is_compiling():  # compiled code builds the graph in the graph
            return None  # (a tensor's version counter cannot be traced)
        if self._index is edge_index and self._key == (edge_index._version, *key):
            return self._value
        return None

    def put(self, edge_index: Tensor, key: tuple[Any, ...], value: _Prepared) -> None:
        if torch.compiler.is_compiling():
            return
        self._index, self._key, self._value = edge_index, (edge_index._version, *key), value

    def __deepcopy__(self, memo: dict) -> _GraphCache:
        return _GraphCache()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def _graph_of(
    cache: _GraphCache,
    edge_index: GraphLike,
    num_src: int,
    num_dst: int,
    self_loops: bool,
) -> _Prepared:
    """The graph over ``num_dst x num_src`` nodes, with PyG's self-loops when ``self_loops``.

    ``edge_index`` is anything :func:`~graphattn.graph.as_graph` reads; a tensor (an edge
    list or a torch sparse ``adj_t``) is converted once and reused while it comes back."""
    if edge_index is None:
        raise TypeError("edge_index is missing: call conv(x, edge_index) or conv(data)")
    if not isinstance(edge_index, Tensor | Graph):  # a PyG Data or a SparseTensor
        edge_index = as_graph(edge_index, num_dst, num_src, name="edge_index")
    if isinstance(edge_index, Graph):
        as_graph(edge_index, num_dst, num_src, name="edge_index")  # checks the sizes
        if not self_loops:
            return _Prepared(edge_index, None, edge_index.num_edges)
        edge_index = edge_index.edge_index()
    key = (num_src, num_dst, self_loops, edge_index.device)
    hit = cache.get(edge_index, key)
    if hit is not None:
        return hit
    graph = as_graph(edge_index, num_dst, num_src, name="edge_index")  # checks the indices
    if self_loops and torch.compiler.is_compiling():  # no data-dependent edge count
        ei = graph.edge_index()
        n = min(num_src, num_dst)
        loops = torch.arange(n, device=ei.device).expand(2, n)  # (2, N)
        drop = torch.cat([ei[0] == ei[1], ei.new_zeros(n, dtype=torch.bool)])  # (E + N,)
        full = Graph.from_edge_index(torch.cat([ei, loops], dim=1), num_dst, num_src)
        return _Prepared(full, None, ei.shape[1], drop)
    if self_loops:
        ei = graph.edge_index()
        kept = (ei[0] != ei[1]).nonzero().flatten()  # (E',)
        loops, _ = add_self_loops(ei, None, min(num_src, num_dst))
        value = _Prepared(Graph.from_edge_index(loops, num_dst, num_src), kept, ei.shape[1])
    else:
        value = _Prepared(graph, None, graph.num_edges)
    cache.put(edge_index, key, value)
    return value


def _layer_inputs(
    x: NodeInput | Data, edge_index: GraphLike, edge_attr: Tensor | None, takes_edge_attr: bool
) -> tuple[NodeInput, GraphLike, Tensor | None]:
    """``(x, edge_index, edge_attr)`` of a conv call, read from a PyG ``Data`` given as
    ``x`` (see :func:`graphattn._pyg.data_inputs`)."""
    if is_pyg_data(x):
        return data_inputs(x, edge_index, edge_attr, takes_edge_attr, "edge_index")
    return x, edge_index, edge_attr


def _split_input(x: NodeInput, name: str = "x") -> tuple[Tensor, Tensor]:
    """``x`` or ``(x_src, x_dst)`` -> ``(x_src, x_dst)``, both ``(N, F)``."""
    if isinstance(x, Tensor):
        pair = (x, x)
    elif isinstance(x, tuple | list) and len(x) == 2:
        pair = (x[0], x[1])
    else:
        raise TypeError(
            f"{name} must be a tensor or an (x_src, x_dst) pair, got {type(x).__name__}"
        )
    for part, t in zip(("x_src", "x_dst"), pair, strict=True):
        if not isinstance(t, Tensor):
            raise TypeError(
                f"{part} must be a tensor, got {type(t).__name__} (a missing x_dst is not "
                f"supported)"
            )
        if t.dim() != 2:
            raise ValueError(f"{part} must have shape (N, F), got {tuple(t.shape)}")
    return pair


def _check_channels(name: str, value: Any) -> int:
    return check_int(name, value, hint=" (-1, lazy, is for in_channels only)")


def _check_in(name: str, value: Any) -> int:
    """An input width: a positive int, or ``-1`` (lazy: shaped by the first input)."""
    if value == -1 and isinstance(value, int) and not isinstance(value, bool):
        return -1
    return check_int(name, value, hint=" or -1 (lazy)")


def _in_pair(in_channels: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(in_channels, tuple | list):
        if len(in_channels) != 2:
            raise ValueError(f"in_channels must be an int or a pair, got {in_channels!r}")
        return _check_in("in_channels[0]", in_channels[0]), _check_in(
            "in_channels[1]", in_channels[1]
        )
    c = _check_in("in_channels", in_channels)
    return c, c


class _LazyLinear(nn.LazyLinear):
    """``nn.LazyLinear`` initialised, once its first input shapes it, with Glorot weights
    and zero bias (PyG's ``Linear(-1, out, weight_initializer="glorot")``); it becomes an
    ``nn.Linear`` then, as every torch lazy module does."""

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.in_features != 0:
            _reset_linear(self, glorot=True)


def _make_linear(
    f_in: int, f_out: int, bias: bool, factory: dict[str, Any], glorot: bool = False
) -> nn.Linear:
    """``nn.Linear(f_in, f_out)``, or a lazy one (shaped by its first input) for
    ``f_in=-1``; ``glorot``: the lazy one's initialisation (as GAT's projections)."""
    if f_in != -1:
        return nn.Linear(f_in, f_out, bias=bias, **factory)
    if glorot:
        return _LazyLinear(f_out, bias=bias, **factory)
    return nn.LazyLinear(f_out, bias=bias, **factory)


def _lazy(t: Tensor | None) -> bool:
    return isinstance(t, UninitializedParameter)


def _glorot(t: Tensor | None) -> None:
    if t is not None and not _lazy(t):
        bound = math.sqrt(6.0 / (t.shape[-2] + t.shape[-1]))
        nn.init.uniform_(t, -bound, bound)


def _reset_linear(lin: nn.Linear | None, glorot: bool) -> None:
    """Glorot weight and zero bias (``glorot``), else ``nn.Linear``'s initialisation; a
    lazy projection is left until its first input shapes it."""
    if lin is None or _lazy(lin.weight):
        return
    if not glorot:
        lin.reset_parameters()
        return
    _glorot(lin.weight)
    if lin.bias is not None:
        nn.init.zeros_(lin.bias)


def _heads_out(out: Tensor, concat: bool) -> Tensor:
    """``(H, Nd, C)`` -> ``(Nd, H * C)`` (concat) or ``(Nd, C)`` (mean over heads)."""
    out = out.permute(1, 0, 2)  # (Nd, H, C)
    return out.reshape(out.shape[0], -1) if concat else out.mean(1)


def _weights_request(
    layer: nn.Module,
    need_weights: bool,
    return_attention: bool | None,
    return_attention_weights: bool | None,
) -> tuple[bool, bool]:
    """Whether a conv call wants the weights, and whether in PyG's ``(out, (edge_index,
    alpha))`` form (``return_attention_weights``); ``need_weights=True`` and its older name
    ``return_attention`` are deprecated for ``forward_with_weights``."""
    name = type(layer).__name__
    need_weights = weights_flag(
        need_weights, return_attention, f"{name}.forward", f"{name}.forward_with_weights"
    )
    pyg = bool(return_attention_weights)
    return need_weights or pyg, pyg


def _finish(
    res: Tensor | AttentionOutput, out: Tensor, want: bool, pyg: bool = False
) -> Tensor | ConvOutput | tuple[Tensor, tuple[Tensor, Tensor]]:
    """The layer's output; with weights a :class:`ConvOutput`, or PyG's
    ``(out, (edge_index, alpha))`` for ``return_attention_weights=True``."""
    if not want:
        return out
    result = ConvOutput(out, res.attention, res.backend)
    return (out, (result.edge_index, result.attention.values)) if pyg else result


class _AttentionConv(nn.Module):
    """What the three layers share: sizes, dropout, backend, the self-loop cache."""

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        heads: int,
        concat: bool,
        dropout: float,
        backend: BackendName,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = _check_channels("out_channels", out_channels)
        self.heads = _check_channels("heads", heads)
        self.concat = bool(concat)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self.backend = backend
        self._graphs = _GraphCache()

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, graph: Graph, want: bool, **kw: Any):
        """``graph_attention`` on ``(N, H, C)`` node tensors; returns the result and the
        output ``(H, Nd, C)``."""
        res = (graph_attention_with_weights if want else graph_attention)(
            q.permute(1, 0, 2),
            k.permute(1, 0, 2),
            v.permute(1, 0, 2),
            graph,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend,
            **kw,
        )
        return res, (res.out if want else res)

    def forward_with_weights(
        self, x: NodeInput | Data, edge_index: GraphLike = None, edge_attr: Tensor | None = None
    ) -> ConvOutput:
        """``forward``, also returning the per-edge attention weights (before dropout),
        aligned with the output's ``edge_index`` (self-loops included).

        Shapes:
            - x: ``(N, in_channels)`` or a pair; ``out`` ``(Nd, H * C)`` or ``(Nd, C)``;
              ``attention.values`` ``(E', H)`` with ``E'`` edges after the self-loops.
        """
        return type(self).forward(self, x, edge_index, edge_attr, need_weights=WITH_WEIGHTS)

    def _loop_options(
        self,
        negative_slope: float,
        add_self_loops: bool,
        edge_dim: int | None,
        fill_value: FillValue,
        residual: bool,
    ) -> None:
        """The options GATConv and GATv2Conv share."""
        self.negative_slope = _check_slope(negative_slope)
        self.add_self_loops = bool(add_self_loops)
        self.edge_dim = edge_dim
        self.fill_value = fill_value
        self.residual = bool(residual)

    def _output_params(self, f_dst: int, bias: bool, factory: dict[str, Any]) -> None:
        """The residual projection of the targets' input and the output bias."""
        total = self.out_channels * (self.heads if self.concat else 1)
        self.res = (
            _make_linear(f_dst, total, False, factory, glorot=True) if self.residual else None
        )
        self.bias = nn.Parameter(torch.empty(total, **factory)) if bias else None

    def _finish_output(self, out: Tensor, x_dst: Tensor) -> Tensor:
        """Add the residual projection and the bias to the ``(Nd, out)`` output."""
        if self.res is not None:
            out = out + _linear(self.res, x_dst)
        if self.bias is not None:
            out = out + self.bias
        return out

    def _edge_input(self, edge_attr: Tensor | None) -> bool:
        """Whether edge features enter the score; refuses a mismatch with ``edge_dim``."""
        lin_edge = getattr(self, "lin_edge", None)
        if edge_attr is not None and lin_edge is None:
            raise ValueError("edge_attr was given but this layer has edge_dim=None")
        if edge_attr is None and lin_edge is not None:
            raise ValueError("this layer was built with edge_dim; pass edge_attr")
        return edge_attr is not None

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, heads={self.heads}, concat={self.concat}, "
            f"dropout={self.dropout}, backend={self.backend!r}"
        )


# ---------------------------------------------------------------------------- GAT
class GATConv(_AttentionConv):
    """GAT (Velickovic et al., 2018) with the arguments and numbers of PyG's ``GATConv``::

        x'_i = sum_j alpha_ij W x_j (+ residual) (+ bias),
        alpha_ij = softmax_j(LeakyReLU(a_dst . W x_i + a_src . W x_j [+ a_edge . W_e e_ij]))

    over the in-edges of ``i`` (plus a self-loop per node by default). Runs the
    :class:`~graphattn.scores.GAT` score: two scalars per node and head on the edge backend,
    a broadcast on the dense backend for complete graphs.

    Args:
        in_channels: input features ``F``, or ``(F_src, F_dst)`` for separate source and
            target projections (bipartite graphs).
        out_channels: channels per head ``C``.
        heads: attention heads ``H``.
        concat: concatenate the heads (``H * C`` outputs) or average them (``C``).
        negative_slope: LeakyReLU slope.
        dropout: dropout on the attention weights in training.
        add_self_loops: remove existing self-loops and add one per node.
        edge_dim: edge feature size (``None``: no edge features).
        fill_value: edge features of the added self-loops (see :func:`add_self_loops`).
        bias: add a learned bias to the output.
        residual: add a linear projection of the target input to the output.
        backend: ``"auto"``, ``"dense"`` or ``"edges"``.

    Shapes:
        - x: ``(N, F)`` or ``((Ns, F_src), (Nd, F_dst))``, or a PyG ``Data`` / ``Batch`` in
          place of all three inputs; edge_index: ``(2, E)``, a sparse ``adj_t``
          ``(Nd, Ns)`` or a :class:`~graphattn.Graph`; edge_attr: ``(E, edge_dim)``
        - returns ``(Nd, H * C)`` (concat) or ``(Nd, C)``

    Example:
        >>> import torch
        >>> conv = GATConv(16, 8, heads=4)
        >>> conv(torch.randn(10, 16), torch.tensor([[0, 1, 2], [1, 2, 0]])).shape
        torch.Size([10, 32])
    """

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        add_self_loops: bool = True,
        edge_dim: int | None = None,
        fill_value: FillValue = "mean",
        bias: bool = True,
        residual: bool = False,
        *,
        backend: BackendName = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, heads, concat, dropout, backend)
        factory = {"device": device, "dtype": dtype}
        self._loop_options(negative_slope, add_self_loops, edge_dim, fill_value, residual)
        self.score = GAT(self.negative_slope)
        h, c = self.heads, self.out_channels
        f_src, f_dst = _in_pair(in_channels)
        self.lin = self.lin_src = self.lin_dst = None
        if isinstance(in_channels, int):
            self.lin = _make_linear(f_src, h * c, False, factory, glorot=True)
        else:
            self.lin_src = _make_linear(f_src, h * c, False, factory, glorot=True)
            self.lin_dst = _make_linear(f_dst, h * c, False, factory, glorot=True)
        self.att_src = nn.Parameter(torch.empty(1, h, c, **factory))
        self.att_dst = nn.Parameter(torch.empty(1, h, c, **factory))
        if edge_dim is not None:
            self.lin_edge = nn.Linear(
                _check_channels("edge_dim", edge_dim), h * c, False, **factory
            )
            self.att_edge = nn.Parameter(torch.empty(1, h, c, **factory))
        else:
            self.lin_edge = None
            self.register_parameter("att_edge", None)
        self._output_params(f_dst, bias, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot weights and attention vectors, zero bias (as PyG)."""
        for lin in (self.lin, self.lin_src, self.lin_dst, self.lin_edge, self.res):
            if lin is not None:
                _glorot(lin.weight)  # lazy ones: when shaped
        for att in (self.att_src, self.att_dst, self.att_edge):
            _glorot(att)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(
        self,
        x: NodeInput | Data,
        edge_index: GraphLike = None,
        edge_attr: Tensor | None = None,
        *,
        need_weights: bool = False,
        return_attention: bool | None = None,
        return_attention_weights: bool | None = None,
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        """Attend over the in-edges (and self-loops) of every target node
        (the weights: ``forward_with_weights``; ``need_weights=True`` and
        ``return_attention=True`` are deprecated for it).

        Returns:
            ``(Nd, H * C)`` or ``(Nd, C)``; with PyG's ``return_attention_weights=True``, PyG's
            ``(out, (edge_index, alpha))``, kept so that PyG code runs unchanged.
        """
        need_weights, pyg = _weights_request(
            self, need_weights, return_attention, return_attention_weights
        )
        x, edge_index, edge_attr = _layer_inputs(
            x, edge_index, edge_attr, self.lin_edge is not None
        )
        x_src, x_dst = _split_input(x)
        h, c = self.heads, self.out_channels
        if self.lin is not None:
            hs = _linear(self.lin, x_src).view(-1, h, c)  # (Ns, H, C)
            hd = hs if x_dst is x_src else _linear(self.lin, x_dst).view(-1, h, c)  # (Nd, H, C)
        else:
            hs = _linear(self.lin_src, x_src).view(-1, h, c)
            hd = _linear(self.lin_dst, x_dst).view(-1, h, c)
        a_src = (hs * self.att_src).sum(-1, keepdim=True)  # (Ns, H, 1)
        a_dst = (hd * self.att_dst).sum(-1, keepdim=True)  # (Nd, H, 1)
        prep = _graph_of(self._graphs, edge_index, hs.shape[0], hd.shape[0], self.add_self_loops)
        ef = None
        if self._edge_input(edge_attr):
            edge_attr = _edge_attr(edge_attr, prep, self.fill_value)
            ef = (self.lin_edge(edge_attr).view(-1, h, c) * self.att_edge).sum(-1, keepdim=True)
        res, out = self._attend(
            a_dst,
            a_src,
            hs,
            prep.graph,
            need_weights,
            score=self.score,
            edge_features=ef,
            attn_bias=prep.bias(h, hs.dtype),
        )
        out = self._finish_output(_heads_out(out, self.concat), x_dst)
        return _finish(res, out, need_weights, pyg)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", negative_slope={self.negative_slope}"


def _edge_attr(edge_attr: Tensor, prep: _Prepared, fill_value: FillValue) -> Tensor:
    """Edge features aligned with ``graph``: the kept edges' features, then the self-loops'
    (``kept`` is ``None`` when the graph has no added loops)."""
    graph, kept, num_input_edges = prep.graph, prep.kept, prep.num_input_edges
    if not isinstance(edge_attr, Tensor):
        raise TypeError(f"edge_attr must be a tensor, got {type(edge_attr).__name__}")
    if edge_attr.dim() == 1:
        edge_attr = edge_attr.view(-1, 1)
    if kept is None and prep.drop is None:
        if edge_attr.shape[0] != graph.num_edges:
            raise ValueError(
                f"edge_attr has {edge_attr.shape[0]} rows but the graph has {graph.num_edges} edges"
            )
        return edge_attr
    if edge_attr.shape[0] != num_input_edges:
        raise ValueError(
            f"edge_attr has {edge_attr.shape[0]} rows but edge_index has {num_input_edges} edges"
        )
    if prep.drop is not None:  # traced: every input edge, then the loops (see _Prepared)
        keep = ~prep.drop[:num_input_edges]  # (E,)
        dst = graph.edge_index()[1, :num_input_edges]
        n_loops = graph.num_edges - num_input_edges
        return torch.cat([edge_attr, _masked_loop_attr(edge_attr, dst, keep, n_loops, fill_value)])
    n_loops = graph.num_edges - kept.numel()
    attr = edge_attr[kept]
    dst = graph.edge_index()[1, : kept.numel()]
    return torch.cat([attr, _loop_attr(attr, dst, n_loops, fill_value)])


def _masked_loop_attr(
    attr: Tensor, dst: Tensor, keep: Tensor, num_nodes: int, fill_value: FillValue
) -> Tensor:
    """:func:`_loop_attr` over the edges where ``keep`` is True, with no data-dependent
    selection (for traced code): a reduction sees the others as its identity, and a node
    whose in-edges are all left out gets 0, as in eager.

    Shapes:
        - attr: ``(E, *)``; dst, keep: ``(E,)``; returns ``(num_nodes, *)``
    """
    if not (isinstance(fill_value, str) and fill_value in _REDUCE):
        return _loop_attr(attr, dst, num_nodes, fill_value)
    keep = keep & (dst < num_nodes)  # (E,)
    idx = dst.clamp(max=num_nodes - 1)  # (E,): left-out edges are masked below
    shape = (-1, *([1] * (attr.dim() - 1)))
    count = attr.new_zeros(num_nodes).index_add(0, idx, keep.to(attr.dtype))  # (N,)
    reduce = _REDUCE[fill_value]
    if reduce in ("sum", "mean"):
        total = attr.new_zeros(num_nodes, *attr.shape[1:])
        total = total.index_add(0, idx, attr * keep.view(shape).to(attr.dtype))
        return total / count.clamp(min=1).view(shape) if reduce == "mean" else total
    identity = {"amin": math.inf, "amax": -math.inf, "prod": 1.0}[reduce]
    vals = torch.where(keep.view(shape), attr, torch.full_like(attr, identity))  # (E, *)
    idx = idx.view(shape).expand_as(attr)
    out = attr.new_zeros(num_nodes, *attr.shape[1:]).scatter_reduce(
        0, idx, vals, reduce, include_self=False
    )
    return torch.where(count.view(shape) > 0, out, torch.zeros_like(out))


# ---------------------------------------------------------------------------- GATv2
class GATv2Conv(_AttentionConv):
    """GATv2 (Brody et al., 2022) with the arguments and numbers of PyG's ``GATv2Conv``::

        x'_i = sum_j alpha_ij W_src x_j (+ residual) (+ bias),
        alpha_ij = softmax_j(a . LeakyReLU(W_dst x_i + W_src x_j [+ W_e e_ij]))

    Runs the :class:`~graphattn.scores.GATv2` score on the edge backend, chunk by chunk with
    recomputation in backward.

    Args:
        in_channels: input features, or ``(F_src, F_dst)``.
        out_channels: channels per head ``C``.
        heads: attention heads ``H``.
        concat: concatenate (``H * C``) or average (``C``) the heads.
        negative_slope: LeakyReLU slope.
        dropout: dropout on the attention weights in training.
        add_self_loops: remove existing self-loops and add one per node.
        edge_dim: edge feature size (``None``: none).
        fill_value: edge features of the added self-loops.
        bias: biases in the projections and on the output.
        share_weights: one projection for sources and targets.
        residual: add a linear projection of the target input to the output.
        backend: ``"auto"`` or ``"edges"`` (GATv2 has no dense form).

    Shapes:
        - x: ``(N, F)`` or ``((Ns, F_src), (Nd, F_dst))``, or a PyG ``Data`` / ``Batch``;
          edge_index: as :class:`GATConv`'s; edge_attr: ``(E, edge_dim)``
        - returns ``(Nd, H * C)`` or ``(Nd, C)``
    """

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        add_self_loops: bool = True,
        edge_dim: int | None = None,
        fill_value: FillValue = "mean",
        bias: bool = True,
        share_weights: bool = False,
        residual: bool = False,
        *,
        backend: BackendName = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, heads, concat, dropout, backend)
        factory = {"device": device, "dtype": dtype}
        self._loop_options(negative_slope, add_self_loops, edge_dim, fill_value, residual)
        self.share_weights = bool(share_weights)
        h, c = self.heads, self.out_channels
        f_src, f_dst = _in_pair(in_channels)
        self.lin_l = _make_linear(f_src, h * c, bias, factory, glorot=True)
        self.lin_r = (
            self.lin_l if share_weights else _make_linear(f_dst, h * c, bias, factory, True)
        )
        self.att = nn.Parameter(torch.empty(1, h, c, **factory))
        self.lin_edge = (
            nn.Linear(_check_channels("edge_dim", edge_dim), h * c, bias=False, **factory)
            if edge_dim is not None
            else None
        )
        self._output_params(f_dst, bias, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot weights and attention vector, zero biases (as PyG)."""
        for lin in (self.lin_l, self.lin_r, self.lin_edge, self.res):
            _reset_linear(lin, glorot=True)
        _glorot(self.att)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(
        self,
        x: NodeInput | Data,
        edge_index: GraphLike = None,
        edge_attr: Tensor | None = None,
        *,
        need_weights: bool = False,
        return_attention: bool | None = None,
        return_attention_weights: bool | None = None,
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        """Attend over the in-edges (and self-loops) of every target node
        (the weights: ``forward_with_weights``; ``need_weights=True`` and
        ``return_attention=True`` are deprecated for it).

        Returns:
            ``(Nd, H * C)`` or ``(Nd, C)``; with PyG's ``return_attention_weights=True``, PyG's
            ``(out, (edge_index, alpha))``, kept so that PyG code runs unchanged.
        """
        need_weights, pyg = _weights_request(
            self, need_weights, return_attention, return_attention_weights
        )
        x, edge_index, edge_attr = _layer_inputs(
            x, edge_index, edge_attr, self.lin_edge is not None
        )
        x_src, x_dst = _split_input(x)
        h, c = self.heads, self.out_channels
        x_l = _linear(self.lin_l, x_src).view(-1, h, c)  # (Ns, H, C): keys and values
        if self.share_weights and x_dst is x_src:
            x_r = x_l
        else:
            x_r = _linear(self.lin_r, x_dst).view(-1, h, c)  # (Nd, H, C)
        prep = _graph_of(self._graphs, edge_index, x_l.shape[0], x_r.shape[0], self.add_self_loops)
        ef = None
        if self._edge_input(edge_attr):
            edge_attr = _edge_attr(edge_attr, prep, self.fill_value)
            ef = self.lin_edge(edge_attr).view(-1, h, c)  # (E, H, C)
        score = GATv2(self.att, self.negative_slope)
        res, out = self._attend(
            x_r,
            x_l,
            x_l,
            prep.graph,
            need_weights,
            score=score,
            edge_features=ef,
            attn_bias=prep.bias(h, x_l.dtype),
        )
        out = self._finish_output(_heads_out(out, self.concat), x_dst)
        return _finish(res, out, need_weights, pyg)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", share_weights={self.share_weights}"


# ---------------------------------------------------------------------------- Transformer
class TransformerConv(_AttentionConv):
    """The graph transformer of Shi et al. (2021) with the arguments and numbers of PyG's
    ``TransformerConv``::

        x'_i = W_skip x_i + sum_j alpha_ij (W_v x_j + W_e e_ij),
        alpha_ij = softmax_j(<W_q x_i, W_k x_j + W_e e_ij> / sqrt(C))

    with the optional gate ``beta`` between the skip and the aggregate. Runs the dot-product
    score (dense kernel on complete graphs, edge backend otherwise); no self-loops are added.

    Args:
        in_channels: input features, or ``(F_src, F_dst)``.
        out_channels: channels per head ``C``.
        heads: attention heads ``H``.
        concat: concatenate (``H * C``) or average (``C``) the heads.
        beta: gate the skip connection (needs ``root_weight``).
        dropout: dropout on the attention weights in training.
        edge_dim: edge feature size (``None``: none).
        bias: biases in the projections.
        root_weight: add the skip projection ``W_skip x_i``.
        backend: ``"auto"``, ``"dense"`` or ``"edges"``.

    Shapes:
        - x: ``(N, F)`` or ``((Ns, F_src), (Nd, F_dst))``, or a PyG ``Data`` / ``Batch``;
          edge_index: as :class:`GATConv`'s; edge_attr: ``(E, edge_dim)``
        - returns ``(Nd, H * C)`` or ``(Nd, C)``
    """

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        beta: bool = False,
        dropout: float = 0.0,
        edge_dim: int | None = None,
        bias: bool = True,
        root_weight: bool = True,
        *,
        backend: BackendName = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, heads, concat, dropout, backend)
        factory = {"device": device, "dtype": dtype}
        self.beta = bool(beta and root_weight)
        self.root_weight = bool(root_weight)
        self.edge_dim = edge_dim
        h, c = self.heads, self.out_channels
        f_src, f_dst = _in_pair(in_channels)
        self.lin_key = _make_linear(f_src, h * c, bias, factory)
        self.lin_query = _make_linear(f_dst, h * c, bias, factory)
        self.lin_value = _make_linear(f_src, h * c, bias, factory)
        self.lin_edge = (
            nn.Linear(_check_channels("edge_dim", edge_dim), h * c, bias=False, **factory)
            if edge_dim is not None
            else None
        )
        total = c * (h if concat else 1)
        self.lin_skip = _make_linear(f_dst, total, bias, factory) if root_weight else None
        self.lin_beta = nn.Linear(3 * total, 1, bias=False, **factory) if self.beta else None

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation for every projection (as PyG)."""
        for lin in (self.lin_key, self.lin_query, self.lin_value, self.lin_edge):
            _reset_linear(lin, glorot=False)
        for lin in (self.lin_skip, self.lin_beta):
            _reset_linear(lin, glorot=False)

    def forward(
        self,
        x: NodeInput | Data,
        edge_index: GraphLike = None,
        edge_attr: Tensor | None = None,
        *,
        need_weights: bool = False,
        return_attention: bool | None = None,
        return_attention_weights: bool | None = None,
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        """Attend over the in-edges of every target node (``need_weights``: also return
        the weights: ``forward_with_weights``; ``need_weights=True`` and
        ``return_attention=True`` are deprecated for it).

        Returns:
            ``(Nd, H * C)`` or ``(Nd, C)``; with PyG's ``return_attention_weights=True``, PyG's
            ``(out, (edge_index, alpha))``, kept so that PyG code runs unchanged.
        """
        need_weights, pyg = _weights_request(
            self, need_weights, return_attention, return_attention_weights
        )
        x, edge_index, edge_attr = _layer_inputs(
            x, edge_index, edge_attr, self.lin_edge is not None
        )
        x_src, x_dst = _split_input(x)
        h, c = self.heads, self.out_channels
        query = _linear(self.lin_query, x_dst).view(-1, h, c)  # (Nd, H, C)
        key = _linear(self.lin_key, x_src).view(-1, h, c)  # (Ns, H, C)
        value = _linear(self.lin_value, x_src).view(-1, h, c)  # (Ns, H, C)
        prep = _graph_of(self._graphs, edge_index, key.shape[0], query.shape[0], False)
        ef = None
        if self._edge_input(edge_attr):
            ef = self.lin_edge(_edge_attr(edge_attr, prep, None)).view(-1, h, c)  # (E, H, C)
        res, out = self._attend(
            query,
            key,
            value,
            prep.graph,
            need_weights,
            edge_features=ef,
            edge_values=ef,
            scale=1.0 / math.sqrt(c),
        )
        out = _heads_out(out, self.concat)
        if self.lin_skip is not None:
            x_r = _linear(self.lin_skip, x_dst)
            if self.lin_beta is not None:
                gate = self.lin_beta(torch.cat([out, x_r, out - x_r], dim=-1)).sigmoid()
                out = gate * x_r + (1 - gate) * out
            else:
                out = out + x_r
        return _finish(res, out, need_weights, pyg)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", beta={self.beta}, root_weight={self.root_weight}"

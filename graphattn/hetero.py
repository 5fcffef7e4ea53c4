"""Heterogeneous attention with per-type projections: :class:`HGTConv` (Hu et al., 2020).

Every node type has its own key, query and value projections, every edge type (relation)
its own attention and message matrices per head and a prior ``mu`` per head, and every
target type its own output projection with a gated skip. One target attends over the union
of its in-edges of every relation with *one* softmax: the sources of all relations are
concatenated (a node that is the source of two relations appears twice, once per relation,
with that relation's key and value), and one bipartite graph over the concatenated targets
and sources goes through :func:`~graphattn.graph_attention` once.

The numbers are PyG's ``torch_geometric.nn.HGTConv`` (2.8.1), which
:func:`graphattn.from_pyg` converts, down to its conventions:

- ``mu`` *multiplies* the score (``<q, k W_att> * mu / sqrt(D)``); it is folded into the
  keys of its relation, so the operator sees an ordinary dot product;
- targets run ``GELU`` before the output projection; a target with no in-edge aggregates
  zero (so its output is ``out_lin(0)`` mixed with its input by the gate);
- the gate ``sigmoid(skip) * out + (1 - sigmoid(skip)) * x`` applies only when the node
  type's input width equals ``out_channels`` (otherwise the output is ``out_lin``'s alone);
- a node type that is the target of no relation of the metadata is absent from the output
  dictionary (PyG's docstring says ``None``; its code leaves the key out, and so do we).

Axis legend: ``Nd`` targets (all target types concatenated), ``Ns`` sources (one block per
relation), ``N`` nodes of one type, ``E`` edges, ``H`` heads, ``D`` channels per head,
``F`` input features.

Reference: Hu, Dong, Wang and Sun, "Heterogeneous Graph Transformer", WWW 2020
(https://arxiv.org/abs/2003.01332); PyG's ``torch_geometric/nn/conv/hgt_conv.py``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from ._checks import check_int
from ._pyg import is_sparse_adjacency
from .functional import BackendName, graph_attention
from .graph import Graph

__all__ = ["HGTConv", "TypedLinear", "edge_type_key"]

NodeType = str
EdgeType = tuple[str, str, str]
#: ``HeteroData.metadata()``: node types and ``(source, relation, target)`` edge types
Metadata = tuple[list[NodeType], list[EdgeType]]


def edge_type_key(edge_type: EdgeType) -> str:
    """The parameter key of a relation: ``"src__rel__dst"`` (PyG's ``p_rel`` keys)."""
    return "__".join(edge_type)


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(
            f"{kind} names must be non-empty strings without '.' (they name parameters), "
            f"got {name!r}"
        )
    return name


def _check_metadata(metadata: Any) -> tuple[list[NodeType], list[EdgeType]]:
    if not isinstance(metadata, tuple | list) or len(metadata) != 2:
        raise ValueError(
            f"metadata must be (node_types, edge_types) as HeteroData.metadata() gives, "
            f"got {metadata!r}"
        )
    node_types = [_check_name("node type", nt) for nt in metadata[0]]
    edge_types: list[EdgeType] = []
    for et in metadata[1]:
        if not isinstance(et, tuple | list) or len(et) != 3:
            raise ValueError(f"edge types must be (src, rel, dst) triplets, got {et!r}")
        et = (et[0], _check_name("relation", et[1]), et[2])
        for nt in (et[0], et[2]):
            if nt not in node_types:
                raise ValueError(
                    f"edge type {et} names node type {nt!r}, which is not among the "
                    f"metadata's node types {node_types}"
                )
        edge_types.append(et)
    if not node_types:
        raise ValueError("metadata must name at least one node type, got none")
    return node_types, edge_types


def _is_lazy(t: Tensor) -> bool:
    return isinstance(t, UninitializedParameter)


class HGTConv(nn.Module):
    """The Heterogeneous Graph Transformer layer of Hu et al. (2020), with the arguments and
    numbers of PyG's ``HGTConv``. For a target ``i`` of type ``t`` and its in-edges
    ``(j, r, i)`` over every relation ``r`` whose source ``j`` has type ``s``::

        q_i = Q_t x_i,   k_j = K_s x_j,   v_j = V_s x_j                   (per head h)
        alpha_ij = softmax_{(j, r) -> i}(<q_i, k_j W_att[r]> * mu[r] / sqrt(D))
        m_i = sum alpha_ij v_j W_msg[r]                                   (heads concatenated)
        a_i = A_t gelu(m_i)
        x'_i = sigmoid(skip_t) * a_i + (1 - sigmoid(skip_t)) * x_i   (if F_t = out_channels)

    with one softmax per target over all relations together.

    Args:
        in_channels: input features of every node type (an int, or a dict by node type);
            ``-1``: lazy, shaped by the first call.
        out_channels: output features ``H * D`` (divisible by ``heads``).
        metadata: ``HeteroData.metadata()``: node types and ``(src, rel, dst)`` edge types.
        heads: attention heads ``H``.
        backend: the attention backend (``"auto"``, ``"edges"``, ...).
        device: where the parameters live.
        dtype: the parameters' dtype.

    Attributes:
        k_lin, q_lin, v_lin, out_lin: ``nn.ModuleDict`` of ``nn.Linear`` by node type.
        w_att, w_msg: ``nn.ParameterDict`` by ``"src__rel__dst"``, each ``(H, D, D)``, applied
            as ``k @ W`` (row vectors, PyG's ``HeteroLinear``).
        mu: ``nn.ParameterDict`` by ``"src__rel__dst"``, each ``(H,)`` (init 1).
        skip: ``nn.ParameterDict`` by node type, each a scalar (init 1).

    Shapes:
        - x_dict: ``{node type: (N, F)}``; edge_index_dict: ``{(src, rel, dst): (2, E)}``
          (row 0 sources, row 1 targets) or a sparse ``adj_t`` ``(N_dst, N_src)``
        - returns ``{target node type: (N, out_channels)}``

    Example:
        >>> import torch, graphattn
        >>> meta = (["paper", "author"], [("author", "writes", "paper")])
        >>> conv = graphattn.HGTConv({"paper": 8, "author": 4}, 8, meta, heads=2)
        >>> x = {"paper": torch.randn(3, 8), "author": torch.randn(2, 4)}
        >>> out = conv(x, {("author", "writes", "paper"): torch.tensor([[0, 1], [2, 2]])})
        >>> {k: tuple(v.shape) for k, v in out.items()}  # author is the target of nothing
        {'paper': (3, 8)}
    """

    def __init__(
        self,
        in_channels: int | dict[NodeType, int],
        out_channels: int,
        metadata: Metadata,
        heads: int = 1,
        *,
        backend: BackendName = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        node_types, edge_types = _check_metadata(metadata)
        out_channels = check_int("out_channels", out_channels)
        heads = check_int("heads", heads)
        if out_channels % heads != 0:
            raise ValueError(
                f"out_channels (got {out_channels}) must be divisible by heads (got {heads})"
            )
        if not isinstance(in_channels, dict):
            in_channels = {nt: in_channels for nt in node_types}
        missing = [nt for nt in node_types if nt not in in_channels]
        if missing:
            raise ValueError(
                f"in_channels has no width for node types {missing} (got keys {list(in_channels)})"
            )
        self.in_channels = {nt: self._check_in(nt, in_channels[nt]) for nt in node_types}
        self.out_channels = out_channels
        self.heads = heads
        self.node_types = node_types
        self.edge_types = edge_types
        self.dst_node_types = {et[2] for et in edge_types}
        self.backend = backend
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        h, d = heads, out_channels // heads

        def lin(f_in: int, f_out: int) -> nn.Module:
            if f_in == -1:
                return nn.LazyLinear(f_out, **factory)
            return nn.Linear(f_in, f_out, **factory)

        ins = self.in_channels
        self.k_lin = nn.ModuleDict({nt: lin(ins[nt], out_channels) for nt in node_types})
        self.q_lin = nn.ModuleDict({nt: lin(ins[nt], out_channels) for nt in node_types})
        self.v_lin = nn.ModuleDict({nt: lin(ins[nt], out_channels) for nt in node_types})
        self.out_lin = nn.ModuleDict({nt: lin(out_channels, out_channels) for nt in node_types})
        keys = [edge_type_key(et) for et in edge_types]
        self.w_att = nn.ParameterDict(
            {k: nn.Parameter(torch.empty(h, d, d, **factory)) for k in keys}
        )
        self.w_msg = nn.ParameterDict(
            {k: nn.Parameter(torch.empty(h, d, d, **factory)) for k in keys}
        )
        self.mu = nn.ParameterDict({k: nn.Parameter(torch.empty(h, **factory)) for k in keys})
        self.skip = nn.ParameterDict(
            {nt: nn.Parameter(torch.empty((), **factory)) for nt in node_types}
        )
        self.reset_parameters()

    @staticmethod
    def _check_in(node_type: NodeType, value: Any) -> int:
        if value == -1 and isinstance(value, int) and not isinstance(value, bool):
            return -1
        return check_int(f"in_channels[{node_type!r}]", value, hint=" or -1 (lazy)")

    def reset_parameters(self) -> None:
        """PyG's initialisation: ``nn.Linear``'s for the projections (a lazy one waits for
        its first input), ``U(-1/sqrt(D), 1/sqrt(D))`` for the relation matrices (PyG's
        ``HeteroLinear``: Kaiming uniform with fan ``D``), ones for ``mu`` and ``skip``."""
        for group in (self.k_lin, self.q_lin, self.v_lin, self.out_lin):
            for lin in group.values():
                if not _is_lazy(lin.weight):
                    lin.reset_parameters()
        bound = 1.0 / math.sqrt(self.out_channels // self.heads)
        for w in (*self.w_att.values(), *self.w_msg.values()):
            nn.init.uniform_(w, -bound, bound)
        for p in (*self.mu.values(), *self.skip.values()):
            nn.init.ones_(p)

    def _check_inputs(
        self, x_dict: dict[NodeType, Tensor], edge_index_dict: dict[EdgeType, Any]
    ) -> None:
        """Every relation known, its node types given, and every given width the layer's."""
        if not isinstance(x_dict, dict) or not isinstance(edge_index_dict, dict):
            raise TypeError(
                f"x_dict and edge_index_dict must be dicts (HeteroData.x_dict, "
                f".edge_index_dict), got {type(x_dict).__name__} and "
                f"{type(edge_index_dict).__name__}"
            )
        for et in edge_index_dict:
            if tuple(et) not in self.edge_types:
                raise ValueError(
                    f"edge_index_dict has edge type {et}, which is not in the layer's "
                    f"metadata {self.edge_types}"
                )
            for nt in (et[0], et[2]):
                if nt not in x_dict:
                    raise ValueError(
                        f"x_dict has no features for node type {nt!r} of edge type {et} "
                        f"(got node types {list(x_dict)})"
                    )
        for nt, x in x_dict.items():
            if nt not in self.k_lin:  # PyG ignores node types it has no projection for
                continue
            if not isinstance(x, Tensor) or x.dim() != 2:
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"x_dict[{nt!r}] must be (N, F), got {shape}")
            weight = self.k_lin[nt].weight
            if not _is_lazy(weight) and x.shape[-1] != weight.shape[1]:
                raise ValueError(
                    f"x_dict[{nt!r}] has {x.shape[-1]} features, the layer expects "
                    f"in_channels[{nt!r}] = {weight.shape[1]}"
                )

    def forward(
        self, x_dict: dict[NodeType, Tensor], edge_index_dict: dict[EdgeType, Any]
    ) -> dict[NodeType, Tensor]:
        """Attend, for every target, over its in-edges of every relation at once.

        Args:
            x_dict: node features by node type (``HeteroData.x_dict``).
            edge_index_dict: edges by ``(src, rel, dst)`` (``HeteroData.edge_index_dict``):
                ``(2, E)`` or a sparse ``adj_t``; relations of the metadata left out carry no
                edges.

        Returns:
            ``{node type: (N, out_channels)}`` for the node types of ``x_dict`` that are the
            target of some relation of the metadata.
        """
        self._check_inputs(x_dict, edge_index_dict)
        h, d = self.heads, self.out_channels // self.heads
        targets = [nt for nt in self.node_types if nt in self.dst_node_types and nt in x_dict]
        # queries of every target type, concatenated
        dst_offset: dict[NodeType, int] = {}
        queries: list[Tensor] = []
        nd = 0
        for nt in targets:
            dst_offset[nt] = nd
            nd += x_dict[nt].shape[0]
            queries.append(self.q_lin[nt](x_dict[nt]).view(-1, h, d))  # (N, H, D)
        # one block of sources per relation: keys and values through its matrices
        kv_cache: dict[NodeType, tuple[Tensor, Tensor]] = {}
        keys: list[Tensor] = []
        values: list[Tensor] = []
        edges: list[Tensor] = []
        ns = 0
        for et, adjacency in edge_index_dict.items():
            src, _, dst = et = tuple(et)
            if src not in kv_cache:
                k = self.k_lin[src](x_dict[src]).view(-1, h, d)  # (N, H, D)
                v = self.v_lin[src](x_dict[src]).view(-1, h, d)  # (N, H, D)
                kv_cache[src] = (k, v)
            k, v = kv_cache[src]
            key = edge_type_key(et)
            k = torch.einsum("nhd,hde->nhe", k, self.w_att[key])  # (N, H, D)
            keys.append(k * self.mu[key].view(1, h, 1))  # the prior, folded into the keys
            values.append(torch.einsum("nhd,hde->nhe", v, self.w_msg[key]))  # (N, H, D)
            edge_index = self._edge_index(et, adjacency, x_dict)  # (2, E)
            offset = torch.tensor([[ns], [dst_offset[dst]]], device=edge_index.device)
            edges.append(edge_index + offset)
            ns += k.shape[0]
        q = torch.cat(queries, dim=0) if queries else None  # (Nd, H, D)
        if q is None:
            return {}
        if not edges:
            out = q.new_zeros(nd, h * d)  # nothing arrives: every target aggregates zero
        else:
            graph = Graph.from_edge_index(torch.cat(edges, dim=1), num_dst=nd, num_src=ns)
            out = graph_attention(
                q.permute(1, 0, 2),  # (H, Nd, D)
                torch.cat(keys, dim=0).permute(1, 0, 2),  # (H, Ns, D)
                torch.cat(values, dim=0).permute(1, 0, 2),  # (H, Ns, D)
                graph,
                scale=1.0 / math.sqrt(d),
                backend=self.backend,
            )  # (H, Nd, D)
            out = out.permute(1, 0, 2).reshape(nd, h * d)  # (Nd, H * D)
        result: dict[NodeType, Tensor] = {}
        for nt in targets:
            x = x_dict[nt]
            a = self.out_lin[nt](F.gelu(out[dst_offset[nt] : dst_offset[nt] + x.shape[0]]))
            if x.shape[-1] == self.out_channels:
                gate = self.skip[nt].sigmoid()
                a = gate * a + (1 - gate) * x
            result[nt] = a  # (N, out_channels)
        return result

    @staticmethod
    def _edge_index(et: EdgeType, adjacency: Any, x_dict: dict[NodeType, Tensor]) -> Tensor:
        """The relation's ``(2, E)`` edges (``adj_t`` read as PyG reads it), in range."""
        if is_sparse_adjacency(adjacency):
            edge_index = Graph.from_sparse(adjacency).edge_index()
        elif isinstance(adjacency, Tensor) and adjacency.dim() == 2 and adjacency.shape[0] == 2:
            edge_index = adjacency.long()
        else:
            shape = tuple(adjacency.shape) if isinstance(adjacency, Tensor) else adjacency
            raise ValueError(f"edge_index_dict[{et}] must be (2, E) or a sparse adj_t, got {shape}")
        n_src, n_dst = x_dict[et[0]].shape[0], x_dict[et[2]].shape[0]
        if edge_index.numel() and (
            int(edge_index.min()) < 0
            or int(edge_index[0].max()) >= n_src
            or int(edge_index[1].max()) >= n_dst
        ):
            raise ValueError(
                f"edge_index_dict[{et}] has node ids out of range: sources must lie in "
                f"[0, {n_src}) and targets in [0, {n_dst}), got max source "
                f"{int(edge_index[0].max())} and max target {int(edge_index[1].max())}"
            )
        return edge_index

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, heads={self.heads}, "
            f"node_types={len(self.node_types)}, edge_types={len(self.edge_types)}"
        )


class TypedLinear(nn.Module):
    """One affine map per node type, each node through its own type's:
    ``y_n = W[t_n] x_n + b[t_n]``.

    HGT's per-type projections (:class:`HGTConv`'s ``q_lin``, ``k_lin``, ``v_lin``,
    ``out_lin``) for nodes of several types that sit in one tensor, e.g. the fused node sets
    of several modalities (:class:`modalities.fusion.ModalityTransformer`), instead of one
    tensor per type. The same map as PyG's ``HeteroLinear`` on a type vector; the weights are
    stored as ``nn.Linear``'s, one ``(F_out, F_in)`` slice per type.

    Args:
        in_features: input width ``F_in``.
        out_features: output width ``F_out``.
        num_types: node types ``T``.
        bias: a bias per type.
        device: where the parameters live.
        dtype: the parameters' dtype.

    Attributes:
        weight: ``(T, F_out, F_in)``.
        bias: ``(T, F_out)`` or ``None``.

    Shapes:
        - x: ``(..., N, F_in)``; node_type: ``(N,)`` integer ids in ``[0, T)``
        - returns ``(..., N, F_out)``

    Example:
        >>> import torch
        >>> lin = TypedLinear(4, 8, num_types=2)
        >>> x = torch.randn(3, 5, 4)  # (B, N, F_in)
        >>> y = lin(x, torch.tensor([0, 0, 1, 1, 1]))
        >>> y.shape, torch.allclose(y[:, 2:], x[:, 2:] @ lin.weight[1].T + lin.bias[1])
        (torch.Size([3, 5, 8]), True)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_types: int,
        *,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features)
        self.out_features = check_int("out_features", out_features)
        self.num_types = check_int("num_types", num_types)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(num_types, out_features, in_features, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_types, out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @classmethod
    def from_linear(cls, linear: nn.Linear, num_types: int) -> TypedLinear:
        """Every type a copy of ``linear`` (a shared projection made per-type: same outputs
        until training moves the types apart)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        new = cls(
            linear.in_features,
            linear.out_features,
            num_types,
            bias=linear.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            new.weight.copy_(w.expand_as(new.weight))
            if new.bias is not None:
                new.bias.copy_(linear.bias.expand_as(new.bias))
        return new

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation, type by type (fan-in ``F_in``)."""
        bound = 1.0 / math.sqrt(self.in_features)
        for t in range(self.num_types):
            nn.init.kaiming_uniform_(self.weight[t], a=math.sqrt(5))
            if self.bias is not None:
                nn.init.uniform_(self.bias[t], -bound, bound)

    def forward(self, x: Tensor, node_type: Tensor) -> Tensor:
        """Project every node with its type's weights.

        Args:
            x: node features, nodes on the second-to-last axis.
            node_type: the type id of every node.

        Shapes:
            - x: ``(..., N, F_in)``; node_type: ``(N,)``; returns ``(..., N, F_out)``.
        """
        if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[-1] != self.in_features:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be (..., N, F_in={self.in_features}), got {shape}")
        n = x.shape[-2]
        if (
            not isinstance(node_type, Tensor)
            or node_type.dim() != 1
            or node_type.dtype.is_floating_point
            or node_type.dtype == torch.bool
            or node_type.shape[0] != n
        ):
            shape = (
                f"{tuple(node_type.shape)} {node_type.dtype}"
                if isinstance(node_type, Tensor)
                else type(node_type).__name__
            )
            raise ValueError(f"node_type must be integer ids of shape (N={n},), got {shape}")
        node_type = node_type.to(x.device)
        if n and (int(node_type.min()) < 0 or int(node_type.max()) >= self.num_types):
            raise ValueError(
                f"node_type must lie in [0, num_types={self.num_types}), got ids from "
                f"{int(node_type.min())} to {int(node_type.max())}"
            )
        # nodes grouped by type (stable: the fused layout's contiguous blocks stay in place)
        order = torch.argsort(node_type, stable=True)  # (N,)
        counts = torch.bincount(node_type, minlength=self.num_types).tolist()  # T ints
        parts = x.index_select(-2, order).split(counts, dim=-2)  # T x (..., N_t, F_in)
        outs = [
            F.linear(part, self.weight[t], None if self.bias is None else self.bias[t])
            for t, part in enumerate(parts)
        ]  # T x (..., N_t, F_out)
        grouped = torch.cat(outs, dim=-2)  # (..., N, F_out) in type order
        return grouped.index_select(-2, torch.argsort(order))  # (..., N, F_out)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"num_types={self.num_types}, bias={self.bias is not None}"
        )

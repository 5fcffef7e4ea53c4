"""Doors from the tools users already have: :func:`from_pyg`, :func:`to_hetero`.

PyG is not imported here: a layer is recognised by its class name and module, so
``import graphattn`` needs torch alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .conv import GATConv, GATv2Conv, TransformerConv
from .functional import BackendName
from .global_attention import SGFormerAttention
from .hetero import HGTConv, edge_type_key

__all__ = ["from_pyg", "to_hetero"]

_CONVS: dict[str, type[nn.Module]] = {
    "GATConv": GATConv,
    "GATv2Conv": GATv2Conv,
    "TransformerConv": TransformerConv,
    "SGFormerAttention": SGFormerAttention,
    "HGTConv": HGTConv,
}


def _pyg_name(conv: Any) -> str | None:
    cls = type(conv)
    if cls.__module__.startswith("torch_geometric.") and cls.__name__ in _CONVS:
        return cls.__name__
    return None


def _refuse_unsupported(conv: nn.Module, name: str) -> None:
    """Options of PyG's ``MessagePassing`` the graphattn layers do not reproduce."""
    aggr = getattr(conv, "aggr", "add")
    if aggr not in ("add", "sum"):
        raise ValueError(f"{name} with aggr={aggr!r} is not supported (only 'add' or 'sum')")
    flow = getattr(conv, "flow", "source_to_target")
    if flow != "source_to_target":
        raise ValueError(f"{name} with flow={flow!r} is not supported (only 'source_to_target')")
    if getattr(conv, "node_dim", 0) != 0:
        raise ValueError(f"{name} with node_dim={conv.node_dim} is not supported (only 0)")
    for p in conv.parameters():
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise ValueError(
                f"{name} has lazy (uninitialised) parameters (in_channels=-1): run one forward "
                "pass first so that their shapes are known"
            )


def from_pyg(conv: nn.Module, *, backend: BackendName = "auto") -> nn.Module:
    """The graphattn layer that computes what a PyG attention layer computes, with a copy of
    its weights: same outputs, gradients and attention weights on any ``edge_index``.

    ============================  ========================================
    PyG layer                     graphattn layer
    ============================  ========================================
    ``GATConv``                   :class:`~graphattn.GATConv`
    ``GATv2Conv``                 :class:`~graphattn.GATv2Conv`
    ``TransformerConv``           :class:`~graphattn.TransformerConv`
    ``SGFormerAttention``         :class:`~graphattn.SGFormerAttention`
    ``HGTConv``                   :class:`~graphattn.HGTConv`
    ============================  ========================================

    Every option PyG users set carries over (heads, concat, negative_slope, dropout,
    add_self_loops, fill_value, edge_dim, bias, residual, share_weights, root_weight, beta,
    bipartite ``(F_src, F_dst)`` inputs). An option the layer cannot reproduce (another
    aggregation or flow, lazy parameters) is refused with a ``ValueError``.

    Args:
        conv: the PyG layer.
        backend: the new layer's backend.

    Example:
        >>> import torch
        >>> from torch_geometric.nn import GATConv as PygGAT
        >>> import graphattn
        >>> pyg = PygGAT(16, 8, heads=4)
        >>> ours = graphattn.from_pyg(pyg)
        >>> x, ei = torch.randn(10, 16), torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
        >>> torch.allclose(ours(x, ei), pyg(x, ei), atol=1e-6)
        True
    """
    name = _pyg_name(conv)
    if name is None:
        raise TypeError(
            f"conv must be a torch_geometric GATConv, GATv2Conv, TransformerConv, "
            f"SGFormerAttention or HGTConv, got {type(conv).__module__}.{type(conv).__name__}"
        )
    if name == "SGFormerAttention":
        return _from_sgformer(conv, backend)
    _refuse_unsupported(conv, name)
    if name == "HGTConv":
        return _from_hgt(conv, backend)
    ref = next(conv.parameters())
    common = {
        "heads": conv.heads,
        "concat": conv.concat,
        "dropout": float(conv.dropout),
        "backend": backend,
        "device": ref.device,
        "dtype": ref.dtype,
    }
    if name in ("GATConv", "GATv2Conv"):
        gat = {
            "negative_slope": conv.negative_slope,
            "add_self_loops": conv.add_self_loops,
            "edge_dim": conv.edge_dim,
            "fill_value": conv.fill_value,
            "bias": conv.bias is not None,
            "residual": conv.res is not None,
        }
        if name == "GATv2Conv":
            gat["share_weights"] = conv.share_weights
        new = _CONVS[name](conv.in_channels, conv.out_channels, **gat, **common)
    else:
        new = TransformerConv(
            conv.in_channels,
            conv.out_channels,
            beta=conv.beta,
            edge_dim=conv.edge_dim,
            bias=conv.lin_key.bias is not None,
            root_weight=conv.root_weight,
            **common,
        )
    state = conv.state_dict()
    if name == "TransformerConv" and not conv.root_weight:
        # PyG builds lin_skip even when root_weight=False and never uses it
        state = {k: v for k, v in state.items() if not k.startswith("lin_skip.")}
    with torch.no_grad():
        new.load_state_dict(state, strict=True)
    new.train(conv.training)
    return new


def _from_sgformer(pyg: nn.Module, backend: BackendName) -> SGFormerAttention:
    """:class:`SGFormerAttention` with a copy of PyG's weights."""
    ref = pyg.q.weight
    new = SGFormerAttention(
        pyg.q.in_features,
        heads=pyg.heads,
        head_channels=pyg.head_channels,
        qkv_bias=pyg.q.bias is not None,
        backend=backend,
    ).to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        new.load_state_dict(pyg.state_dict(), strict=True)
    new.train(pyg.training)
    return new


def _from_hgt(pyg: nn.Module, backend: BackendName) -> HGTConv:
    """:class:`HGTConv` with a copy of PyG's weights: its fused ``kqv_lin`` (rows ``k, q,
    v``) split into ``k_lin``, ``q_lin``, ``v_lin``; its ``k_rel``/``v_rel``
    ``(H * R, D, D)`` (type ``h * R + r``) split by relation into ``w_att``/``w_msg``
    ``(H, D, D)``; ``p_rel`` ``(1, H)`` into ``mu`` ``(H,)``; ``skip`` ``(1,)`` a scalar."""
    lins = pyg.kqv_lin.lins
    ref = pyg.k_rel.weight
    h, f = pyg.heads, pyg.out_channels
    d, r = f // h, len(pyg.edge_types)
    node_types = list(pyg.node_types)
    in_channels = {nt: lins[nt].weight.shape[1] for nt in node_types}
    new = HGTConv(
        in_channels,
        f,
        (node_types, list(pyg.edge_types)),
        heads=h,
        backend=backend,
        device=ref.device,
        dtype=ref.dtype,
    )
    k_rel = pyg.k_rel.weight.view(h, r, d, d)  # (H, R, D, D)
    v_rel = pyg.v_rel.weight.view(h, r, d, d)
    kqv = (new.k_lin, new.q_lin, new.v_lin)
    with torch.no_grad():
        for nt in node_types:
            weights, biases = lins[nt].weight.split(f), lins[nt].bias.split(f)  # k, q, v
            for w, b, ours in zip(weights, biases, kqv, strict=True):
                ours[nt].weight.copy_(w)
                ours[nt].bias.copy_(b)
            new.out_lin[nt].weight.copy_(pyg.out_lin.lins[nt].weight)
            new.out_lin[nt].bias.copy_(pyg.out_lin.lins[nt].bias)
            new.skip[nt].copy_(pyg.skip[nt].view(()))
        for i, et in enumerate(pyg.edge_types):
            key = edge_type_key(et)
            new.w_att[key].copy_(k_rel[:, i])
            new.w_msg[key].copy_(v_rel[:, i])
            new.mu[key].copy_(pyg.p_rel[key].view(h))
    new.train(pyg.training)
    return new


# ---------------------------------------------------------------------------- to_hetero
_AS_MESSAGE_PASSING: dict[type[nn.Module], type[nn.Module]] = {}


def _as_message_passing(cls: type[nn.Module], base: type[nn.Module]) -> type[nn.Module]:
    """``cls`` registered as a PyG ``MessagePassing`` (``base``) for ``isinstance`` alone:
    its methods, ``repr`` and pickling stay ``cls``'s (``MessagePassing.__init__`` never
    runs)."""
    if cls not in _AS_MESSAGE_PASSING:
        body = {
            "__module__": cls.__module__,
            "__repr__": nn.Module.__repr__,
            "__setstate__": nn.Module.__setstate__,
        }
        _AS_MESSAGE_PASSING[cls] = type(cls.__name__, (cls, base), body)
    return _AS_MESSAGE_PASSING[cls]


def _set_classes(module: nn.Module, classes: dict[type, type]) -> list[tuple[nn.Module, type]]:
    """Give every submodule whose class is a key of ``classes`` the class it maps to;
    returns ``(submodule, old class)`` pairs."""
    changed = []
    for m in module.modules():
        new = classes.get(type(m))
        if new is not None:
            changed.append((m, type(m)))
            m.__class__ = new
    return changed


def to_hetero(
    model: nn.Module,
    metadata: tuple[list[str], list[tuple[str, str, str]]],
    aggr: str = "sum",
    input_map: dict[str, str] | None = None,
    debug: bool = False,
) -> nn.Module:
    """PyG's ``torch_geometric.nn.to_hetero`` for a model with graphattn conv layers.

    PyG's ``to_hetero`` traces ``model.forward`` with every submodule as a leaf (nothing of
    a layer's own ``forward`` is traced) and gives a layer one copy per edge type, summed
    per target type, only when the layer is an instance of PyG's ``MessagePassing``; any
    other module gets edge-level outputs (one per edge type, never aggregated). The
    graphattn layers do not subclass ``MessagePassing`` (``import graphattn`` needs torch
    alone), so this function lets ``isinstance`` see :class:`~graphattn.GATConv`,
    :class:`~graphattn.GATv2Conv` and :class:`~graphattn.TransformerConv` as one during the
    transformation only: ``model`` and the returned module hold plain graphattn layers.

    Args:
        model: a homogeneous model whose ``forward(x, edge_index, ...)`` calls the layers.
        metadata: ``HeteroData.metadata()``: node types and edge types.
        aggr: how the outputs of several edge types into one node type combine
            (``"sum"``, ``"mean"``, ``"max"``, ``"min"``, ``"mul"``).
        input_map: PyG's: ``"node"`` or ``"edge"`` for each argument of ``forward``.
        debug: PyG's: print the traced graphs.

    Returns:
        PyG's ``GraphModule``, called with ``(x_dict, edge_index_dict, ...)``.

    Example (the layers' lazy ``(-1, -1)`` sizes suit node types of different widths)::

        class Gnn(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = graphattn.GATConv((-1, -1), 8, heads=2, add_self_loops=False)

            def forward(self, x, edge_index):
                return self.conv(x, edge_index).relu()

        model = graphattn.to_hetero(Gnn(), data.metadata())
        out = model(data.x_dict, data.edge_index_dict)  # {node type: (N, 16)}
    """
    from torch_geometric.nn import MessagePassing
    from torch_geometric.nn import to_hetero as pyg_to_hetero

    ours = (GATConv, GATv2Conv, TransformerConv)
    registered = {c: _as_message_passing(c, MessagePassing) for c in ours}
    changed = _set_classes(model, registered)
    try:
        hetero = pyg_to_hetero(model, metadata, aggr=aggr, input_map=input_map, debug=debug)
    finally:
        for m, cls in changed:
            m.__class__ = cls
    _set_classes(hetero, {v: k for k, v in registered.items()})
    return hetero

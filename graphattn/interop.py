"""Doors from the tools users already have: :func:`from_pyg`.

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

__all__ = ["from_pyg"]

_CONVS: dict[str, type[nn.Module]] = {
    "GATConv": GATConv,
    "GATv2Conv": GATv2Conv,
    "TransformerConv": TransformerConv,
    "SGFormerAttention": SGFormerAttention,
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
            f"conv must be a torch_geometric GATConv, GATv2Conv, TransformerConv or "
            f"SGFormerAttention, got {type(conv).__module__}.{type(conv).__name__}"
        )
    if name == "SGFormerAttention":
        return _from_sgformer(conv, backend)
    _refuse_unsupported(conv, name)
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

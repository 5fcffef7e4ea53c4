"""PyG's input objects, recognised without importing PyG: ``Data`` and ``Batch`` objects,
sparse adjacency matrices (``adj_t``), and what a layer called as ``layer(data)`` reads.

``import graphattn`` needs torch alone, so a PyG object is recognised by the modules of its
classes (``torch_geometric.data``, ``torch_sparse``), never by ``isinstance``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["data_inputs", "is_pyg_data", "is_sparse_adjacency", "is_sparse_tensor_object"]


def is_pyg_data(obj: object) -> bool:
    """Whether ``obj`` is a PyG ``Data`` or ``Batch`` (any class of ``torch_geometric.data``,
    subclasses included)."""
    if obj is None or isinstance(obj, Tensor | tuple | list):  # the common inputs, which
        return False  # torch.compile traces without walking a class hierarchy
    return any(c.__module__.startswith("torch_geometric.data") for c in type(obj).__mro__)


def is_sparse_tensor_object(obj: object) -> bool:
    """Whether ``obj`` is a ``torch_sparse.SparseTensor`` (PyG's ``adj_t`` before torch's own
    sparse tensors)."""
    cls = type(obj)
    return cls.__name__ == "SparseTensor" and cls.__module__.startswith("torch_sparse")


def is_sparse_adjacency(obj: object) -> bool:
    """Whether ``obj`` is a sparse matrix (a torch tensor of any sparse layout, or a
    ``torch_sparse.SparseTensor``) rather than an ``edge_index``; which layouts are read is
    :meth:`graphattn.Graph.from_sparse`'s business."""
    if isinstance(obj, Tensor):
        return obj.layout != torch.strided
    return is_sparse_tensor_object(obj)


def data_inputs(
    data: Any, graph: Any, edge_attr: Tensor | None, takes_edge_attr: bool, graph_name: str
) -> tuple[Tensor, Any, Tensor | None]:
    """What ``layer(data)`` reads from a PyG ``Data`` or ``Batch``: ``data.x``, its graph
    (``data.edge_index``, else ``data.adj_t``), and ``data.edge_attr`` when the layer takes
    edge features and no ``edge_attr`` was passed (an explicit ``edge_attr`` wins).

    Args:
        data: the PyG object given as the layer's node features.
        graph: the layer's graph argument, which must be ``None`` here.
        edge_attr: the layer's ``edge_attr`` argument.
        takes_edge_attr: whether the layer was built with ``edge_dim``.
        graph_name: the name of the layer's graph argument, for messages.

    Returns:
        ``(x, graph, edge_attr)``.
    """
    kind = type(data).__name__
    if graph is not None:
        raise TypeError(
            f"x is a PyG {kind}, whose graph the layer reads, and {graph_name}= was given too: "
            f"call layer(data) or layer(data.x, {graph_name})"
        )
    x = getattr(data, "x", None)
    if not isinstance(x, Tensor):
        raise ValueError(
            f"data ({kind}) has no node features x (got {type(x).__name__}): set data.x or "
            f"call layer(x, data.edge_index)"
        )
    structure = getattr(data, "edge_index", None)
    if structure is None:
        structure = getattr(data, "adj_t", None)
    if structure is None:
        raise ValueError(f"data ({kind}) has neither edge_index nor adj_t")
    if edge_attr is None and takes_edge_attr:
        edge_attr = getattr(data, "edge_attr", None)
    return x, structure, edge_attr

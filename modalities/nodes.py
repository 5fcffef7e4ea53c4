"""``NodeSet``: what every modality adapter returns.

A node set is a padded batch of node features with a mask of real nodes, optional positions
and a modality label per node, ready for :class:`graphattn.GraphAttention`. Its
:meth:`NodeSet.graph` builds the matching :class:`graphattn.Graph` with the padding attached
as a key padding mask, so padded nodes never send messages.

Axis legend: ``B`` batch, ``N`` nodes, ``D`` feature size.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor

from graphattn import Graph

from ._common import (
    arg_error,
    check_choice,
    check_int,
    check_mask,
    check_pair,
    check_sequence,
    check_str,
    check_tensor,
    masked_mean,
)

__all__ = ["NodeSet", "PositionKind", "GraphKind", "masked_mean"]

#: ``"index"``: ``(B, N)`` integer position in a sequence; ``"grid"``: ``(B, N, 2)`` integer
#: ``(row, col)`` of a patch or feature-map cell; ``"time"``: ``(B, N)`` float seconds.
PositionKind = Literal["index", "grid", "time"]
#: Graph kinds :meth:`NodeSet.graph` can build.
GraphKind = Literal["complete", "causal", "window", "grid"]
_POSITION_KINDS = ("index", "grid", "time")
_GRAPH_KINDS = ("complete", "causal", "window", "grid")


@dataclass
class NodeSet:
    """A padded batch of nodes from one or several modalities.

    Attributes:
        features: node features.
        mask: ``True`` marks a real node, ``False`` a padded one.
        positions: optional positions, see :data:`PositionKind`.
        position_kind: what ``positions`` hold (required when ``positions`` is given).
        modality: label of the node set (``"text"``, ``"image"``, ...); a concatenation of
            several modalities is labelled ``"+"``-joined (``"text+image"``).
        modality_ids: index into ``modality_names`` of every node (default: all 0).
        modality_names: the modality of each id (default: ``(modality,)``).
        grid_shape: ``(rows, cols)`` when the nodes are a row-major grid (image patches,
            feature-map cells, time-frequency patches).
        graph_kind: the structure :meth:`graph` builds by default (adapters set
            ``"causal"`` for causal text, ``"grid"`` for a grid neighbourhood).
        graph_radius: radius of the default ``"window"`` or ``"grid"`` structure.

    Every field is checked on construction: a wrong type (``None`` for a tensor included)
    raises :class:`TypeError`, a wrong shape or value :class:`ValueError`, naming the field
    and what it got.

    Shapes:
        - features: ``(B, N, D)`` floating point
        - mask: ``(B, N)`` bool
        - positions: ``(B, N)`` (index: integer, time: float) or ``(B, N, 2)`` (grid: integer)
        - modality_ids: ``(N,)`` int64

    Example:
        >>> import torch
        >>> a = NodeSet(torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool), modality="a")
        >>> b = NodeSet(torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.bool), modality="b")
        >>> ab = NodeSet.concat(a, b)
        >>> ab.num_nodes, ab.modality, ab.modality_ids.tolist()
        (7, 'a+b', [0, 0, 0, 1, 1, 1, 1])
    """

    features: Tensor
    mask: Tensor
    positions: Tensor | None = None
    position_kind: PositionKind | None = None
    modality: str = "generic"
    modality_ids: Tensor | None = field(default=None, repr=False)
    modality_names: tuple[str, ...] | None = None
    grid_shape: tuple[int, int] | None = None
    graph_kind: GraphKind = "complete"
    graph_radius: int | None = None

    def __post_init__(self) -> None:
        f = check_tensor("features", self.features, "a floating-point tensor of shape (B, N, D)")
        if f.dim() != 3:
            raise ValueError(f"features must have shape (B, N, D), got {tuple(f.shape)}")
        if not f.is_floating_point():
            raise TypeError(f"features must be floating point, got {f.dtype}")
        m = check_mask("mask", self.mask, tuple(f.shape[:2]))
        if m.device != f.device:
            raise ValueError(f"mask is on {m.device} but features are on {f.device}")
        check_str("modality", self.modality)
        self._check_positions()
        self._check_modalities()
        if self.grid_shape is not None:
            h, w = check_pair("grid_shape", self.grid_shape, minimum=0)
            if h * w != self.num_nodes:
                raise ValueError(
                    f"grid_shape {(h, w)} has {h * w} cells but there are {self.num_nodes} nodes"
                )
            self.grid_shape = (h, w)
        check_choice("graph_kind", self.graph_kind, _GRAPH_KINDS)
        self.graph_radius = check_int("graph_radius", self.graph_radius, minimum=0, optional=True)

    def _check_positions(self) -> None:
        p, kind = self.positions, self.position_kind
        if p is None:
            if kind is not None:
                raise ValueError(f"position_kind={kind!r} was given without positions")
            return
        if kind is None:
            raise ValueError(
                f"position_kind must be one of {_POSITION_KINDS} when positions are given, got None"
            )
        check_choice("position_kind", kind, _POSITION_KINDS)
        check_tensor("positions", p)
        b, n = self.features.shape[:2]
        want = (b, n, 2) if kind == "grid" else (b, n)
        if tuple(p.shape) != want:
            raise ValueError(
                f"positions of kind {kind!r} must have shape {want}, got {tuple(p.shape)}"
            )
        if kind == "time" and not p.is_floating_point():
            raise TypeError(f"time positions must be floating point (seconds), got {p.dtype}")
        if kind in ("index", "grid") and (p.is_floating_point() or p.dtype == torch.bool):
            raise TypeError(f"{kind} positions must have an integer dtype, got {p.dtype}")

    def _check_modalities(self) -> None:
        n = self.num_nodes
        if self.modality_names is None:
            self.modality_names = (self.modality,)
        names = tuple(check_sequence("modality_names", self.modality_names, "str"))
        for i, name in enumerate(names):
            check_str(f"modality_names[{i}]", name)
        if len(set(names)) != len(names):
            raise ValueError(f"modality_names must be unique, got {names}")
        self.modality_names = names
        if self.modality_ids is None:
            self.modality_ids = torch.zeros(n, dtype=torch.long, device=self.features.device)
            return
        ids = check_tensor("modality_ids", self.modality_ids, "an integer tensor of shape (N,)")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"modality_ids must have an integer dtype, got {ids.dtype}")
        if tuple(ids.shape) != (n,):
            raise ValueError(
                f"modality_ids must be a tensor of shape (N,) = ({n},), got {tuple(ids.shape)}"
            )
        if (
            n
            and not ids.is_meta
            and (int(ids.min()) < 0 or int(ids.max()) >= len(self.modality_names))
        ):
            raise ValueError(
                f"modality_ids must lie in [0, {len(self.modality_names)}) "
                f"(modality_names={self.modality_names}), got {ids.unique().tolist()}"
            )
        self.modality_ids = ids.long()

    # ------------------------------------------------------------------ sizes
    @property
    def batch_size(self) -> int:
        """``B``."""
        return self.features.shape[0]

    @property
    def num_nodes(self) -> int:
        """``N``, padded nodes included."""
        return self.features.shape[1]

    @property
    def dim(self) -> int:
        """``D``."""
        return self.features.shape[2]

    @property
    def lengths(self) -> Tensor:
        """Number of real nodes per sample, ``(B,)`` int64."""
        return self.mask.sum(dim=1)

    @property
    def key_padding_mask(self) -> Tensor:
        """``~mask``: ``True`` marks a padded node (``nn.MultiheadAttention``'s convention).

        Shapes:
            ``(B, N)`` bool.
        """
        return ~self.mask

    @property
    def device(self) -> torch.device:
        return self.features.device

    # ------------------------------------------------------------------ operations
    def to(self, device: torch.device | str) -> NodeSet:
        """A copy with every tensor on ``device``."""
        try:
            device = torch.device(device)
        except (TypeError, RuntimeError):
            raise arg_error(TypeError, "device", "a torch.device or a str", device) from None
        moved = {
            name: getattr(self, name).to(device)
            for name in ("features", "mask", "positions", "modality_ids")
            if getattr(self, name) is not None
        }
        return replace(self, **moved)

    def with_features(self, features: Tensor) -> NodeSet:
        """The same nodes with new features (for example a transformer's output).

        Shapes:
            - features: ``(B, N, D')``.
        """
        return replace(self, features=features)

    @staticmethod
    def concat(*nodesets: NodeSet) -> NodeSet:
        """Concatenate node sets along ``N`` (the padded layout: each part keeps its own
        padding, so padded nodes may sit between real ones).

        Per-node modality ids are kept and remapped to the union of the modality names (a
        name seen twice keeps one id). Positions are kept when every part has positions of
        the same kind; otherwise the result has none (adapters already add their position
        encodings to the features). ``grid_shape`` is dropped and ``graph_kind`` is
        ``"complete"``: use :func:`modalities.fuse` for per-part structure.

        Raises:
            TypeError: a part is not a :class:`NodeSet`.
            ValueError: the parts differ in batch size, feature size, or device.
        """
        if len(nodesets) == 1 and isinstance(nodesets[0], list | tuple):
            nodesets = tuple(nodesets[0])
        if not nodesets:
            raise ValueError("concat needs at least one NodeSet, got none")
        for i, ns in enumerate(nodesets):
            if not isinstance(ns, NodeSet):
                raise arg_error(TypeError, f"nodesets[{i}]", "a NodeSet", ns)
        first = nodesets[0]
        for i, ns in enumerate(nodesets[1:], start=1):
            if ns.batch_size != first.batch_size:
                raise ValueError(
                    f"nodesets[{i}] ({ns.modality!r}) has batch size {ns.batch_size} but "
                    f"nodesets[0] ({first.modality!r}) has {first.batch_size}"
                )
            if ns.dim != first.dim:
                raise ValueError(
                    f"nodesets[{i}] ({ns.modality!r}) has feature size {ns.dim} but "
                    f"nodesets[0] ({first.modality!r}) has {first.dim}"
                )
            if ns.device != first.device or ns.features.dtype != first.features.dtype:
                raise ValueError(
                    f"nodesets[{i}] is {ns.features.dtype} on {ns.device} but nodesets[0] "
                    f"is {first.features.dtype} on {first.device}"
                )
        names: list[str] = []
        ids = []
        for ns in nodesets:
            for name in ns.modality_names:
                if name not in names:
                    names.append(name)
            remap = torch.tensor(
                [names.index(name) for name in ns.modality_names], device=first.device
            )
            ids.append(remap[ns.modality_ids])  # (N_i,)
        kinds = {ns.position_kind for ns in nodesets}
        positions, kind = None, None
        if len(kinds) == 1 and first.positions is not None:
            positions = torch.cat([ns.positions for ns in nodesets], dim=1)
            kind = first.position_kind
        return NodeSet(
            features=torch.cat([ns.features for ns in nodesets], dim=1),  # (B, sum N_i, D)
            mask=torch.cat([ns.mask for ns in nodesets], dim=1),  # (B, sum N_i)
            positions=positions,
            position_kind=kind,
            modality="+".join(names),
            modality_ids=torch.cat(ids),
            modality_names=tuple(names),
        )

    def graph(self, kind: GraphKind | None = None, *, radius: int | None = None) -> Graph:
        """The graph over these nodes, with the padding attached as a key padding mask
        (only when some node is padded, so unpadded batches keep the fastest kernels).

        Args:
            kind: ``"complete"``, ``"causal"``, ``"window"`` (needs ``radius``) or
                ``"grid"`` (needs ``grid_shape``; ``radius`` defaults to 1). ``None``: this
                node set's ``graph_kind``.
            radius: neighbourhood radius for ``"window"`` and ``"grid"`` (default:
                ``graph_radius``).

        Returns:
            A :class:`graphattn.Graph` with ``num_dst == num_src == N``.
        """
        kind = self.graph_kind if kind is None else check_choice("kind", kind, _GRAPH_KINDS)
        radius = self.graph_radius if radius is None else check_int("radius", radius, minimum=0)
        n, dev = self.num_nodes, self.device
        if kind == "complete":
            g: Graph = Graph.complete(n, device=dev)
        elif kind == "causal":
            g = Graph.causal(n, device=dev)
        elif kind == "window":
            if radius is None:
                raise ValueError("graph kind 'window' needs a radius, got radius=None")
            g = Graph.window(n, radius, device=dev)
        else:  # "grid"
            if self.grid_shape is None:
                raise ValueError(
                    f"graph kind 'grid' needs grid_shape, but this {self.modality!r} NodeSet "
                    "has none"
                )
            radius = 1 if radius is None else radius
            g = Graph.grid(*self.grid_shape, radius, device=dev)
        if not bool(self.mask.all()):
            g = g.pad(key_padding_mask=self.key_padding_mask)
        return g

    def __repr__(self) -> str:
        pos = "" if self.position_kind is None else f", positions={self.position_kind}"
        grid = "" if self.grid_shape is None else f", grid_shape={self.grid_shape}"
        return (
            f"NodeSet(modality={self.modality!r}, B={self.batch_size}, N={self.num_nodes}, "
            f"D={self.dim}, real={self.lengths.tolist()}{pos}{grid}, "
            f"graph_kind={self.graph_kind!r})"
        )

"""Observations of a gymnasium space as nodes (private; :class:`modalities.RLStateEncoder`
builds it from a space and documents the rule in :meth:`~modalities.RLStateEncoder.from_space`).

A *leaf* is a space that is not a ``Dict`` or a ``Tuple``. Every leaf has its own node
embedder (one module below each), which maps the leaf's batched observation ``(B, *shape)``
to ``(B, n, D)`` nodes; a ``Dict`` or ``Tuple`` concatenates the nodes of its leaves in order
(depth first, keys in the space's order) and adds a learned type embedding per leaf.

This module imports gymnasium; :mod:`modalities.rl` imports it only when it is given a space.

Axis legend: ``B`` batch, ``N`` nodes, ``n`` nodes of one leaf, ``D`` embedding size,
``F`` features per row, ``C``/``H``/``W`` image channels and size, ``L`` leaves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeAlias

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from ._common import arg_error, array_ndim, check_int, numeric_tensor, short_repr
from .image import PatchAdapter

__all__ = ["Observation", "SpaceNodes", "image_layout", "space_leaves"]

#: One observation, or a batch, shaped like its space: a tensor, an array or a number for a
#: leaf, a dict of them for a ``Dict`` space, a tuple (or list) for a ``Tuple`` space.
Observation: TypeAlias = (
    Tensor | np.ndarray | float | int | Mapping[str, "Observation"] | tuple["Observation", ...]
)

LEAVES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
SUPPORTED = "a gymnasium Box, Discrete, MultiDiscrete, MultiBinary, Dict or Tuple space"
IMAGE_GRID = 8  # default patch size: at most 8 x 8 patches per image


def space_leaves(space: spaces.Space, path: str = "") -> list[tuple[str, spaces.Space]]:
    """The leaves of ``space`` with their paths (``"['agent'][0]"``), depth first.

    Raises:
        TypeError: a space of another kind, named by its path (``observation_space['a']``).
        ValueError: an empty ``Dict``/``Tuple`` or a leaf without elements.
    """
    name = f"observation_space{path}"
    if isinstance(space, spaces.Dict | spaces.Tuple):
        if not space.spaces:
            raise arg_error(ValueError, name, "a Dict or Tuple of at least one space", space)
        items = space.spaces.items() if isinstance(space, spaces.Dict) else enumerate(space.spaces)
        return [leaf for key, sub in items for leaf in space_leaves(sub, f"{path}[{key!r}]")]
    if not isinstance(space, LEAVES):
        raise arg_error(TypeError, name, SUPPORTED, space)
    if 0 in space.shape:
        raise ValueError(f"{name} has no elements (shape {space.shape}), so it gives no nodes")
    return [(path, space)]


def image_layout(space: spaces.Space) -> str | None:
    """``"CHW"`` or ``"HWC"`` for an image ``Box`` (3-D, ``uint8``, its smallest axis first or
    last: the channels, as stable-baselines3's ``is_image_space_channels_first``), else
    ``None``."""
    if not isinstance(space, spaces.Box) or len(space.shape) != 3 or space.dtype != np.uint8:
        return None
    return {0: "CHW", 2: "HWC"}.get(int(np.argmin(space.shape)))


class _ScalarNodes(nn.Module):
    """One node per scalar: ``x_i w_i + e_i`` (a value projection and an identity embedding,
    as :class:`~modalities.RLStateEncoder`'s vector observations). ``Box`` of rank 0 or 1 and
    ``MultiBinary`` (a bit ``b_i`` gives ``e_i`` or ``w_i + e_i``)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.num_nodes = size
        self.weight = nn.Parameter(torch.empty(size, dim))  # (n, D)
        self.identity = nn.Parameter(torch.empty(size, dim))  # (n, D)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s rule for one input (uniform in +-1), identities normal(0, 0.02)."""
        nn.init.uniform_(self.weight, -1.0, 1.0)
        nn.init.normal_(self.identity, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1, 1).to(self.weight.dtype)  # (B, n, 1)
        return x * self.weight + self.identity  # (B, n, D)

    def extra_repr(self) -> str:
        return f"nodes={self.num_nodes}, dim={self.weight.shape[1]}"


class _IndexNodes(nn.Module):
    """One embedded node per discrete component (``Discrete``: one, ``MultiDiscrete``: one per
    entry of ``nvec``); each component has its own rows of one embedding table."""

    def __init__(self, name: str, space: spaces.Discrete | spaces.MultiDiscrete, dim: int) -> None:
        super().__init__()
        self.name, self.space_repr = name, short_repr(space)
        if isinstance(space, spaces.Discrete):
            nvec, start = np.array([space.n]), np.array([space.start])
        else:
            nvec = np.asarray(space.nvec).reshape(-1)
            start = np.broadcast_to(getattr(space, "start", 0), space.shape).reshape(-1)
        nvec_t = torch.as_tensor(nvec.astype(np.int64))
        self.num_nodes = len(nvec)
        self.register_buffer("nvec", nvec_t, persistent=False)  # (n,)
        self.register_buffer("start", torch.as_tensor(start.astype(np.int64)), persistent=False)
        offset = torch.cumsum(nvec_t, 0) - nvec_t  # (n,): first row of each component
        self.register_buffer("offset", offset, persistent=False)
        self.table = nn.Embedding(int(nvec.sum()), dim)

    def reset_parameters(self) -> None:
        """``nn.Embedding``'s rule: normal(0, 1)."""
        self.table.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        if x.is_floating_point():  # SB3's buffers, or a float array of integers
            if bool((x != x.round()).any()):
                raise ValueError(f"{self.name} must hold integers for {self.space_repr}")
            x = x.round()
        idx = x.reshape(x.shape[0], -1).long() - self.start  # (B, n): 0 .. nvec - 1
        bad = (idx < 0) | (idx >= self.nvec)  # (B, n)
        if bool(bad.any()):
            values = (idx + self.start)[bad].unique()[:6].tolist()
            raise ValueError(f"{self.name} holds {values}, outside {self.space_repr}")
        return self.table(idx + self.offset)  # (B, n, D)

    def extra_repr(self) -> str:
        return f"{self.space_repr}, nodes={self.num_nodes}"


class _RowNodes(nn.Module):
    """One node per row of the last axis: ``Linear(F, D)``. ``Box (N, F)``: entities, no
    identity (a set: permutation invariant). Rank >= 3: cells of the leading axes, each with
    a learned identity embedding (a cell has a place)."""

    def __init__(self, shape: tuple[int, ...], dim: int, *, identity: bool) -> None:
        super().__init__()
        self.num_nodes = math.prod(shape[:-1])
        self.proj = nn.Linear(shape[-1], dim)
        self.identity = nn.Parameter(torch.empty(self.num_nodes, dim)) if identity else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s rule; identities normal(0, 0.02)."""
        self.proj.reset_parameters()
        if self.identity is not None:
            nn.init.normal_(self.identity, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], self.num_nodes, -1).to(self.proj.weight.dtype)  # (B, n, F)
        nodes = self.proj(x)  # (B, n, D)
        return nodes if self.identity is None else nodes + self.identity

    def extra_repr(self) -> str:
        return f"nodes={self.num_nodes}, identity={self.identity is not None}"


class _ImageNodes(nn.Module):
    """Image patches through :class:`~modalities.PatchAdapter` (padded to a multiple of the
    patch size, fixed 2-D sin-cos positions). Channels other than 1 or 3 (stacked frames) are
    grey images of their own, each with a learned channel embedding."""

    def __init__(
        self, name: str, shape: tuple[int, ...], layout: str, dim: int, patch_size: int | None
    ) -> None:
        super().__init__()
        c, h, w = shape if layout == "CHW" else (shape[2], shape[0], shape[1])
        if dim % 4:
            raise ValueError(
                f"dim must be divisible by 4 for the image {name} (2-D sin-cos positions of "
                f"its patches), got {dim}"
            )
        patch = patch_size or max(1, math.ceil(max(h, w) / IMAGE_GRID))
        self.channels_last = layout == "HWC"
        self.split = c not in (1, 3)
        self.patches = PatchAdapter(1 if self.split else c, patch, dim, pad=True)
        grid = math.ceil(h / patch) * math.ceil(w / patch)
        self.num_nodes = grid * (c if self.split else 1)
        self.channel = nn.Parameter(torch.empty(c, dim)) if self.split else None  # (C, D)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The adapter's own rule; channel embeddings normal(0, 0.02)."""
        self.patches.reset_parameters()
        if self.channel is not None:
            nn.init.normal_(self.channel, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_floating_point():  # pixel values 0..255; floats are taken as 0..1
            x = x.float() / 255.0
        x = x.to(self.patches.proj.weight.dtype)
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        if self.channel is None:
            return self.patches(x).features  # (B, n, D)
        b, c, h, w = x.shape
        nodes = self.patches(x.reshape(b * c, 1, h, w)).features  # (B * C, n / C, D)
        nodes = nodes.view(b, c, -1, nodes.shape[-1]) + self.channel[:, None]  # (B, C, n/C, D)
        return nodes.flatten(1, 2)  # (B, n, D)

    def extra_repr(self) -> str:
        layout = "HWC" if self.channels_last else "CHW"
        return f"layout={layout}, split_channels={self.channel is not None}, nodes={self.num_nodes}"


def _leaf_nodes(path: str, space: spaces.Space, dim: int, patch_size: int | None) -> nn.Module:
    name = f"obs{path}"
    if isinstance(space, spaces.Discrete | spaces.MultiDiscrete):
        return _IndexNodes(name, space, dim)
    if isinstance(space, spaces.MultiBinary) or len(space.shape) <= 1:
        return _ScalarNodes(math.prod(space.shape), dim)
    layout = image_layout(space)
    if layout is not None:
        return _ImageNodes(name, space.shape, layout, dim, patch_size)
    return _RowNodes(space.shape, dim, identity=len(space.shape) > 2)


def _children(
    space: spaces.Dict | spaces.Tuple, obs: Any, name: str
) -> list[tuple[Any, spaces.Space, Any, str]]:
    """``(key, sub-space, sub-observation, name)`` of a ``Dict``/``Tuple`` observation,
    checked against its space."""
    if isinstance(space, spaces.Dict):
        keys = list(space.spaces)
        if not isinstance(obs, Mapping):
            raise arg_error(TypeError, name, f"a dict with the keys {keys} (a Dict space)", obs)
        if set(obs) != set(keys):
            raise ValueError(f"{name} must have the keys {keys}, got {list(obs)}")
        return [(k, space.spaces[k], obs[k], f"{name}[{k!r}]") for k in keys]
    n = len(space.spaces)
    if not isinstance(obs, tuple | list):
        raise arg_error(TypeError, name, f"a tuple of {n} (a Tuple space)", obs)
    if len(obs) != n:
        raise ValueError(f"{name} must have {n} entries (a Tuple space), got {len(obs)}")
    pairs = enumerate(zip(space.spaces, obs, strict=True))
    return [(i, sub, value, f"{name}[{i}]") for i, (sub, value) in pairs]


def _walk(space: spaces.Space, obs: Any, name: str = "obs") -> Iterator[tuple[str, Any]]:
    """``(name, value)`` of every leaf of ``obs``, in :func:`space_leaves`' order."""
    if isinstance(space, spaces.Dict | spaces.Tuple):
        for _, sub, value, sub_name in _children(space, obs, name):
            yield from _walk(sub, value, sub_name)
    else:
        yield name, obs


def _rebuild(space: spaces.Space, obs: Any, fn: Callable[[Any], Any], name: str = "obs") -> Any:
    """``obs`` with ``fn`` applied to every leaf (dicts stay dicts, tuples tuples)."""
    if isinstance(space, spaces.Dict):
        return {k: _rebuild(s, o, fn, n) for k, s, o, n in _children(space, obs, name)}
    if isinstance(space, spaces.Tuple):
        return tuple(_rebuild(s, o, fn, n) for _, s, o, n in _children(space, obs, name))
    return fn(obs)


class SpaceNodes(nn.Module):
    """Nodes of observations from ``space`` (any supported gymnasium space).

    Args:
        space: the observation space.
        dim: node size ``D``.
        patch_size: patch size of image leaves (default ``ceil(max(H, W) / 8)``: at most
            8 x 8 patches per image).

    Attributes:
        names: each leaf's name in error messages (``"obs['agent'][0]"``), in node order.
        num_nodes: ``N``, the nodes of one observation.

    Shapes:
        - obs: a batch shaped like ``space`` (every leaf ``(B, *leaf.shape)``); returns
          ``(B, N, D)`` with ``N = num_nodes``.
    """

    def __init__(self, space: spaces.Space, dim: int, *, patch_size: int | None = None) -> None:
        super().__init__()
        patch_size = check_int("patch_size", patch_size, optional=True)
        found = space_leaves(space)
        self.space = space
        self.names = [f"obs{path}" for path, _ in found]
        self.leaf_spaces = [leaf for _, leaf in found]
        if patch_size is not None and not any(image_layout(s) for s in self.leaf_spaces):
            raise ValueError(
                f"patch_size applies to image observations (3-D uint8 Box), and "
                f"{short_repr(space)} has none; got patch_size={patch_size}"
            )
        self.leaves = nn.ModuleList(
            _leaf_nodes(path, leaf, dim, patch_size) for path, leaf in found
        )
        self.num_nodes = sum(m.num_nodes for m in self.leaves)
        composite = isinstance(space, spaces.Dict | spaces.Tuple)
        self.type_embedding = (
            nn.Parameter(torch.empty(len(found), dim)) if composite else None
        )  # (L, D)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each leaf's own rule; type embeddings normal(0, 0.02)."""
        for leaf in self.leaves:
            leaf.reset_parameters()
        if self.type_embedding is not None:
            nn.init.normal_(self.type_embedding, std=0.02)

    def is_unbatched(self, obs: Observation) -> bool:
        """Whether ``obs`` is one observation (its first leaf has the leaf's own rank)."""
        try:
            _, value = next(_walk(self.space, obs))
        except (TypeError, ValueError):  # a malformed observation: forward names the problem
            return False
        return array_ndim(value) == len(self.leaf_spaces[0].shape)

    def add_batch(self, obs: Observation) -> Observation:
        """``obs`` with a batch axis of one on every leaf."""

        def one(value: Any) -> Any:
            return value[None] if isinstance(value, Tensor) else np.asarray(value)[None]

        return _rebuild(self.space, obs, one)

    def forward(self, obs: Observation) -> Tensor:
        """Every leaf's nodes (plus its type embedding), concatenated in leaf order.

        Shapes:
            - obs: every leaf ``(B, *leaf.shape)``; returns ``(B, N, D)``.
        """
        device = next(self.parameters()).device
        parts, batch = [], None
        for k, (name, value) in enumerate(_walk(self.space, obs)):
            shape = self.leaf_spaces[k].shape
            x = numeric_tensor(name, value, device)
            if batch is None and x.dim() == len(shape) + 1:
                batch = x.shape[0]
            if x.dim() != len(shape) + 1 or tuple(x.shape) != (batch, *shape):
                want = ", ".join(["B" if batch is None else f"B={batch}", *map(str, shape)])
                hint = " (add a batch dimension with obs[None])" if x.dim() == len(shape) else ""
                raise ValueError(
                    f"{name} must have shape ({want}) for {short_repr(self.leaf_spaces[k])}, "
                    f"got {tuple(x.shape)}{hint}"
                )
            nodes = self.leaves[k](x)  # (B, n, D)
            if self.type_embedding is not None:
                nodes = nodes + self.type_embedding[k]
            parts.append(nodes)
        return torch.cat(parts, dim=1)  # (B, N, D)

    def extra_repr(self) -> str:
        return f"space={short_repr(self.space)}, leaves={len(self.leaves)}, nodes={self.num_nodes}"

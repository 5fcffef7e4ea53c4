"""Reinforcement-learning observations as nodes: ``RLStateEncoder``.

Three kinds of observation:

- a **vector** ``(B, obs_dim)``: each feature, or each group of features, becomes a node:
  ``node_g = W_g x[group_g] + e_g`` with a learned value projection ``W_g`` and a learned
  identity embedding ``e_g`` (so attention can tell "cart velocity" from "pole angle");
- a **set of entities** ``(B, N, F)`` with a mask ``(B, N)``: each entity is a node
  (``Linear(F, D)``); no positions, so the encoder is permutation invariant;
- any **gymnasium space** (images, discrete values, ``Dict`` and ``Tuple`` nesting): one node
  per feature or per group, by the rule of :meth:`RLStateEncoder.from_space`.

The nodes go through a :class:`graphattn.layers.GraphTransformer` on the complete graph
(padded entities masked, final LayerNorm), are mean-pooled over the real nodes into a state
embedding, and
feed an actor head (categorical logits, or a Gaussian mean with a learned state-independent
log standard deviation) and a critic head (state value), as in PPO actor-critic agents.

Axis legend: ``B`` batch, ``N`` nodes, ``G`` feature groups, ``S`` features per group,
``F`` entity features, ``D`` embedding size, ``A`` actions.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from graphattn import AttentionWeights, GraphTransformer

from ._common import (
    arg_error,
    array_ndim,
    check_float,
    check_int,
    check_mask,
    check_sequence,
    masked_mean,
    numeric_tensor,
    short_repr,
)

if TYPE_CHECKING:  # gymnasium is an extra: imported only when a space is given
    from gymnasium import spaces

    from ._spaces import Observation, SpaceNodes

__all__ = ["EntitySpec", "RLOutput", "RLStateEncoder"]


@dataclass(frozen=True)
class EntitySpec:
    """Observations that are sets of entities.

    Attributes:
        feature_dim: features per entity ``F``.
        max_entities: optional upper bound on ``N``, checked in ``forward``.
    """

    feature_dim: int
    max_entities: int | None = None

    def __post_init__(self) -> None:
        # frozen: store the checked (plain int) values through object.__setattr__
        object.__setattr__(self, "feature_dim", check_int("feature_dim", self.feature_dim))
        object.__setattr__(
            self, "max_entities", check_int("max_entities", self.max_entities, optional=True)
        )


@dataclass
class RLOutput:
    """What :class:`RLStateEncoder` returns.

    Attributes:
        embedding: pooled state embedding ``(B, D)``.
        value: critic's state value ``(B,)``.
        logits: discrete actions: action logits ``(B, A)``, else ``None``.
        action_mean: continuous actions: Gaussian mean ``(B, A)``, else ``None``.
        action_log_std: continuous actions: log standard deviation ``(A,)``, else ``None``.
        nodes: the transformer's node outputs ``(B, N, D)``.
        attentions: one :class:`graphattn.AttentionWeights` per layer when requested.
    """

    embedding: Tensor
    value: Tensor
    logits: Tensor | None = None
    action_mean: Tensor | None = None
    action_log_std: Tensor | None = None
    nodes: Tensor | None = None
    attentions: list[AttentionWeights] | None = None

    def distribution(self) -> torch.distributions.Distribution:
        """The policy: ``Categorical(logits)`` or an independent ``Normal`` per action
        dimension."""
        if self.logits is not None:
            return torch.distributions.Categorical(logits=self.logits)
        if self.action_mean is not None:
            std = self.action_log_std.exp().expand_as(self.action_mean)
            return torch.distributions.Independent(
                torch.distributions.Normal(self.action_mean, std), 1
            )
        raise ValueError("this encoder has no actor head (built without num_actions/action_dim)")


def _check_groups(groups: Sequence[Sequence[int]], obs_dim: int) -> list[list[int]]:
    """Groups must partition ``range(obs_dim)``."""
    out = []
    for k, group in enumerate(check_sequence("groups", groups, "lists of feature indices")):
        group = check_sequence(f"groups[{k}]", group, "feature indices (int)")
        if not group:
            raise arg_error(ValueError, f"groups[{k}]", "a non-empty list of feature indices", [])
        out.append([check_int(f"groups[{k}][{j}]", i, minimum=0) for j, i in enumerate(group)])
    if not out:
        raise arg_error(ValueError, "groups", "non-empty lists of feature indices", groups)
    flat = [i for g in out for i in g]
    bad = sorted({i for i in flat if not 0 <= i < obs_dim})
    if bad:
        raise ValueError(f"groups hold indices {bad} outside [0, obs_dim={obs_dim})")
    dups = sorted({i for i in flat if flat.count(i) > 1})
    if dups:
        raise ValueError(f"groups must not share features; {dups} appear more than once")
    missing = sorted(set(range(obs_dim)) - set(flat))
    if missing:
        raise ValueError(f"groups must cover every feature; {missing} are in no group")
    return out


class RLStateEncoder(nn.Module):
    """Graph-transformer state encoder with actor and critic heads.

    Args:
        obs: ``obs_dim`` (int) for vector observations, an :class:`EntitySpec`, or a
            gymnasium space (nodes by the rule of :meth:`from_space`, which passes every
            space but a 1-D or 2-D ``Box`` on as it is).
        dim: embedding size ``D``.
        num_layers: transformer layers.
        num_heads: attention heads (must divide ``dim``).
        num_actions: number of discrete actions (actor gives logits).
        action_dim: size of a continuous action (actor gives a Gaussian mean). Give at most
            one of ``num_actions``/``action_dim``; neither builds no actor head.
        groups: vector observations only: lists of feature indices, one node per list; they
            must partition ``range(obs_dim)``. ``None``: one node per feature.
        dim_feedforward: hidden size of the transformer's MLP (default ``4 * dim``).
        dropout: transformer dropout.
        backend: attention backend, ``"auto"``, ``"dense"`` or ``"edges"``.
        patch_size: spaces with images only: their patch size (default
            ``ceil(max(H, W) / 8)``, at most 8 x 8 patches per image).

    Shapes:
        - obs: ``(B, obs_dim)``, or ``(B, N, F)`` with mask ``(B, N)`` bool (True = real), or
          a batch shaped like the space (a dict of ``(B, ...)`` arrays for a ``Dict``, ...)
        - returns :class:`RLOutput`

    Example:
        >>> enc = RLStateEncoder(4, dim=16, num_layers=1, num_heads=2, num_actions=2)
        >>> out = enc(torch.randn(3, 4))
        >>> out.logits.shape, out.value.shape
        (torch.Size([3, 2]), torch.Size([3]))
    """

    def __init__(
        self,
        obs: int | EntitySpec | spaces.Space,
        dim: int,
        num_layers: int,
        num_heads: int,
        *,
        num_actions: int | None = None,
        action_dim: int | None = None,
        groups: Sequence[Sequence[int]] | None = None,
        dim_feedforward: int | None = None,
        dropout: float = 0.0,
        backend: str = "auto",
        patch_size: int | None = None,
    ) -> None:
        super().__init__()
        space = obs if _is_space(obs) else None
        if isinstance(obs, EntitySpec) or space is not None:
            obs_dim = None
        elif isinstance(obs, bool) or not isinstance(obs, numbers.Integral):
            raise arg_error(
                TypeError, "obs", "an int (obs_dim), an EntitySpec or a gymnasium space", obs
            )
        else:
            obs_dim = check_int("obs", obs)
        dim = self.dim = check_int("dim", dim)
        num_layers = check_int("num_layers", num_layers)
        num_heads = check_int("num_heads", num_heads)
        if dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide dim ({dim})")
        dim_feedforward = check_int("dim_feedforward", dim_feedforward, optional=True)
        dropout = check_float("dropout", dropout)
        if not 0 <= dropout < 1:
            raise arg_error(ValueError, "dropout", "in [0, 1)", dropout)
        if not isinstance(backend, str):
            raise arg_error(TypeError, "backend", "a str ('auto', 'dense', 'edges', ...)", backend)
        if num_actions is not None and action_dim is not None:
            raise ValueError(
                f"give num_actions (discrete) or action_dim (continuous), not both; got "
                f"num_actions={num_actions}, action_dim={action_dim}"
            )
        self.num_actions = check_int("num_actions", num_actions, optional=True)
        self.action_dim = check_int("action_dim", action_dim, optional=True)
        patch_size = check_int("patch_size", patch_size, optional=True)
        if patch_size is not None and space is None:
            raise ValueError(
                f"patch_size applies to image observations of a gymnasium space, not to "
                f"obs={short_repr(obs)}; got patch_size={short_repr(patch_size)}"
            )
        self.observation_space = space
        self.space_nodes: SpaceNodes | None = None
        self.entity_spec: EntitySpec | None = None
        self.obs_dim: int | None = None
        self.entity_proj: nn.Linear | None = None
        self.groups: list[list[int]] | None = None
        if obs_dim is None:
            if groups is not None:
                raise ValueError(
                    f"groups apply to vector observations, not to obs={short_repr(obs)}"
                )
            if space is None:
                self.entity_spec = obs
                self.entity_proj = nn.Linear(obs.feature_dim, dim)
            else:
                from ._spaces import SpaceNodes

                self.space_nodes = SpaceNodes(space, dim, patch_size=patch_size)
            self.register_parameter("value_weight", None)
            self.register_parameter("identity", None)
        else:
            self.obs_dim = obs_dim
            self.groups = (
                [[i] for i in range(obs_dim)] if groups is None else _check_groups(groups, obs_dim)
            )
            g, s = len(self.groups), max(len(grp) for grp in self.groups)
            index = torch.full((g, s), obs_dim, dtype=torch.long)  # obs_dim = the zero column
            for k, grp in enumerate(self.groups):
                index[k, : len(grp)] = torch.tensor(grp)
            self.register_buffer("group_index", index, persistent=False)  # (G, S)
            self.value_weight = nn.Parameter(torch.empty(g, s, dim))  # (G, S, D)
            self.identity = nn.Parameter(torch.empty(g, dim))  # (G, D)
        self.encoder = GraphTransformer(
            num_layers,
            dim,
            num_heads,
            dim_feedforward=dim_feedforward or 4 * dim,
            dropout=dropout,
            backend=backend,
        )
        self.critic = nn.Linear(dim, 1)
        n_out = self.num_actions or self.action_dim
        self.actor = nn.Linear(dim, n_out) if n_out else None
        if self.action_dim is not None:
            self.action_log_std = nn.Parameter(torch.zeros(self.action_dim))
        else:
            self.register_parameter("action_log_std", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Value projections uniform in ``+-1/sqrt(group size)`` (``nn.Linear``'s rule),
        identity embeddings normal(0, 0.02) (a space's nodes: see :meth:`from_space`); heads
        orthogonal with gain 1 (critic) and 0.01 (actor), zero biases, as in common PPO
        implementations; log-std 0."""
        if self.value_weight is not None:
            with torch.no_grad():
                self.value_weight.zero_()
                for k, grp in enumerate(self.groups):
                    bound = 1.0 / math.sqrt(len(grp))
                    self.value_weight[k, : len(grp)].uniform_(-bound, bound)
            nn.init.normal_(self.identity, std=0.02)
        if self.entity_proj is not None:
            self.entity_proj.reset_parameters()
        if self.space_nodes is not None:
            self.space_nodes.reset_parameters()
        nn.init.orthogonal_(self.critic.weight, gain=1.0)
        nn.init.zeros_(self.critic.bias)
        if self.actor is not None:
            nn.init.orthogonal_(self.actor.weight, gain=0.01)
            nn.init.zeros_(self.actor.bias)
        if self.action_log_std is not None:
            nn.init.zeros_(self.action_log_std)

    @classmethod
    def from_space(
        cls,
        observation_space: spaces.Space,
        action_space: spaces.Space | None = None,
        *,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        **kwargs: Any,
    ) -> RLStateEncoder:
        """Build from ``gymnasium`` spaces: one node per feature or per group.

        =====================================  =============================================
        observation space                      nodes
        =====================================  =============================================
        ``Box`` ``(n,)``                       one per scalar, ``W_i x_i + e_i`` (a vector:
                                               ``obs_dim = n``, ``groups`` apply); ``()``: one
        ``Box`` ``(N, F)``                     one per entity, ``Linear(F, D)`` (an
                                               :class:`EntitySpec`; no positions)
        image: 3-D ``uint8`` ``Box``,          patches of a :class:`~modalities.PatchAdapter`
        ``(C, H, W)`` or ``(H, W, C)``         (at most 8 x 8, 2-D sin-cos positions); ``C``
        (the smallest axis is ``C``)           other than 1 or 3 (stacked frames): each
                                               channel a grey image plus a channel embedding
        other ``Box`` of rank >= 3             one per cell of the leading axes,
                                               ``Linear(F, D) + e_cell`` (``F``: last axis)
        ``Discrete``                           one, an embedding of the value
        ``MultiDiscrete``                      one per component, each its own embedding table
        ``MultiBinary``                        one per bit, ``W_i b_i + e_i``
        ``Dict``, ``Tuple`` (nested)           the nodes of every leaf space in order, plus a
                                               learned type embedding of the leaf (its path)
        =====================================  =============================================

        Images go through :class:`~modalities.PatchAdapter`, not the CNN adapter: a linear
        patch projection with no BatchNorm gives each observation the same nodes whatever
        the batch (rollouts of one step and minibatches agree), needs no torchvision, and
        pads small images (MiniGrid's 7 x 7) instead of shrinking them to one cell. ``uint8``
        pixels are scaled to ``[0, 1]``; float images are taken as already scaled (as
        stable-baselines3 passes them).

        A ``Discrete`` action space gives ``num_actions``, a 1-D ``Box`` gives ``action_dim``;
        ``None`` builds no actor. Other keyword arguments go to the constructor.

        Raises:
            TypeError: a space of another kind (``Text``, ``Graph``, ``Sequence``, ...), named
                with its path (``observation_space['goal']``).

        Example:
            >>> from gymnasium import spaces
            >>> space = spaces.Dict({"pos": spaces.Box(-1, 1, (2,)), "key": spaces.Discrete(3)})
            >>> enc = RLStateEncoder.from_space(space, spaces.Discrete(4), dim=16, num_heads=2)
            >>> enc({"pos": [0.5, -0.5], "key": 2}).logits.shape  # one unbatched observation
            torch.Size([4])
            >>> enc.embed({"pos": [[0.5, -0.5]], "key": [2]})[0].shape  # 2 + 1 nodes
            torch.Size([1, 3, 16])
        """
        from gymnasium import spaces

        if not isinstance(observation_space, spaces.Space):
            raise arg_error(
                TypeError,
                "observation_space",
                "a gymnasium space (Box, Discrete, MultiDiscrete, MultiBinary, Dict or Tuple)",
                observation_space,
            )
        shape = observation_space.shape
        obs: int | EntitySpec | spaces.Space = observation_space
        if isinstance(observation_space, spaces.Box) and len(shape) == 1:
            obs = int(shape[0])
        elif isinstance(observation_space, spaces.Box) and len(shape) == 2:
            obs = EntitySpec(int(shape[1]), max_entities=int(shape[0]))
        if action_space is None:
            actions: dict[str, int] = {}
        elif isinstance(action_space, spaces.Discrete):
            actions = {"num_actions": int(action_space.n)}
        elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
            actions = {"action_dim": int(action_space.shape[0])}
        else:
            raise arg_error(
                TypeError, "action_space", "a gymnasium Discrete or 1-D Box, or None", action_space
            )
        return cls(obs, dim, num_layers, num_heads, **actions, **kwargs)

    def embed(self, obs: Observation, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Observation -> nodes and their mask, before the transformer.

        The features of padded entities are replaced by zeros before the projection
        (:func:`torch.where`), so NaN or inf in a padded entity never reaches a real output.

        Shapes:
            - obs: ``(B, obs_dim)``, ``(B, N, F)`` or a batch shaped like the space; returns
              ``(B, N, D)``, ``(B, N)``.
        """
        if self.space_nodes is not None:
            if mask is not None:
                raise ValueError("mask applies to EntitySpec observations only")
            x = self.space_nodes(obs)  # (B, N, D)
            return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        ref = self.critic.weight
        obs = numeric_tensor("obs", obs, ref.device)
        if not obs.is_floating_point():
            obs = obs.float()
        obs = obs.to(ref.dtype)
        if self.obs_dim is not None:
            if mask is not None:
                raise ValueError("mask applies to entity observations only")
            if obs.dim() != 2 or obs.shape[1] != self.obs_dim:
                raise ValueError(
                    f"obs must have shape (B, obs_dim={self.obs_dim}), got {tuple(obs.shape)}"
                    + (" (add a batch dimension with obs[None])" if obs.dim() == 1 else "")
                )
            padded = torch.cat([obs, obs.new_zeros(obs.shape[0], 1)], dim=1)  # (B, obs_dim+1)
            grouped = padded[:, self.group_index]  # (B, G, S)
            x = torch.einsum("bgs,gsd->bgd", grouped, self.value_weight) + self.identity
            return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        spec = self.entity_spec
        if obs.dim() != 3 or obs.shape[2] != spec.feature_dim:
            raise ValueError(
                f"obs must have shape (B, N, F={spec.feature_dim}), got {tuple(obs.shape)}"
            )
        if spec.max_entities is not None and obs.shape[1] > spec.max_entities:
            raise ValueError(
                f"obs has N={obs.shape[1]} entities > max_entities={spec.max_entities}"
            )
        if mask is None:
            mask = torch.ones(obs.shape[:2], dtype=torch.bool, device=obs.device)
            return self.entity_proj(obs), mask  # (B, N, D), (B, N)
        check_mask("mask", mask, tuple(obs.shape[:2]))
        obs = torch.where(mask[..., None], obs, obs.new_zeros(()))  # (B, N, F): padding -> 0
        return self.entity_proj(obs), mask  # (B, N, D), (B, N)

    def _encode(
        self, obs: Observation, mask: Tensor | None, need_weights: bool
    ) -> tuple[Tensor, Tensor, list[AttentionWeights] | None, bool]:
        """Embedding ``(B, D)``, nodes ``(B, N, D)``, attentions, and whether ``obs`` was one
        unbatched observation (then ``B = 1``)."""
        if self.space_nodes is not None:
            unbatched = self.space_nodes.is_unbatched(obs)
        else:
            unbatched = array_ndim(obs) == (1 if self.obs_dim is not None else 2)
        if unbatched:  # one observation, as env.reset() and env.step() give it
            if self.space_nodes is not None:
                obs = self.space_nodes.add_batch(obs)
            else:
                obs = obs[None] if isinstance(obs, Tensor) else np.asarray(obs)[None]
            mask = None if mask is None else mask[None]
        x, mask = self.embed(obs, mask)  # (B, N, D), (B, N)
        kpm = None if bool(mask.all()) else ~mask
        if need_weights:
            res = self.encoder.forward_with_weights(x, key_padding_mask=kpm)
            nodes, attentions = res.out, res.attentions
        else:
            nodes, attentions = self.encoder(x, key_padding_mask=kpm), None
        emb = masked_mean(nodes, mask)  # (B, D): mean over real nodes
        return emb, nodes, attentions, unbatched

    def forward_features(self, obs: Observation, mask: Tensor | None = None) -> Tensor:
        """The pooled state embedding alone, without the heads (what a features extractor
        such as :class:`modalities.sb3.GraphFeaturesExtractor` needs).

        Shapes:
            - obs and mask: as :meth:`forward`; returns ``(B, D)`` (``(D,)`` unbatched).
        """
        emb, _, _, unbatched = self._encode(obs, mask, need_weights=False)
        return emb[0] if unbatched else emb

    def forward(
        self,
        obs: Observation,
        mask: Tensor | None = None,
        *,
        need_weights: bool = False,
        return_attention: bool | None = None,
    ) -> RLOutput:
        """Encode observations and evaluate the heads.

        Args:
            obs: vector ``(B, obs_dim)`` or entities ``(B, N, F)`` (tensor or array), or a
                batch shaped like the space (a dict of arrays for a ``Dict``, a tuple for a
                ``Tuple``); one unbatched observation (``(obs_dim,)``, ``(N, F)``, a dict of
                unbatched arrays, as ``env.reset()`` gives) is accepted too, and the outputs
                then have no batch dimension either.
            mask: entities only: ``(B, N)`` bool (``(N,)`` unbatched), True = real entity.
            need_weights: also return each layer's attention weights (with a batch of one
                for an unbatched observation).
            return_attention: the old name of ``need_weights`` (deprecated).

        Shapes:
            - returns :class:`RLOutput` with embedding ``(B, D)`` and value ``(B,)`` (``(D,)``
              and ``()`` unbatched).
        """
        if return_attention is not None:
            warnings.warn(
                "return_attention= is now called need_weights= (one word per concept); the "
                "old name will be removed",
                FutureWarning,
                stacklevel=2,
            )
            need_weights = return_attention
        emb, nodes, attentions, unbatched = self._encode(obs, mask, need_weights)
        out = RLOutput(
            embedding=emb,
            value=self.critic(emb).squeeze(-1),  # (B,)
            nodes=nodes,
            attentions=attentions,
        )
        if self.num_actions is not None:
            out.logits = self.actor(emb)  # (B, A)
        elif self.action_dim is not None:
            out.action_mean = self.actor(emb)  # (B, A)
            out.action_log_std = self.action_log_std  # (A,)
        if unbatched:
            for name in ("embedding", "value", "logits", "action_mean", "nodes"):
                value = getattr(out, name)
                if value is not None:
                    setattr(out, name, value[0])
        return out

    def extra_repr(self) -> str:
        if self.obs_dim is not None:
            kind = f"obs_dim={self.obs_dim}, nodes={len(self.groups)}"
        elif self.space_nodes is not None:
            kind = f"space={type(self.observation_space).__name__}"
            kind += f", nodes={self.space_nodes.num_nodes}"
        else:
            kind = f"entity_features={self.entity_spec.feature_dim}"
        head = (
            f"num_actions={self.num_actions}"
            if self.num_actions
            else f"action_dim={self.action_dim}"
        )
        return f"{kind}, dim={self.dim}, {head}"


def _is_space(obs: object) -> bool:
    """Whether ``obs`` is a gymnasium space (without importing gymnasium: a space exists only
    once gymnasium is imported)."""
    gym = sys.modules.get("gymnasium")
    return gym is not None and isinstance(obs, gym.spaces.Space)

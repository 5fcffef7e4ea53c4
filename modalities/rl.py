"""Reinforcement-learning observations as nodes: ``RLStateEncoder``.

Two kinds of observation:

- a **vector** ``(B, obs_dim)``: each feature, or each group of features, becomes a node:
  ``node_g = W_g x[group_g] + e_g`` with a learned value projection ``W_g`` and a learned
  identity embedding ``e_g`` (so attention can tell "cart velocity" from "pole angle");
- a **set of entities** ``(B, N, F)`` with a mask ``(B, N)``: each entity is a node
  (``Linear(F, D)``); no positions, so the encoder is permutation invariant.

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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from graphattn import AttentionWeights, GraphTransformer

from ._common import (
    arg_error,
    check_float,
    check_int,
    check_mask,
    check_sequence,
    masked_mean,
)

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
        obs: ``obs_dim`` (int) for vector observations, or an :class:`EntitySpec`.
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

    Shapes:
        - obs: ``(B, obs_dim)``, or ``(B, N, F)`` with mask ``(B, N)`` bool (True = real)
        - returns :class:`RLOutput`

    Example:
        >>> enc = RLStateEncoder(4, dim=16, num_layers=1, num_heads=2, num_actions=2)
        >>> out = enc(torch.randn(3, 4))
        >>> out.logits.shape, out.value.shape
        (torch.Size([3, 2]), torch.Size([3]))
    """

    def __init__(
        self,
        obs: int | EntitySpec,
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
    ) -> None:
        super().__init__()
        if isinstance(obs, EntitySpec):
            obs_dim = None
        elif isinstance(obs, bool) or not isinstance(obs, numbers.Integral):
            raise arg_error(TypeError, "obs", "an int (obs_dim) or an EntitySpec", obs)
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
        if obs_dim is None:
            if groups is not None:
                raise ValueError("groups apply to vector observations, not to an EntitySpec")
            self.entity_spec: EntitySpec | None = obs
            self.obs_dim: int | None = None
            self.entity_proj: nn.Linear | None = nn.Linear(obs.feature_dim, dim)
            self.groups: list[list[int]] | None = None
            self.register_parameter("value_weight", None)
            self.register_parameter("identity", None)
        else:
            self.obs_dim = obs_dim
            self.entity_spec = None
            self.entity_proj = None
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
        identity embeddings normal(0, 0.02); heads orthogonal with gain 1 (critic) and
        0.01 (actor), zero biases, as in common PPO implementations; log-std 0."""
        if self.value_weight is not None:
            with torch.no_grad():
                self.value_weight.zero_()
                for k, grp in enumerate(self.groups):
                    bound = 1.0 / math.sqrt(len(grp))
                    self.value_weight[k, : len(grp)].uniform_(-bound, bound)
            nn.init.normal_(self.identity, std=0.02)
        if self.entity_proj is not None:
            self.entity_proj.reset_parameters()
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
        observation_space: Any,
        action_space: Any = None,
        *,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        **kwargs: Any,
    ) -> RLStateEncoder:
        """Build from ``gymnasium`` spaces.

        A 1-D ``Box`` observation is a vector (``obs_dim = shape[0]``); a 2-D ``Box``
        ``(N, F)`` is a set of ``N`` entities with ``F`` features. A ``Discrete`` action
        space gives ``num_actions``, a 1-D ``Box`` gives ``action_dim``; ``None`` builds no
        actor. Other keyword arguments go to the constructor.
        """
        from gymnasium import spaces

        if not isinstance(observation_space, spaces.Box):
            raise arg_error(
                TypeError,
                "observation_space",
                "a gymnasium Box (1-D vector or 2-D entities)",
                observation_space,
            )
        shape = observation_space.shape
        if len(shape) == 1:
            obs: int | EntitySpec = int(shape[0])
        elif len(shape) == 2:
            obs = EntitySpec(int(shape[1]), max_entities=int(shape[0]))
        else:
            raise ValueError(
                f"observation_space must be 1-D (vector) or 2-D (entities), got shape {shape}; "
                "use an image adapter for images"
            )
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

    def embed(self, obs: Tensor | np.ndarray, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Observation -> nodes and their mask, before the transformer.

        The features of padded entities are replaced by zeros before the projection
        (:func:`torch.where`), so NaN or inf in a padded entity never reaches a real output.

        Shapes:
            - obs: ``(B, obs_dim)`` or ``(B, N, F)``; returns ``(B, N, D)``, ``(B, N)``.
        """
        ref = self.critic.weight
        what = "a tensor or array of numbers"
        if not isinstance(obs, Tensor):
            try:
                array = np.asarray(obs)
            except (TypeError, ValueError):  # ragged nested lists
                raise arg_error(TypeError, "obs", what, obs) from None
            if array.dtype.kind not in "biuf":
                raise arg_error(TypeError, "obs", what, obs)
            obs = torch.as_tensor(array, device=ref.device)
        if obs.is_complex():
            raise arg_error(TypeError, "obs", what, obs)
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

    def forward(
        self,
        obs: Tensor | np.ndarray,
        mask: Tensor | None = None,
        *,
        need_weights: bool = False,
        return_attention: bool | None = None,
    ) -> RLOutput:
        """Encode observations and evaluate the heads.

        Args:
            obs: vector ``(B, obs_dim)`` or entities ``(B, N, F)`` (tensor or array); one
                unbatched observation (``(obs_dim,)``, ``(N, F)``, as ``env.reset()`` gives)
                is accepted too, and the outputs then have no batch dimension either.
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
        unbatched = _ndim(obs) == (1 if self.obs_dim is not None else 2)
        if unbatched:  # one observation, as env.reset() and env.step() give it
            obs = obs[None] if isinstance(obs, Tensor) else np.asarray(obs)[None]
            mask = None if mask is None else mask[None]
        x, mask = self.embed(obs, mask)  # (B, N, D), (B, N)
        kpm = None if bool(mask.all()) else ~mask
        res = self.encoder(x, key_padding_mask=kpm, need_weights=need_weights)
        nodes, attentions = (res.out, res.attentions) if need_weights else (res, None)
        emb = masked_mean(nodes, mask)  # (B, D): mean over real nodes
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
        kind = (
            f"obs_dim={self.obs_dim}, nodes={len(self.groups)}"
            if self.obs_dim is not None
            else f"entity_features={self.entity_spec.feature_dim}"
        )
        head = (
            f"num_actions={self.num_actions}"
            if self.num_actions
            else f"action_dim={self.action_dim}"
        )
        return f"{kind}, dim={self.dim}, {head}"


def _ndim(obs: object) -> int | None:
    """The number of dimensions of a tensor, array or nested list (``None`` if ragged or not
    an array at all: :meth:`RLStateEncoder.embed` then names the problem)."""
    if isinstance(obs, Tensor):
        return obs.dim()
    try:
        return np.ndim(obs)
    except (TypeError, ValueError):
        return None

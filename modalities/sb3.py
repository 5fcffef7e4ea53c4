"""A stable-baselines3 features extractor over graph attention: ``GraphFeaturesExtractor``.

It wraps an :class:`~modalities.RLStateEncoder` built with
:meth:`~modalities.RLStateEncoder.from_space` (one node per feature or group of the
observation space, a graph transformer, mean pooling) and gives its pooled state embedding
to the policy's own actor and critic heads::

    from stable_baselines3 import PPO
    from modalities.sb3 import GraphFeaturesExtractor

    policy_kwargs = {
        "features_extractor_class": GraphFeaturesExtractor,
        "features_extractor_kwargs": {"dim": 32, "num_layers": 1, "num_heads": 2},
    }
    PPO("MlpPolicy", "CartPole-v1", policy_kwargs=policy_kwargs)  # "MultiInputPolicy": Dict

This module imports stable-baselines3 (the ``[sb3]`` extra: ``pip install "graphattn[sb3]"``);
``import modalities`` never imports it, so import the extractor from here.

Axis legend: ``B`` batch, ``D`` embedding size (the extractor's ``features_dim``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from ._common import check_int, short_repr
from .rl import RLStateEncoder

try:
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        'modalities.sb3 needs stable-baselines3: pip install "graphattn[sb3]" '
        "(or pip install stable-baselines3)"
    ) from err

__all__ = ["GraphFeaturesExtractor"]


def _undo_one_hot(obs: Any, space: spaces.Space) -> Any:
    """Discrete values back from the one-hot vectors of stable-baselines3's ``preprocess_obs``
    (the encoder embeds each value itself); every other leaf passes as it is.

    Shapes:
        - ``Discrete(n)``: ``(B, n)`` or ``(B, 1, n)`` -> ``(B,)``;
          ``MultiDiscrete(nvec)``: ``(B, sum(nvec))`` -> ``(B, *nvec.shape)``.
    """
    if isinstance(space, spaces.Dict):
        return {key: _undo_one_hot(obs[key], sub) for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(_undo_one_hot(o, sub) for o, sub in zip(obs, space.spaces, strict=True))
    if isinstance(space, spaces.Discrete):
        b = obs.shape[0]
        return obs.reshape(b, -1, int(space.n)).argmax(-1).reshape(b)  # (B,)
    if isinstance(space, spaces.MultiDiscrete):
        b = obs.shape[0]
        sizes = [int(n) for n in np.asarray(space.nvec).reshape(-1)]
        parts = torch.split(obs.reshape(b, -1), sizes, dim=1)  # each (B, n_k)
        values = torch.stack([p.argmax(-1) for p in parts], dim=1)  # (B, len(nvec))
        return values.reshape(b, *space.shape)
    return obs


class GraphFeaturesExtractor(BaseFeaturesExtractor):
    """stable-baselines3 features extractor: an :class:`~modalities.RLStateEncoder` without
    heads, for ``policy_kwargs={"features_extractor_class": GraphFeaturesExtractor}``.

    It takes the observations as the policy hands them over (after stable-baselines3's
    ``preprocess_obs``: ``Discrete`` and ``MultiDiscrete`` values one-hot encoded, which it
    undoes; images scaled to ``[0, 1]``, so keep the policy's default
    ``normalize_images=True``). ``Box``, ``Discrete``, ``MultiDiscrete``, ``MultiBinary`` and
    ``Dict`` spaces work (stable-baselines3 has no ``Tuple`` observations); the encoder's
    critic head is built but unused (the policy has its own heads).

    Args:
        observation_space: the environment's observation space (stable-baselines3 passes it).
        dim: embedding size ``D``, the extractor's ``features_dim``.
        num_layers: transformer layers.
        num_heads: attention heads (must divide ``dim``).
        **kwargs: the other :class:`~modalities.RLStateEncoder` arguments (``groups``,
            ``dim_feedforward``, ``dropout``, ``backend``, ``patch_size``); not the heads'.

    Shapes:
        - observations: ``(B, ...)`` tensors, or a dict of them for a ``Dict`` space;
          returns ``(B, D)``.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        **kwargs: Any,
    ) -> None:
        dim = check_int("dim", dim)
        heads = sorted({"num_actions", "action_dim"} & set(kwargs))
        if heads:
            raise ValueError(
                f"{heads[0]} does not apply: the policy has its own heads; got "
                f"{heads[0]}={short_repr(kwargs[heads[0]])}"
            )
        super().__init__(observation_space, features_dim=dim)
        self.encoder = RLStateEncoder.from_space(
            observation_space, None, dim=dim, num_layers=num_layers, num_heads=num_heads, **kwargs
        )

    def forward(self, observations: Tensor | dict[str, Tensor]) -> Tensor:
        """Pooled state embeddings of a batch of preprocessed observations.

        Shapes:
            - observations: ``(B, ...)`` (a dict of them for a ``Dict`` space); returns
              ``(B, D)``.
        """
        obs = _undo_one_hot(observations, self._observation_space)
        return self.encoder.forward_features(obs)  # (B, D)

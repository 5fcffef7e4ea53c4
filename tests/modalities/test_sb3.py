"""GraphFeaturesExtractor: PPO trains with it on Box and Dict spaces; ``import modalities``
never imports stable-baselines3."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
MISSING = "stable-baselines3 is not installed"


def sb3() -> Any:
    """The ``stable_baselines3`` package, or a skip with the reason CI reports."""
    pytest.importorskip("gymnasium", reason="gymnasium is in the dev/examples extras")
    return pytest.importorskip("stable_baselines3", reason=MISSING)


def extractor_kwargs() -> dict[str, Any]:
    from modalities.sb3 import GraphFeaturesExtractor

    return {
        "features_extractor_class": GraphFeaturesExtractor,
        "features_extractor_kwargs": {"dim": 16, "num_layers": 1, "num_heads": 2},
    }


def test_importing_modalities_imports_neither_gymnasium_nor_sb3() -> None:
    code = (
        "import sys, modalities; "
        "print(sorted(m for m in ('gymnasium', 'stable_baselines3') if m in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert run.stdout.strip() == "[]", run.stdout + run.stderr


def test_without_sb3_the_import_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gymnasium", reason="gymnasium is in the dev/examples extras")
    for name in ("stable_baselines3", "stable_baselines3.common.torch_layers"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: ImportError
    monkeypatch.delitem(sys.modules, "modalities.sb3", raising=False)
    with pytest.raises(
        ImportError, match=r'needs stable-baselines3: pip install "graphattn\[sb3\]"'
    ):
        importlib.import_module("modalities.sb3")


def test_ppo_trains_on_cartpole_with_the_extractor(one_thread: None) -> None:
    """2048 steps of PPO on CartPole-v1 (about 3 s): the policy's features are ours."""
    stable_baselines3 = sb3()
    from modalities.sb3 import GraphFeaturesExtractor

    model = stable_baselines3.PPO(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=512,
        batch_size=128,
        n_epochs=2,
        seed=0,
        device="cpu",
        policy_kwargs=extractor_kwargs(),
    )
    policy = model.policy
    extractor = policy.features_extractor
    assert isinstance(extractor, GraphFeaturesExtractor) and extractor.features_dim == 16
    assert policy.pi_features_extractor is extractor is policy.vf_features_extractor
    before = {k: v.clone() for k, v in extractor.state_dict().items()}
    model.learn(2048)
    assert model.num_timesteps == 2048
    moved = [k for k, v in extractor.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.encoder.") for k in moved), moved  # it was trained
    obs = model.get_env().reset()  # (n_envs, 4)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (1,)
    obs_t = torch.as_tensor(obs)
    with torch.no_grad():
        torch.testing.assert_close(
            policy.extract_features(obs_t, extractor), extractor.encoder.forward_features(obs_t)
        )


def _dict_env() -> Any:
    gym = pytest.importorskip("gymnasium")
    s = gym.spaces

    class DictEnv(gym.Env):
        """Eight steps; the reward is 1 when the action equals ``key % 2``."""

        observation_space = s.Dict(
            {
                "pos": s.Box(-1.0, 1.0, (2,)),
                "key": s.Discrete(3),
                "doors": s.MultiDiscrete([2, 3]),
                "bits": s.MultiBinary(3),
                "view": s.Box(0, 255, (5, 5, 3), np.uint8),  # channels last: SB3 transposes
            }
        )
        action_space = s.Discrete(2)

        def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Any, dict]:
            super().reset(seed=seed)
            self.observation_space.seed(seed)
            self.steps = 0
            self.obs = self.observation_space.sample()
            return self.obs, {}

        def step(self, action: int) -> tuple[Any, float, bool, bool, dict]:
            reward = float(action == self.obs["key"] % 2)
            self.steps += 1
            self.obs = self.observation_space.sample()
            return self.obs, reward, self.steps >= 8, False, {}

    return DictEnv()


def test_ppo_on_a_dict_space_and_one_hot_undone(one_thread: None) -> None:
    stable_baselines3 = sb3()
    from stable_baselines3.common.preprocessing import preprocess_obs

    model = stable_baselines3.PPO(
        "MultiInputPolicy",
        _dict_env(),
        n_steps=32,
        batch_size=16,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs=extractor_kwargs(),
    )
    model.learn(64)
    extractor = model.policy.features_extractor
    space = extractor._observation_space
    assert space["view"].shape == (3, 5, 5)  # SB3 handed the transposed space over
    assert extractor.encoder.space_nodes.num_nodes == 2 + 1 + 2 + 3 + 25
    space.seed(1)
    raw = [space.sample() for _ in range(4)]
    batch = {k: torch.as_tensor(np.stack([x[k] for x in raw])) for k in space.spaces}
    with torch.no_grad():
        ours = extractor(preprocess_obs(batch, space))  # one-hot Discrete, images / 255
        ref = extractor.encoder.forward_features(batch)  # raw values, uint8 images
    assert ours.shape == (4, 16)
    torch.testing.assert_close(ours, ref)


def test_extractor_arguments() -> None:
    sb3()
    from gymnasium import spaces

    from modalities.sb3 import GraphFeaturesExtractor

    box = spaces.Box(-1.0, 1.0, (4,))
    ext = GraphFeaturesExtractor(box, dim=8, num_layers=1, num_heads=2, groups=[[0, 1], [2, 3]])
    assert ext.features_dim == 8 and ext(torch.zeros(5, 4)).shape == (5, 8)
    with pytest.raises(ValueError, match="num_actions does not apply: the policy has its own"):
        GraphFeaturesExtractor(box, num_actions=2)
    with pytest.raises(TypeError, match="dim must be an int, got '8'"):
        GraphFeaturesExtractor(box, dim="8")
    with pytest.raises(TypeError, match=r"observation_space must be a gymnasium Box, .*Text"):
        GraphFeaturesExtractor(spaces.Text(4))

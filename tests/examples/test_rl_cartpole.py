"""Smoke test of ``examples.rl_cartpole``: a few PPO updates on the real CartPole-v1."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("matplotlib")

from examples.rl_cartpole import CartPoleConfig, build_policy, gae, run, train_seed  # noqa: E402
from examples.training import load_checkpoint  # noqa: E402


def test_gae_bootstraps_only_across_non_terminal_steps():
    """One env, three steps, the episode ends after step 1: no value flows across it."""
    gamma, lam = 0.9, 0.5
    rewards = torch.tensor([[1.0], [2.0], [3.0]])  # (T, E)
    values = torch.tensor([[0.5], [1.0], [2.0]])  # (T, E)
    ends = torch.tensor([[0.0], [1.0], [0.0]])  # (T, E)
    last_value = torch.tensor([4.0])  # (E,)
    adv, ret = gae(rewards, values, ends, last_value, gamma, lam)
    d2 = 3.0 + gamma * 4.0 - 2.0  # step 2 bootstraps from the value after the rollout
    d1 = 2.0 - 1.0  # the episode ended at step 1: no bootstrap
    d0 = 1.0 + gamma * 1.0 - 0.5
    expected = torch.tensor([[d0 + gamma * lam * d1], [d1], [d2]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)


@pytest.mark.usefixtures("one_thread")
def test_rl_cartpole_learns_and_writes(tmp_path):
    cfg = CartPoleConfig(
        seeds=1,
        total_steps=6 * 1024,  # 6 PPO updates of 8 envs x 128 steps
        check_every=3 * 1024,
        check_episodes=5,
        eval_episodes=10,
        out_dir=str(tmp_path / "runs"),
        results=str(tmp_path / "rl_cartpole.json"),
        progress=False,
        threads=1,  # small tensors: one thread is fastest
    )
    result = run(cfg)
    (r,) = result["runs"]
    assert r["updates"] == 6 and r["env_steps"] == 6 * 1024
    for point in r["curve"]:
        assert all(
            torch.isfinite(torch.tensor(point[k]))
            for k in ("policy_loss", "value_loss", "entropy", "approx_kl")
        ), point
    # seed 0's untrained greedy policy pushes one way and falls in ~10 steps; 6 updates of
    # PPO must at least triple its return (it reaches ~100-200 here)
    assert r["untrained_check_return"] < 30, r["untrained_check_return"]
    assert r["final_eval_return"] > 3 * r["untrained_check_return"], r["final_eval_return"]
    # the sampled-action training episodes got longer too
    first, last = r["curve"][0]["train_return"], r["curve"][-1]["train_return"]
    assert last > first, (first, last)
    saved = json.loads((tmp_path / "rl_cartpole.json").read_text())
    assert saved["runs"][0]["final_eval_return"] == r["final_eval_return"]
    assert set(saved["summary"]["mean_attention_last_layer"]) == {
        "cart position",
        "cart velocity",
        "pole angle",
        "pole ang. velocity",
    }
    for name in ("learning_curve.png", "attention_episode.png"):
        png = tmp_path / "runs" / name
        assert png.is_file() and png.stat().st_size > 0, name
    state = load_checkpoint(tmp_path / "runs" / "seed0" / "policy.pt")
    policy = build_policy(cfg)
    policy.load_state_dict(state["model"])  # the checkpoint restores the trained policy


@pytest.mark.usefixtures("one_thread")
def test_rl_cartpole_is_reproducible():
    """The same seed gives the same run (envs, sampling and minibatches are all seeded)."""
    cfg = CartPoleConfig(
        total_steps=2 * 512,  # 2 PPO updates of 4 envs x 128 steps
        num_envs=4,
        check_every=1024,
        check_episodes=2,
        eval_episodes=2,
        progress=False,
    )
    (a, policy_a), (b, policy_b) = train_seed(3, cfg), train_seed(3, cfg)
    assert a["curve"] == b["curve"]
    for (name, pa), pb in zip(
        policy_a.state_dict().items(), policy_b.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name

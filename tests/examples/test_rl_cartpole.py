"""Smoke tests of ``examples.rl_cartpole`` and ``examples.rl_acrobot``: a few PPO updates on
the real CartPole-v1 and Acrobot-v1, and the exact steps-to-solve rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("matplotlib")

from examples.rl_acrobot import AcrobotConfig  # noqa: E402
from examples.rl_cartpole import (  # noqa: E402
    CartPoleConfig,
    RunningNorm,
    build_policy,
    evaluate,
    gae,
    run,
    train_seed,
)
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


def test_running_norm_matches_the_statistics_of_all_batches(gen):
    x = torch.randn(300, 3, generator=gen) * torch.tensor([1.0, 5.0, 30.0]) + 2.0  # (B, N)
    norm = RunningNorm(3, clip=100.0)
    for part in x.split([1, 99, 200]):
        norm.update(part)
    torch.testing.assert_close(norm.mean, x.mean(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(norm.var, x.var(0, unbiased=False), rtol=1e-4, atol=1e-4)
    z = norm(x)  # (B, N): each variable now has mean 0 and variance 1
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-3, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    assert RunningNorm(1, clip=10.0)(torch.tensor([[1e6]])).item() == 10.0  # clipped


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    ("cfg", "targets"),
    [(CartPoleConfig(), (20.0, 60.0, 475.0)), (AcrobotConfig(), (-100.0, -499.0))],
    ids=["CartPole", "Acrobot"],
)
def test_an_evaluation_stops_only_when_the_target_is_out_of_reach(cfg, targets):
    """Stopping early decides exactly as the full evaluation would: a stopped evaluation's
    full mean is below the target (and below the bound it reports); a complete one is the
    full evaluation."""
    seeds = list(range(4))
    for init in range(2):
        torch.manual_seed(init)
        policy = build_policy(cfg)  # untrained: returns differ from seed to seed
        full = evaluate(policy, cfg.ENV, seeds)
        assert full.complete and full.best_mean == pytest.approx(np.mean(full.returns))
        for target in targets:
            ev = evaluate(policy, cfg.ENV, seeds, target=target)
            assert ev.reaches(target) == full.reaches(target) == (full.best_mean >= target)
            if ev.complete:
                assert ev.returns == full.returns
            else:
                assert full.best_mean <= ev.best_mean < target


@pytest.mark.usefixtures("one_thread")
def test_steps_to_solve_is_the_step_of_the_first_policy_that_reaches_the_target():
    """Every policy is evaluated, so steps to solve is exact: the env steps behind the first
    policy whose evaluation reaches the target, not rounded up to any check interval."""
    cfg = CartPoleConfig(
        total_steps=4 * 256,  # 4 updates of 8 envs x 32 steps
        eval_episodes=5,
        target_return=40.0,  # reached after a few updates
        stop_when_solved=False,
        progress=False,
    )
    r, _ = train_seed(0, cfg)
    assert len(r["curve"]) == 4 and all("eval_best_mean" in p for p in r["curve"])
    reached = [p["step"] for p in r["curve"] if p["eval_complete"] and p["eval_best_mean"] >= 40]
    assert reached, "the test needs a run that reaches its target"
    assert r["steps_to_solve"] == reached[0]
    assert r["steps_to_solve"] % cfg.batch_size == 0  # the policy changes once per rollout
    # stopping at the first solved evaluation gives the same figure and stops there
    stopped, _ = train_seed(0, CartPoleConfig(**{**cfg.__dict__, "stop_when_solved": True}))
    assert stopped["steps_to_solve"] == stopped["env_steps"] == reached[0]
    assert stopped["final_eval_return"] >= 40


@pytest.mark.usefixtures("one_thread")
def test_rl_cartpole_learns_and_writes(tmp_path):
    cfg = CartPoleConfig(
        seeds=1,
        total_steps=6 * 256,  # 6 PPO updates of 8 envs x 32 steps
        eval_episodes=10,
        out_dir=str(tmp_path / "runs"),
        results=str(tmp_path / "rl_cartpole.json"),
        progress=False,
        threads=1,  # small tensors: one thread is fastest
    )
    result = run(cfg)
    (r,) = result["runs"]
    assert r["updates"] == 6 and r["env_steps"] == 6 * 256
    for point in r["curve"]:
        assert all(
            torch.isfinite(torch.tensor(point[k]))
            for k in ("policy_loss", "value_loss", "entropy", "approx_kl")
        ), point
    # seed 0's untrained greedy policy falls in ~10 steps; 6 updates of PPO must at least
    # triple its return
    assert r["untrained_return"] < 30, r["untrained_return"]
    assert r["final_eval_return"] > 3 * r["untrained_return"], r["final_eval_return"]
    saved = json.loads((tmp_path / "rl_cartpole.json").read_text())
    assert saved["example"] == "rl_cartpole" and saved["env"] == "CartPole-v1"
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
def test_rl_acrobot_runs_and_writes(tmp_path):
    """Two updates of 4 envs x 64 steps on the real Acrobot-v1: six nodes, normalised
    observations and rewards, the JSON, pictures and checkpoint."""
    cfg = AcrobotConfig(
        seeds=1,
        total_steps=2 * 256,
        num_envs=4,
        num_steps=64,
        num_minibatches=4,
        eval_episodes=4,
        out_dir=str(tmp_path / "runs"),
        results=str(tmp_path / "rl_acrobot.json"),
        progress=False,
        threads=1,
    )
    result = run(cfg)
    (r,) = result["runs"]
    assert r["updates"] == 2 and r["env_steps"] == 512 and not r["solved"]
    assert all(np.isfinite(p["value_loss"]) and np.isfinite(p["policy_loss"]) for p in r["curve"])
    assert -500.0 <= r["final_eval_return"] <= 0.0
    saved = json.loads((tmp_path / "rl_acrobot.json").read_text())
    assert saved["example"] == "rl_acrobot" and saved["env"] == "Acrobot-v1"
    assert len(saved["summary"]["mean_attention_last_layer"]) == 6  # one node per variable
    for name in ("learning_curve.png", "attention_episode.png"):
        assert (tmp_path / "runs" / name).stat().st_size > 0, name
    state = load_checkpoint(tmp_path / "runs" / "seed0" / "policy.pt")
    policy = build_policy(cfg)
    policy.load_state_dict(state["model"])
    assert policy.norm is not None and policy.norm.count > 500  # 2 rollouts of 256 obs
    assert (policy.norm.var != 1).all()  # the statistics travel with the checkpoint


@pytest.mark.usefixtures("one_thread")
def test_rl_cartpole_is_reproducible():
    """The same seed gives the same run (envs, sampling and minibatches are all seeded)."""
    cfg = CartPoleConfig(
        total_steps=2 * 128,  # 2 PPO updates of 4 envs x 32 steps
        num_envs=4,
        eval_episodes=2,
        progress=False,
    )
    (a, policy_a), (b, policy_b) = train_seed(3, cfg), train_seed(3, cfg)
    assert a["curve"] == b["curve"]
    for (name, pa), pb in zip(
        policy_a.state_dict().items(), policy_b.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name

"""PPO on gymnasium's ``CartPole-v1`` (and, through :mod:`examples.rl_acrobot`, ``Acrobot-v1``)
with a graph-attention state encoder.

The actor-critic is one :class:`modalities.RLStateEncoder`: each observation variable (for
CartPole: cart position, cart velocity, pole angle, pole angular velocity) becomes a node
``W_i x_i + e_i``, a small ``GraphTransformer`` runs on the complete graph of the nodes, the
nodes are mean-pooled, and two linear heads give the action logits and the state value.

Training is a self-contained PPO in the design of CleanRL's ``ppo.py`` (Huang et al., 2022,
"The 37 Implementation Details of Proximal Policy Optimization"): a ``SyncVectorEnv`` of
``num_envs`` environments, rollouts of ``num_steps`` steps, GAE, the clipped surrogate
objective, an entropy bonus, several epochs of minibatch Adam with gradient clipping and
per-minibatch advantage normalisation. Time-limit truncation (both environments stop at 500
steps) is not a failure: a truncated step bootstraps from the critic's value of the final
observation, a terminated one does not. The hyperparameters are rl-baselines3-zoo's tuned PPO
settings for each environment (``hyperparams/ppo.yml``; stable-baselines3's defaults for what
it leaves out), as the comments of :class:`CartPoleConfig` and
:class:`examples.rl_acrobot.AcrobotConfig` say. Where rl-zoo normalises (``normalize: true``,
stable-baselines3's ``VecNormalize``), observations pass through a :class:`RunningNorm` inside
the policy (its statistics updated after each PPO update, from the rollout's observations,
so a rollout and its update see the same normalisation; they travel with the checkpoint), and
training rewards are divided by the running standard deviation of the discounted return.

**Steps to solve, exactly.** The policy changes only at a PPO update, and every policy is
evaluated: before training and after every update, the greedy (argmax) policy plays the same
``eval_episodes`` (100) evaluation episodes. "Steps to solve" is the number of environment
steps the agent had taken when the first policy whose 100-episode mean return reaches
``target_return`` was made, a multiple of ``num_envs * num_steps`` (the rollout), with nothing
rounded up to a check interval. An evaluation stops as soon as its mean can no longer reach
the target (the finished episodes' returns plus the most each unfinished one could still
earn, ``max_step_reward`` a step until the time limit, fall short), so failing policies cost
a few hundred steps of play and the decision is the same as that of the full 100 episodes. A
seed stops at its first solved evaluation (or at ``total_steps``). Because every policy meets
the same 100 episodes and the first to pass counts, the final policy also plays 100 other
episodes (``fresh_eval_return``), so that luck in that choice would show.

Writes ``examples/results/rl_cartpole.json`` (:mod:`examples.harness`) and, in ``--out-dir``:
the policy of every seed (``seed{s}/policy.pt``, ``examples.training.save_checkpoint``), the
learning curves (``learning_curve.png``) and the attention of the first seed's policy over the
observation variables along one evaluation episode (``attention_episode.png``).

Run: ``python -m examples.rl_cartpole [--seeds 3] [--threads 1] [--quick]`` (every field of
:class:`CartPoleConfig` is a flag: ``--help``)

Axis legend: ``T`` rollout steps, ``E`` environments, ``B`` batch, ``N`` nodes (the observation
variables), ``A`` actions.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from torch import Tensor, nn

from examples.harness import Experiment, config_dict, count_params, format_table, parse_config
from examples.training import save_checkpoint, seed_everything
from graphattn.explain import attention_rollout
from modalities import RLOutput, RLStateEncoder

RESULTS_DIR = Path(__file__).resolve().parent / "results"
EVAL_SEED_BASE = 1_000_000  # evaluation episodes never reuse a training seed
FRESH_SEED_BASE = 3_000_000  # the final policy's second opinion, on episodes never evaluated


@dataclass(frozen=True)
class EnvSpec:
    """What the example needs to know of an environment beyond its gymnasium spaces."""

    example: str  # the example's name: its results JSON, output folder and table title
    variables: tuple[str, ...]  # the observation variables, one node each
    actions: tuple[str, ...]  # what each discrete action does
    max_step_reward: float  # the largest reward of one step (bounds an unfinished episode)


ENVS = {
    "CartPole-v1": EnvSpec(
        "rl_cartpole",
        ("cart position", "cart velocity", "pole angle", "pole ang. velocity"),
        ("push left", "push right"),
        1.0,  # +1 for every step, the last included
    ),
    "Acrobot-v1": EnvSpec(
        "rl_acrobot",
        ("cos θ1", "sin θ1", "cos θ2", "sin θ2", "θ1 velocity", "θ2 velocity"),
        ("torque -1", "torque 0", "torque +1"),
        0.0,  # -1 for every step that does not reach the goal height, 0 for the one that does
    ),
}


@dataclass
class CartPoleConfig:
    """One run of the example; the defaults are the full run: rl-baselines3-zoo's tuned PPO
    for CartPole-v1 (``hyperparams/ppo.yml``: 8 envs, n_steps 32, batch_size 256, n_epochs
    20, gae_lambda 0.8, gamma 0.98, ent_coef 0, learning_rate lin_0.001, clip_range lin_0.2,
    n_timesteps 1e5; the rest stable-baselines3's PPO defaults)."""

    ENV: ClassVar[str] = "CartPole-v1"  # the gymnasium environment (a key of ENVS)

    seeds: int = 3  # seeds 0..seeds-1
    total_steps: int = 100_000  # env steps per seed (rl-zoo's n_timesteps; the annealing horizon)
    num_envs: int = 8  # parallel environments (SyncVectorEnv)
    num_steps: int = 32  # rollout length per environment: 256 transitions per update
    lr: float = 1e-3  # Adam learning rate
    anneal_lr: bool = True  # lr and clip_coef fall linearly to 0 over total_steps (rl-zoo lin_)
    gamma: float = 0.98  # discount
    gae_lambda: float = 0.8  # GAE lambda
    update_epochs: int = 20  # passes over each rollout
    num_minibatches: int = 1  # 256 transitions per minibatch (rl-zoo's batch_size)
    clip_coef: float = 0.2  # PPO ratio clip
    clip_value: bool = False  # clip the value update too (CleanRL: yes; stable-baselines3: no)
    ent_coef: float = 0.0  # entropy bonus
    vf_coef: float = 0.5  # value-loss weight (actor and critic share the encoder)
    max_grad_norm: float = 0.5  # global gradient-norm clip
    norm_obs: bool = False  # normalise observations by running statistics (rl-zoo normalize)
    norm_reward: bool = False  # divide rewards by the running std of the discounted return
    dim: int = 32  # node width D
    num_layers: int = 1  # transformer layers
    num_heads: int = 2  # attention heads
    eval_episodes: int = 100  # greedy episodes of the evaluation after every update
    target_return: float = 475.0  # CartPole-v1's reward threshold: "solved" at this mean
    stop_when_solved: bool = True  # stop a seed at its first solved evaluation
    out_dir: str = "runs/rl_cartpole"  # checkpoints and pictures
    results: str | None = str(RESULTS_DIR / "rl_cartpole.json")  # the JSON (None: in out_dir)
    threads: int | None = None  # torch.set_num_threads (None: leave as is)
    progress: bool = True  # tqdm bar per seed

    def __post_init__(self) -> None:
        for name in ("seeds", "total_steps", "num_envs", "num_steps", "update_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        batch = self.num_envs * self.num_steps
        if self.num_minibatches <= 0 or batch % self.num_minibatches:
            raise ValueError(
                f"num_minibatches must divide num_envs * num_steps = {batch}, "
                f"got {self.num_minibatches}"
            )
        if self.total_steps < batch:
            raise ValueError(
                f"total_steps ({self.total_steps}) must be >= one rollout "
                f"(num_envs * num_steps = {batch})"
            )
        if self.ENV not in ENVS:
            raise ValueError(f"ENV must be one of {sorted(ENVS)}, got {self.ENV!r}")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def env(self) -> EnvSpec:
        return ENVS[self.ENV]


PRESETS = {"quick": ("a check, not a result", {"seeds": 1, "total_steps": 10_240})}
ALIASES = {"num_layers": ["--layers"], "num_heads": ["--heads"]}  # the flags' old spellings


# ----------------------------------------------------------------------------- model
class RunningNorm(nn.Module):
    """Running mean and variance of a stream of values, and ``x -> clip((x - mean) /
    sqrt(var + 1e-8), -clip, clip)``: stable-baselines3's ``RunningMeanStd`` and the
    observation half of its ``VecNormalize``. Buffers, so a checkpoint keeps the statistics.

    Shapes:
        - update and forward: ``(B, N)`` (``N`` values normalised independently).
    """

    def __init__(self, size: int, clip: float = 10.0) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.zeros(size))  # (N,)
        self.register_buffer("var", torch.ones(size))  # (N,)
        self.register_buffer("count", torch.tensor(1e-4))  # SB3's start: no division by 0

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Merge the batch ``x`` into the statistics (Chan et al.'s parallel variance)."""
        n = x.shape[0]
        delta = x.mean(0) - self.mean  # (N,)
        total = self.count + n
        m2 = (
            self.var * self.count + x.var(0, unbiased=False) * n + delta**2 * self.count * n / total
        )
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.fill_(total)

    def forward(self, x: Tensor) -> Tensor:
        return ((x - self.mean) / torch.sqrt(self.var + 1e-8)).clamp(-self.clip, self.clip)

    def extra_repr(self) -> str:
        return f"size={self.mean.numel()}, clip={self.clip}"


class Agent(nn.Module):
    """The :class:`modalities.RLStateEncoder` behind an optional observation normaliser.

    Args:
        encoder: the actor-critic, one node per observation variable.
        norm: a :class:`RunningNorm` of the observations, or ``None`` (raw observations).
    """

    def __init__(self, encoder: RLStateEncoder, norm: RunningNorm | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.norm = norm

    def forward(self, obs: Tensor, **kwargs: Any) -> RLOutput:
        """``obs (B, N)`` -> the encoder's :class:`modalities.RLOutput`; ``kwargs`` go to it."""
        return self.encoder(obs if self.norm is None else self.norm(obs), **kwargs)


def build_policy(cfg: CartPoleConfig) -> Agent:
    """The actor-critic: one node per observation variable, from the env's spaces."""
    env = gym.make(cfg.ENV)
    try:
        encoder = RLStateEncoder.from_space(
            env.observation_space,
            env.action_space,
            dim=cfg.dim,
            num_layers=cfg.num_layers,
            num_heads=cfg.num_heads,
            dim_feedforward=2 * cfg.dim,
        )
    finally:
        env.close()
    return Agent(encoder, RunningNorm(len(cfg.env.variables)) if cfg.norm_obs else None)


# ----------------------------------------------------------------------------- evaluation
@dataclass
class Evaluation:
    """Greedy episodes of one policy.

    Attributes:
        returns: one return per episode (what an unfinished episode had so far, when the
            evaluation stopped early).
        complete: every episode ran to its end.
        best_mean: the mean return when complete; else the most it could still have
            reached, which is below the target that stopped it.
        trace: the recorded first episode (:func:`evaluate` with ``record``).
    """

    returns: list[float]
    complete: bool
    best_mean: float
    trace: dict[str, np.ndarray] | None = None

    def reaches(self, target: float) -> bool:
        """The mean return over all the episodes is at least ``target``."""
        return self.complete and self.best_mean >= target


@torch.no_grad()
def evaluate(
    policy: Agent,
    env_id: str,
    seeds: Sequence[int],
    *,
    target: float | None = None,
    record: bool = False,
) -> Evaluation:
    """Play one greedy (argmax) episode per seed, all episodes batched through the policy.

    Args:
        policy: the actor-critic.
        env_id: a key of :data:`ENVS`.
        seeds: one ``env.reset(seed=...)`` per episode.
        target: stop as soon as the mean return can no longer reach it: the returns so far
            plus, for every unfinished episode, ``max_step_reward`` for each step left before
            the time limit. ``None``: play every episode to its end.
        record: also return, for the first episode, its observations and the attention of
            the pooled state over the variables at every step.

    Returns:
        The :class:`Evaluation`; with ``record`` its trace is ``{"obs": (T, N), "actions":
        (T,), "relevance": (T, N), "last_layer": (T, N)}``: the greedy actions, the rollout
        relevance (what the mean-pooled state draws on each variable through all layers) and
        the last layer's attention received by each variable (mean over heads and target
        nodes).
    """
    was_training = policy.training
    policy.eval()
    envs = [gym.make(env_id) for _ in seeds]
    limit = envs[0].spec.max_episode_steps  # the time limit (500 for both environments)
    best_step = ENVS[env_id].max_step_reward
    obs = np.stack(
        [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)]
    )  # (B, N)
    returns = np.zeros(len(seeds))
    steps = np.zeros(len(seeds), dtype=np.int64)
    active = np.ones(len(seeds), dtype=bool)
    trace: dict[str, list[Any]] = {"obs": [], "actions": [], "relevance": [], "last_layer": []}
    while active.any():
        # the highest mean still possible: unfinished episodes earn the most on every step left
        best = (returns + active * best_step * (limit - steps)).mean()
        if target is not None and best < target:
            break
        idx = np.flatnonzero(active)
        out = policy(torch.as_tensor(obs[idx]), need_weights=record and bool(active[0]))
        actions = out.logits.argmax(-1).numpy()  # (B,)
        if out.attentions is not None:  # idx[0] == 0: the recorded episode is still running
            rollout = attention_rollout(out.attentions)  # (B, N, N)
            last = out.attentions[-1].to_dense()  # (B, H, N, N)
            trace["obs"].append(obs[0].copy())
            trace["actions"].append(int(actions[0]))
            trace["relevance"].append(rollout[0].mean(0).numpy())  # (N,): mean over targets
            trace["last_layer"].append(last[0].mean((0, 1)).numpy())  # (N,)
        for i, a in zip(idx, actions, strict=True):
            o, r, terminated, truncated, _ = envs[i].step(int(a))
            obs[i] = o
            returns[i] += r
            steps[i] += 1
            if terminated or truncated:
                active[i] = False
    for env in envs:
        env.close()
    policy.train(was_training)
    complete = not active.any()
    best = float(returns.mean()) if complete else float(best)
    recorded = {k: np.stack(v) for k, v in trace.items()} if record and trace["obs"] else None
    return Evaluation(returns.tolist(), complete, best, recorded)


# ----------------------------------------------------------------------------- PPO
def make_envs(cfg: CartPoleConfig, seed: int) -> SyncVectorEnv:
    """``num_envs`` environments that reset in the same step they end (the final observation
    is in ``info["final_obs"]``, needed to bootstrap truncated episodes)."""
    envs = SyncVectorEnv(
        [lambda: gym.make(cfg.ENV) for _ in range(cfg.num_envs)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    envs.action_space.seed(seed)
    return envs


def gae(
    rewards: Tensor, values: Tensor, ends: Tensor, last_value: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016).

    ``ends[t]`` marks that the episode ended at step ``t`` (the next observation starts a
    new one); truncated episodes must already carry ``gamma * V(final_obs)`` in
    ``rewards[t]``.

    Shapes:
        - rewards, values, ends: ``(T, E)``; last_value: ``(E,)`` (the value after the last
          step); returns advantages and returns ``(T, E)``.
    """
    steps = rewards.shape[0]
    adv = torch.zeros_like(rewards)  # (T, E)
    last = torch.zeros_like(last_value)  # (E,)
    for t in reversed(range(steps)):
        next_value = last_value if t == steps - 1 else values[t + 1]  # (E,)
        alive = 1.0 - ends[t]  # (E,)
        delta = rewards[t] + gamma * next_value * alive - values[t]  # (E,)
        last = delta + gamma * lam * alive * last  # (E,)
        adv[t] = last
    return adv, adv + values


def ppo_update(
    policy: Agent,
    opt: torch.optim.Optimizer,
    batch: dict[str, Tensor],
    cfg: CartPoleConfig,
    clip: float,
) -> dict[str, float]:
    """``update_epochs`` passes of minibatch PPO over one rollout, ratios clipped to
    ``1 ± clip``.

    Shapes:
        - batch: ``obs (B, N)``, ``actions``, ``logprobs``, ``advantages``, ``returns``,
          ``values`` all ``(B,)``.
    """
    size = batch["obs"].shape[0]
    mb = size // cfg.num_minibatches
    stats: dict[str, list[float]] = {
        "policy_loss": [],
        "value_loss": [],
        "entropy": [],
        "approx_kl": [],
        "clip_frac": [],
    }
    for _ in range(cfg.update_epochs):
        perm = torch.randperm(size)  # (B,)
        for start in range(0, size, mb):
            idx = perm[start : start + mb]  # (b,)
            out = policy(batch["obs"][idx])
            dist = out.distribution()
            logprob = dist.log_prob(batch["actions"][idx])  # (b,)
            entropy = dist.entropy().mean()
            log_ratio = logprob - batch["logprobs"][idx]  # (b,)
            ratio = log_ratio.exp()  # (b,)
            adv = batch["advantages"][idx]  # (b,)
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()
            old_v, ret = batch["values"][idx], batch["returns"][idx]  # (b,), (b,)
            v_loss = (out.value - ret) ** 2  # (b,)
            if cfg.clip_value:
                v_clipped = old_v + (out.value - old_v).clamp(-clip, clip)  # (b,)
                v_loss = torch.max(v_loss, (v_clipped - ret) ** 2)
            v_loss = 0.5 * v_loss.mean()
            loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"PPO loss is {loss.item()} (not finite)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            opt.step()
            with torch.no_grad():
                stats["policy_loss"].append(pg_loss.item())
                stats["value_loss"].append(v_loss.item())
                stats["entropy"].append(entropy.item())
                stats["approx_kl"].append(((ratio - 1) - log_ratio).mean().item())
                stats["clip_frac"].append(((ratio - 1).abs() > clip).float().mean().item())
    return {k: statistics.fmean(v) for k, v in stats.items()}


def train_seed(seed: int, cfg: CartPoleConfig) -> tuple[dict[str, Any], Agent]:
    """PPO on one seed until solved (the first policy whose greedy mean over the evaluation
    episodes reaches the target) or out of budget; returns the run's record and the policy.

    Every policy is evaluated (the untrained one and the one after every update), so
    ``steps_to_solve`` is exact: the environment steps taken when the solving policy was made.
    """
    seed_everything(seed)
    policy = build_policy(cfg)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=1e-5)
    envs = make_envs(cfg, seed)
    num_updates = cfg.total_steps // cfg.batch_size
    eval_seeds = [EVAL_SEED_BASE + 1000 * seed + i for i in range(cfg.eval_episodes)]

    t0 = time.perf_counter()
    untrained = evaluate(policy, cfg.ENV, eval_seeds)  # played to the end: its mean is shown
    evals: list[dict[str, Any]] = [{"step": 0, "mean_return": untrained.best_mean}]
    solved_at: int | None = 0 if untrained.reaches(cfg.target_return) else None
    solve_wall: float | None = time.perf_counter() - t0 if solved_at == 0 else None
    final_eval = untrained.best_mean
    n_obs = len(cfg.env.variables)
    obs_buf = torch.zeros(cfg.num_steps, cfg.num_envs, n_obs)  # (T, E, N)
    act_buf = torch.zeros(cfg.num_steps, cfg.num_envs, dtype=torch.long)  # (T, E)
    logp_buf = torch.zeros(cfg.num_steps, cfg.num_envs)  # (T, E)
    rew_buf = torch.zeros(cfg.num_steps, cfg.num_envs)  # (T, E)
    end_buf = torch.zeros(cfg.num_steps, cfg.num_envs)  # (T, E)
    val_buf = torch.zeros(cfg.num_steps, cfg.num_envs)  # (T, E)
    next_obs = torch.as_tensor(
        envs.reset(seed=[seed * cfg.num_envs + i for i in range(cfg.num_envs)])[0]
    )  # (E, N)
    ep_return = np.zeros(cfg.num_envs)
    disc_return = torch.zeros(cfg.num_envs)  # (E,) discounted return, for norm_reward
    reward_norm = RunningNorm(1)  # its running variance
    curve: list[dict[str, Any]] = []
    step = 0
    from tqdm.auto import tqdm

    bar = tqdm(
        total=num_updates, desc=f"seed {seed}", unit="upd", leave=False, disable=not cfg.progress
    )
    try:
        for update in range(1, num_updates + 1):
            if solved_at is not None and cfg.stop_when_solved:
                break
            frac = 1.0 - (update - 1) / num_updates if cfg.anneal_lr else 1.0
            opt.param_groups[0]["lr"] = cfg.lr * frac
            finished: list[float] = []
            for t in range(cfg.num_steps):
                with torch.no_grad():
                    out = policy(next_obs)
                    dist = out.distribution()
                    action = dist.sample()  # (E,)
                    logp_buf[t] = dist.log_prob(action)  # (E,)
                obs_buf[t] = next_obs
                act_buf[t] = action
                val_buf[t] = out.value
                o, r, terminated, truncated, info = envs.step(action.numpy())
                reward = torch.as_tensor(r, dtype=torch.float32)  # (E,)
                ep_return += r
                done = terminated | truncated
                if cfg.norm_reward:  # SB3 VecNormalize: r / sqrt(var(discounted return))
                    disc_return = disc_return * cfg.gamma + reward  # (E,)
                    reward_norm.update(disc_return[:, None])
                    reward = (reward / torch.sqrt(reward_norm.var + 1e-8)).clamp(-10, 10)
                    disc_return[torch.as_tensor(done)] = 0.0
                if truncated.any():  # time limit: bootstrap from V(final observation)
                    cut = np.flatnonzero(truncated & ~terminated)
                    if len(cut):
                        final = torch.as_tensor(np.stack(info["final_obs"][cut]))  # (k, N)
                        with torch.no_grad():
                            reward[cut] += cfg.gamma * policy(final).value
                for i in np.flatnonzero(done):
                    finished.append(float(ep_return[i]))
                    ep_return[i] = 0.0
                rew_buf[t] = reward
                end_buf[t] = torch.as_tensor(done, dtype=torch.float32)
                next_obs = torch.as_tensor(o)  # (E, N)
            step += cfg.batch_size
            with torch.no_grad():
                last_value = policy(next_obs).value  # (E,)
            adv, ret = gae(rew_buf, val_buf, end_buf, last_value, cfg.gamma, cfg.gae_lambda)
            batch = {
                "obs": obs_buf.reshape(-1, n_obs),  # (T*E, N)
                "actions": act_buf.reshape(-1),
                "logprobs": logp_buf.reshape(-1),
                "advantages": adv.reshape(-1),
                "returns": ret.reshape(-1),
                "values": val_buf.reshape(-1),
            }
            stats = ppo_update(policy, opt, batch, cfg, cfg.clip_coef * frac)
            if policy.norm is not None:  # the next rollout (and this evaluation) see them
                policy.norm.update(batch["obs"])
            ev = evaluate(policy, cfg.ENV, eval_seeds, target=cfg.target_return)
            point: dict[str, Any] = {
                "step": step,
                "train_return": statistics.fmean(finished) if finished else None,
                "episodes": len(finished),
                **{k: round(v, 6) for k, v in stats.items()},
                "eval_best_mean": ev.best_mean,  # the mean, or its bound when stopped early
                "eval_complete": ev.complete,
            }
            if ev.complete:
                evals.append({"step": step, "mean_return": ev.best_mean})
                final_eval = ev.best_mean
            if ev.reaches(cfg.target_return) and solved_at is None:
                solved_at, solve_wall = step, time.perf_counter() - t0
            curve.append(point)
            bar.update(1)
            bar.set_postfix(ret=f"{point['train_return'] or 0:.0f}", eval=f"{ev.best_mean:.0f}")
    finally:
        bar.close()
        envs.close()
    if evals[-1]["step"] != step:  # the last policy's evaluation stopped early: play it out
        final_eval = evaluate(policy, cfg.ENV, eval_seeds).best_mean
        evals.append({"step": step, "mean_return": final_eval})
    wall = time.perf_counter() - t0
    # every policy met the same evaluation episodes, and the first to pass them counts: the
    # final policy plays as many other episodes, so that luck in that choice would show
    fresh_seeds = [FRESH_SEED_BASE + 1000 * seed + i for i in range(cfg.eval_episodes)]
    fresh = evaluate(policy, cfg.ENV, fresh_seeds).best_mean
    record = {
        "seed": seed,
        "solved": solved_at is not None,
        "steps_to_solve": solved_at,
        "final_eval_return": final_eval,
        "fresh_eval_return": fresh,
        "untrained_return": untrained.best_mean,
        "env_steps": step,
        "updates": len(curve),
        "evaluations": evals,
        "wall_s": wall,  # the seed's training and evaluations
        "wall_to_solve_s": solve_wall,  # from the start to the end of the solving evaluation
        "curve": curve,
    }
    return record, policy


# ----------------------------------------------------------------------------- pictures
def plot_learning_curves(runs: list[dict[str, Any]], cfg: CartPoleConfig, path: Path) -> Path:
    """Training-episode return and the greedy evaluations played to the end against env
    steps, one colour per seed; policy entropy below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax, ax_ent = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    for i, r in enumerate(runs):
        color = f"C{i}"
        pts = [p for p in r["curve"] if p["train_return"] is not None]
        ax.plot(
            [p["step"] for p in pts],
            [p["train_return"] for p in pts],
            color=color,
            lw=1,
            alpha=0.6,
            label=f"seed {r['seed']}: training episodes (sampled actions)",
        )
        ax.plot(
            [e["step"] for e in r["evaluations"]],
            [e["mean_return"] for e in r["evaluations"]],
            "*",
            color=color,
            ms=12,
            mec="k",
            label=f"seed {r['seed']}: greedy evaluation ({cfg.eval_episodes} episodes)",
        )
        if r["solved"]:
            ax.axvline(r["steps_to_solve"], color=color, ls=":", lw=1)
        ax_ent.plot(
            [p["step"] for p in r["curve"]], [p["entropy"] for p in r["curve"]], color=color
        )
    ax.axhline(cfg.target_return, color="k", ls="--", lw=1, label=f"goal {cfg.target_return:g}")
    ax.set_ylabel("episode return")
    ax.set_title(
        f"PPO + RLStateEncoder on {cfg.ENV}\n(dotted: steps to solve; evaluations that "
        "stopped early, certain to miss the goal, are not drawn)",
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    ax_ent.set_ylabel("policy entropy")
    ax_ent.set_xlabel("environment steps")
    ax_ent.grid(True, alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_attention_episode(
    trace: dict[str, np.ndarray],
    spec: EnvSpec,
    title: str,
    path: Path,
    *,
    show_rollout: bool = False,
) -> Path:
    """Heatmaps (variable x time) of the attention each observation variable receives, the
    greedy action, and the observation (each variable scaled by its largest magnitude in the
    episode), along one episode. ``show_rollout`` adds the attention rollout (what the pooled
    state draws on each variable through all layers; with one layer it is an affine function
    of the attention, so not shown).

    Shapes:
        - trace: ``obs``, ``relevance``, ``last_layer`` each ``(T, N)``; ``actions`` ``(T,)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps, n = trace["obs"].shape
    scale = np.abs(trace["obs"]).max(0).clip(min=1e-8)  # (N,)
    maps = [
        ("last_layer", "attention received by each variable (mean over heads and targets)"),
        ("obs_scaled", "observation, each variable divided by its largest |value| here"),
    ]
    if show_rollout:
        maps.insert(0, ("relevance", "attention rollout: pooled state <- variable"))
    data = {**trace, "obs_scaled": trace["obs"] / scale}
    ratios = [1.0] * len(maps) + [0.2]
    fig = Figure(figsize=(11.0, 1.0 + (0.25 * n + 0.6) * len(maps)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(ratios), 1, sharex=True, height_ratios=ratios)
    extent = (-0.5, steps - 0.5, n - 0.5, -0.5)
    for ax, (key, label) in zip(axes[: len(maps)], maps, strict=True):
        signed = key == "obs_scaled"
        im = ax.imshow(
            data[key].T,  # (N, T)
            aspect="auto",
            interpolation="nearest",
            cmap="coolwarm" if signed else "viridis",
            vmin=-1 if signed else None,
            vmax=1 if signed else None,
            extent=extent,
        )
        ax.set_yticks(range(n), spec.variables, fontsize=8)
        ax.set_title(label, fontsize=9, loc="left")
        fig.colorbar(im, ax=ax, shrink=0.9, pad=0.01, label="value" if signed else "weight")
    ax_act = axes[-1]
    num_actions = len(spec.actions)
    ax_act.imshow(
        trace["actions"][None].astype(float),  # (1, T)
        aspect="auto",
        interpolation="nearest",
        cmap="coolwarm",
        vmin=0,
        vmax=num_actions - 1,
        extent=(-0.5, steps - 0.5, 0.5, -0.5),
    )
    ax_act.set_yticks([0], ["action"], fontsize=8)
    names = ", ".join(f"{k}: {a}" for k, a in enumerate(spec.actions))
    ax_act.set_title(f"greedy action (blue to red: {names})", fontsize=9, loc="left")
    ax_act.set_xlabel("time step")
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


# ----------------------------------------------------------------------------- driver
def run(cfg: CartPoleConfig) -> dict[str, Any]:
    """Train every seed, print the table, write checkpoints, pictures and the JSON."""
    spec = cfg.env
    exp = Experiment(spec.example, cfg)
    first_policy: Agent | None = None
    for seed in range(cfg.seeds):
        record, policy = train_seed(seed, cfg)
        if first_policy is None:
            first_policy = policy
        ckpt = save_checkpoint(
            exp.out_dir / f"seed{seed}" / "policy.pt",
            {
                "model": policy.state_dict(),
                "config": config_dict(cfg),
                "env": cfg.ENV,
                "seed": seed,
                "env_steps": record["env_steps"],
                "final_eval_return": record["final_eval_return"],
            },
        )
        record["checkpoint"] = str(ckpt)
        steps = f"{record['steps_to_solve']:,} steps" if record["solved"] else "not solved"
        exp.add(
            record,
            f"seed {seed}: {steps}, final {cfg.eval_episodes}-episode return "
            f"{record['final_eval_return']:.2f} ({record['fresh_eval_return']:.2f} on "
            "fresh episodes), "
            f"untrained {record['untrained_return']:.1f}, {record['wall_s']:.1f} s",
        )
    runs = exp.runs
    table = format_table(
        [
            "seed",
            "solved",
            "steps to solve",
            "s to solve",
            f"final {cfg.eval_episodes}-ep return",
            "fresh episodes",
            "untrained",
            "wall s",
        ],
        [
            [
                r["seed"],
                "yes" if r["solved"] else "no",
                f"{r['steps_to_solve']:,}" if r["solved"] else "-",
                f"{r['wall_to_solve_s']:.1f}" if r["solved"] else "-",
                f"{r['final_eval_return']:.2f}",
                f"{r['fresh_eval_return']:.2f}",
                f"{r['untrained_return']:.1f}",
                f"{r['wall_s']:.1f}",
            ]
            for r in runs
        ],
        left=0,
    )
    curve_png = plot_learning_curves(runs, cfg, exp.out_dir / "learning_curve.png")
    assert first_policy is not None
    episode = evaluate(first_policy, cfg.ENV, [EVAL_SEED_BASE], record=True)
    assert episode.trace is not None
    attn_png = plot_attention_episode(
        episode.trace,
        spec,
        f"seed 0 policy on {cfg.ENV}, one greedy evaluation episode (return "
        f"{episode.returns[0]:.0f}): which observation variables the policy attends to",
        exp.out_dir / "attention_episode.png",
        show_rollout=cfg.num_layers > 1,
    )
    solved = [r for r in runs if r["solved"]]
    summary = {
        "seeds": len(runs),
        "solved": len(solved),
        "steps_to_solve": [r["steps_to_solve"] for r in runs],
        "mean_steps_to_solve": (
            statistics.fmean(r["steps_to_solve"] for r in solved) if solved else None
        ),
        "final_eval_returns": [r["final_eval_return"] for r in runs],
        "fresh_eval_returns": [r["fresh_eval_return"] for r in runs],
        "wall_s": [r["wall_s"] for r in runs],
        "wall_to_solve_s": [r["wall_to_solve_s"] for r in runs],
        "mean_attention_rollout": dict(
            zip(spec.variables, episode.trace["relevance"].mean(0).tolist(), strict=True)
        ),
        "mean_attention_last_layer": dict(
            zip(spec.variables, episode.trace["last_layer"].mean(0).tolist(), strict=True)
        ),
        "attention_episode_return": episode.returns[0],
    }
    return exp.finish(
        table,
        env=cfg.ENV,
        goal=f"greedy mean return >= {cfg.target_return:g} over {cfg.eval_episodes} "
        "episodes (every policy evaluated: steps to solve exact)",
        params=count_params(first_policy),
        summary=summary,
        pictures=[str(curve_png), str(attn_png)],
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run(parse_config(CartPoleConfig, argv, __doc__, PRESETS, ALIASES))


if __name__ == "__main__":
    main()

"""PPO on gymnasium's ``CartPole-v1`` with a graph-attention state encoder.

The actor-critic is one :class:`modalities.RLStateEncoder`: each of the four observation
variables (cart position, cart velocity, pole angle, pole angular velocity) becomes a node
``W_i x_i + e_i``, a small ``GraphTransformer`` runs on the complete graph of the four nodes,
the nodes are mean-pooled, and two linear heads give the action logits and the state value.

Training is a self-contained PPO in the design of CleanRL's ``ppo.py`` (Huang et al., 2022,
"The 37 Implementation Details of Proximal Policy Optimization"): a ``SyncVectorEnv`` of
``num_envs`` environments, rollouts of ``num_steps`` steps, GAE, the clipped surrogate
objective, a clipped value loss, an entropy bonus, several epochs of minibatch Adam with an
annealed learning rate and gradient clipping, and per-minibatch advantage normalisation.
Time-limit truncation (CartPole stops at 500 steps) is not a failure: a truncated step
bootstraps from the critic's value of the final observation, a terminated one does not.

Every ``check_every`` environment steps the greedy (argmax) policy plays ``check_episodes``
cheap episodes; when their mean return reaches ``target_return`` it plays
``eval_episodes`` (100) fixed evaluation episodes. "Steps to solve" is the number of
environment steps at the first 100-episode evaluation with mean return >= 475; a seed stops
there (or at ``total_steps``).

Writes ``examples/results/rl_cartpole.json`` (:mod:`examples.harness`) and, in ``--out-dir``:
the policy of
every seed (``seed{s}/policy.pt``, ``examples.training.save_checkpoint``), the learning
curves (``learning_curve.png``) and the attention of the first seed's policy over the four
variables along one evaluation episode (``attention_episode.png``).

Run: ``python -m examples.rl_cartpole [--seeds 3] [--total-steps 300000] [--quick]`` (every
field of :class:`CartPoleConfig` is a flag: ``--help``)

Axis legend: ``T`` rollout steps, ``E`` environments, ``B`` batch, ``N`` nodes (the 4
observation variables), ``A`` actions.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from torch import Tensor, nn

from examples.harness import Experiment, config_dict, count_params, format_table, parse_config
from examples.training import save_checkpoint, seed_everything
from graphattn.explain import attention_rollout
from modalities import RLStateEncoder

RESULTS = Path(__file__).resolve().parent / "results" / "rl_cartpole.json"
ENV_ID = "CartPole-v1"
VARIABLES = ("cart position", "cart velocity", "pole angle", "pole ang. velocity")
EVAL_SEED_BASE = 1_000_000  # evaluation episodes never reuse a training seed
CHECK_SEED_BASE = 2_000_000


@dataclass
class CartPoleConfig:
    """One run of the example; the defaults are the full run."""

    seeds: int = 3  # seeds 0..seeds-1
    total_steps: int = 300_000  # environment-step budget per seed (the goal's budget)
    num_envs: int = 8  # parallel environments (SyncVectorEnv)
    num_steps: int = 128  # rollout length per environment: 1024 transitions per update
    lr: float = 2.5e-3  # Adam learning rate, linearly annealed to 0 over total_steps
    anneal_lr: bool = True
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE lambda
    update_epochs: int = 4  # passes over each rollout
    num_minibatches: int = 4  # 256 transitions per minibatch
    clip_coef: float = 0.2  # PPO ratio clip (also clips the value update)
    ent_coef: float = 0.01  # entropy bonus
    vf_coef: float = 0.5  # value-loss weight (actor and critic share the encoder)
    max_grad_norm: float = 0.5  # global gradient-norm clip
    dim: int = 32  # node width D
    num_layers: int = 1  # transformer layers
    num_heads: int = 2  # attention heads
    check_every: int = 10_240  # env steps between cheap greedy checks (10 updates)
    check_episodes: int = 10  # episodes of a cheap check
    eval_episodes: int = 100  # episodes of the evaluation that decides "solved"
    target_return: float = 475.0  # CartPole-v1's reward threshold
    stop_when_solved: bool = True  # stop a seed at its first solved evaluation
    out_dir: str = "runs/rl_cartpole"  # checkpoints and pictures
    results: str | None = str(RESULTS)  # the summary JSON (None: in out_dir)
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

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps


PRESETS = {"quick": ("a check, not a result", {"seeds": 1, "total_steps": 20_480})}
ALIASES = {"num_layers": ["--layers"], "num_heads": ["--heads"]}  # the flags' old spellings


# ----------------------------------------------------------------------------- model
def build_policy(cfg: CartPoleConfig) -> RLStateEncoder:
    """The actor-critic: one node per observation variable, from the env's spaces."""
    env = gym.make(ENV_ID)
    try:
        return RLStateEncoder.from_space(
            env.observation_space,
            env.action_space,
            dim=cfg.dim,
            num_layers=cfg.num_layers,
            num_heads=cfg.num_heads,
            dim_feedforward=2 * cfg.dim,
        )
    finally:
        env.close()


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    policy: RLStateEncoder,
    seeds: Sequence[int],
    *,
    record: bool = False,
) -> tuple[list[float], dict[str, np.ndarray] | None]:
    """Play one greedy (argmax) episode per seed, all episodes batched through the policy.

    Args:
        policy: the actor-critic.
        seeds: one ``env.reset(seed=...)`` per episode.
        record: also return, for the first episode, its observations and the attention
            rollout of the pooled state over the four variables at every step.

    Returns:
        The episode returns and, with ``record``, ``{"obs": (T, 4), "actions": (T,),
        "relevance": (T, 4), "last_layer": (T, 4)}``: the greedy actions, the rollout
        relevance (what the mean-pooled state draws on each variable through all layers) and
        the last layer's attention received by each variable (mean over heads and target
        nodes).
    """
    was_training = policy.training
    policy.eval()
    envs = [gym.make(ENV_ID) for _ in seeds]
    obs = np.stack(
        [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)]
    )  # (B, 4)
    returns = np.zeros(len(seeds))
    active = np.ones(len(seeds), dtype=bool)
    trace: dict[str, list[Any]] = {"obs": [], "actions": [], "relevance": [], "last_layer": []}
    while active.any():
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
            if terminated or truncated:
                active[i] = False
    for env in envs:
        env.close()
    policy.train(was_training)
    recorded = {k: np.stack(v) for k, v in trace.items()} if record else None
    return returns.tolist(), recorded


# ----------------------------------------------------------------------------- PPO
def make_envs(cfg: CartPoleConfig, seed: int) -> SyncVectorEnv:
    """``num_envs`` CartPoles that reset in the same step they end (the final observation
    is in ``info["final_obs"]``, needed to bootstrap truncated episodes)."""
    envs = SyncVectorEnv(
        [lambda: gym.make(ENV_ID) for _ in range(cfg.num_envs)],
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
    policy: RLStateEncoder,
    opt: torch.optim.Optimizer,
    batch: dict[str, Tensor],
    cfg: CartPoleConfig,
) -> dict[str, float]:
    """``update_epochs`` passes of minibatch PPO over one rollout.

    Shapes:
        - batch: ``obs (B, 4)``, ``actions``, ``logprobs``, ``advantages``, ``returns``,
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
            pg_loss = torch.max(
                -adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
            ).mean()
            old_v, ret = batch["values"][idx], batch["returns"][idx]  # (b,), (b,)
            v_clipped = old_v + (out.value - old_v).clamp(-cfg.clip_coef, cfg.clip_coef)
            v_loss = 0.5 * torch.max((out.value - ret) ** 2, (v_clipped - ret) ** 2).mean()
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
                stats["clip_frac"].append(((ratio - 1).abs() > cfg.clip_coef).float().mean().item())
    return {k: statistics.fmean(v) for k, v in stats.items()}


def train_seed(seed: int, cfg: CartPoleConfig) -> tuple[dict[str, Any], RLStateEncoder]:
    """PPO on one seed until solved (first 100-episode greedy mean >= target) or out of
    budget; returns the run's record and the trained policy."""
    seed_everything(seed)
    policy = build_policy(cfg)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=1e-5)
    envs = make_envs(cfg, seed)
    num_updates = cfg.total_steps // cfg.batch_size
    check_every = max(1, cfg.check_every // cfg.batch_size)  # in updates
    eval_seeds = [EVAL_SEED_BASE + 1000 * seed + i for i in range(cfg.eval_episodes)]

    def check_seeds(k: int) -> list[int]:  # fresh start states for every cheap check
        base = CHECK_SEED_BASE + 100_000 * seed + k * cfg.check_episodes
        return list(range(base, base + cfg.check_episodes))

    t0 = time.perf_counter()
    untrained = statistics.fmean(evaluate(policy, check_seeds(0))[0])
    obs_buf = torch.zeros(cfg.num_steps, cfg.num_envs, 4)  # (T, E, 4)
    act_buf = torch.zeros(cfg.num_steps, cfg.num_envs, dtype=torch.long)  # (T, E)
    logp_buf = torch.zeros(cfg.num_steps, cfg.num_envs)  # (T, E)
    rew_buf = torch.zeros(cfg.num_steps, cfg.num_envs)  # (T, E)
    end_buf = torch.zeros(cfg.num_steps, cfg.num_envs)  # (T, E)
    val_buf = torch.zeros(cfg.num_steps, cfg.num_envs)  # (T, E)
    next_obs = torch.as_tensor(
        envs.reset(seed=[seed * cfg.num_envs + i for i in range(cfg.num_envs)])[0]
    )  # (E, 4)
    ep_return = np.zeros(cfg.num_envs)
    curve: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    solved_at: int | None = None
    final_eval: float | None = None
    step = 0
    from tqdm.auto import tqdm

    bar = tqdm(
        total=num_updates, desc=f"seed {seed}", unit="upd", leave=False, disable=not cfg.progress
    )
    try:
        for update in range(1, num_updates + 1):
            if cfg.anneal_lr:
                opt.param_groups[0]["lr"] = cfg.lr * (1.0 - (update - 1) / num_updates)
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
                if truncated.any():  # time limit: bootstrap from V(final observation)
                    cut = np.flatnonzero(truncated & ~terminated)
                    if len(cut):
                        final = torch.as_tensor(np.stack(info["final_obs"][cut]))  # (k, 4)
                        with torch.no_grad():
                            reward[cut] += cfg.gamma * policy(final).value
                done = terminated | truncated
                for i in np.flatnonzero(done):
                    finished.append(float(ep_return[i]))
                    ep_return[i] = 0.0
                rew_buf[t] = reward
                end_buf[t] = torch.as_tensor(done, dtype=torch.float32)
                next_obs = torch.as_tensor(o)  # (E, 4)
            step += cfg.batch_size
            with torch.no_grad():
                last_value = policy(next_obs).value  # (E,)
            adv, ret = gae(rew_buf, val_buf, end_buf, last_value, cfg.gamma, cfg.gae_lambda)
            batch = {
                "obs": obs_buf.reshape(-1, 4),  # (T*E, 4)
                "actions": act_buf.reshape(-1),
                "logprobs": logp_buf.reshape(-1),
                "advantages": adv.reshape(-1),
                "returns": ret.reshape(-1),
                "values": val_buf.reshape(-1),
            }
            stats = ppo_update(policy, opt, batch, cfg)
            point: dict[str, Any] = {
                "step": step,
                "train_return": statistics.fmean(finished) if finished else None,
                "episodes": len(finished),
                **{k: round(v, 6) for k, v in stats.items()},
            }
            if update % check_every == 0 or update == num_updates:
                k = update // check_every
                check = statistics.fmean(evaluate(policy, check_seeds(k))[0])
                point["check_return"] = check
                if check >= cfg.target_return or update == num_updates:
                    full = statistics.fmean(evaluate(policy, eval_seeds)[0])
                    point["eval_return"] = full
                    evals.append({"step": step, "mean_return": full})
                    final_eval = full
                    if full >= cfg.target_return and solved_at is None:
                        solved_at = step
            curve.append(point)
            bar.update(1)
            bar.set_postfix(
                ret=f"{point['train_return'] or 0:.0f}",
                check=f"{point.get('check_return', float('nan')):.0f}",
            )
            if solved_at is not None and cfg.stop_when_solved:
                break
    finally:
        bar.close()
        envs.close()
    wall = time.perf_counter() - t0
    record = {
        "seed": seed,
        "solved": solved_at is not None,
        "steps_to_solve": solved_at,
        "final_eval_return": final_eval,
        "untrained_check_return": untrained,
        "env_steps": step,
        "updates": len(curve),
        "evaluations": evals,
        "wall_s": wall,
        "curve": curve,
    }
    return record, policy


# ----------------------------------------------------------------------------- pictures
def plot_learning_curves(runs: list[dict[str, Any]], cfg: CartPoleConfig, path: Path) -> Path:
    """Training-episode return, cheap greedy checks and full greedy evaluations against env
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
        checks = [p for p in r["curve"] if "check_return" in p]
        ax.plot(
            [p["step"] for p in checks],
            [p["check_return"] for p in checks],
            "o",
            color=color,
            ms=4,
            label=f"seed {r['seed']}: greedy check ({cfg.check_episodes} episodes)",
        )
        ax.plot(
            [e["step"] for e in r["evaluations"]],
            [e["mean_return"] for e in r["evaluations"]],
            "*",
            color=color,
            ms=14,
            mec="k",
            label=f"seed {r['seed']}: greedy evaluation ({cfg.eval_episodes} episodes)",
        )
        ax_ent.plot(
            [p["step"] for p in r["curve"]], [p["entropy"] for p in r["curve"]], color=color
        )
    ax.axhline(cfg.target_return, color="k", ls="--", lw=1, label=f"goal {cfg.target_return:g}")
    ax.set_ylabel("episode return")
    ax.set_title(f"PPO + RLStateEncoder on {ENV_ID}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    ax_ent.set_ylabel("policy entropy")
    ax_ent.set_xlabel("environment steps")
    ax_ent.grid(True, alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_attention_episode(
    trace: dict[str, np.ndarray], title: str, path: Path, *, show_rollout: bool = False
) -> Path:
    """Heatmap (variable x time) of the attention each observation variable receives, the
    greedy action, and the observation traces, along one episode. ``show_rollout`` adds a
    heatmap of the attention rollout (what the pooled state draws on each variable through
    all layers; with one layer it is an affine function of the attention, so not shown).

    Shapes:
        - trace: ``obs``, ``relevance``, ``last_layer`` each ``(T, 4)``; ``actions`` ``(T,)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = trace["obs"].shape[0]
    maps = [("last_layer", "attention received by each variable (mean over heads and targets)")]
    if show_rollout:
        maps.insert(0, ("relevance", "attention rollout: pooled state <- variable"))
    ratios = [1.0] * len(maps) + [0.18, 1.3]
    fig = Figure(figsize=(11.0, 2.2 + 1.9 * len(maps) + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(ratios), 1, sharex=True, height_ratios=ratios)
    extent = (-0.5, steps - 0.5, 3.5, -0.5)
    for ax, (key, label) in zip(axes[: len(maps)], maps, strict=True):
        im = ax.imshow(
            trace[key].T, aspect="auto", interpolation="nearest", cmap="viridis", extent=extent
        )  # (4, T)
        ax.set_yticks(range(4), VARIABLES, fontsize=8)
        ax.set_title(label, fontsize=9, loc="left")
        fig.colorbar(im, ax=ax, shrink=0.9, pad=0.01, label="weight")
    ax_act = axes[-2]
    ax_act.imshow(
        trace["actions"][None].astype(float),  # (1, T)
        aspect="auto",
        interpolation="nearest",
        cmap="coolwarm",
        vmin=0,
        vmax=1,
        extent=(-0.5, steps - 0.5, 0.5, -0.5),
    )
    ax_act.set_yticks([0], ["action"], fontsize=8)
    ax_act.set_title("greedy action (blue: push left, red: push right)", fontsize=9, loc="left")
    ax = axes[-1]
    obs = trace["obs"]  # (T, 4)
    for j in (0, 1, 3):
        ax.plot(obs[:, j], lw=1, label=VARIABLES[j])
    ax.set_ylabel("position / velocities")
    ax.grid(True, alpha=0.3)
    twin = ax.twinx()
    twin.plot(np.degrees(obs[:, 2]), color="k", lw=1.5, label="pole angle (deg, right axis)")
    twin.set_ylabel("pole angle (deg)")
    lines, labels = ax.get_legend_handles_labels()
    lines_twin, labels_twin = twin.get_legend_handles_labels()
    ax.legend(
        lines + lines_twin,
        labels + labels_twin,
        fontsize=7,
        ncol=4,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )
    ax.set_xlabel("time step")
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


# ----------------------------------------------------------------------------- driver
def run(cfg: CartPoleConfig) -> dict[str, Any]:
    """Train every seed, print the table, write checkpoints, pictures and the JSON."""
    exp = Experiment("rl_cartpole", cfg)
    first_policy: RLStateEncoder | None = None
    for seed in range(cfg.seeds):
        record, policy = train_seed(seed, cfg)
        if first_policy is None:
            first_policy = policy
        ckpt = save_checkpoint(
            exp.out_dir / f"seed{seed}" / "policy.pt",
            {
                "model": policy.state_dict(),
                "config": config_dict(cfg),
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
            f"{record['final_eval_return']}, "
            f"untrained {record['untrained_check_return']:.1f}, {record['wall_s']:.1f} s",
        )
    runs = exp.runs
    table = format_table(
        [
            "seed",
            "solved",
            "steps to solve",
            f"final {cfg.eval_episodes}-ep return",
            "untrained",
            "wall s",
        ],
        [
            [
                r["seed"],
                "yes" if r["solved"] else "no",
                f"{r['steps_to_solve']:,}" if r["solved"] else "-",
                "-" if r["final_eval_return"] is None else f"{r['final_eval_return']:.1f}",
                f"{r['untrained_check_return']:.1f}",
                f"{r['wall_s']:.1f}",
            ]
            for r in runs
        ],
        left=0,
    )
    curve_png = plot_learning_curves(runs, cfg, exp.out_dir / "learning_curve.png")
    assert first_policy is not None
    returns, trace = evaluate(first_policy, [EVAL_SEED_BASE], record=True)
    assert trace is not None
    attn_png = plot_attention_episode(
        trace,
        f"seed 0 policy, one greedy evaluation episode (return {returns[0]:.0f}): "
        "which observation variables the policy attends to",
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
        "wall_s": [r["wall_s"] for r in runs],
        "mean_attention_rollout": dict(
            zip(VARIABLES, trace["relevance"].mean(0).tolist(), strict=True)
        ),
        "mean_attention_last_layer": dict(
            zip(VARIABLES, trace["last_layer"].mean(0).tolist(), strict=True)
        ),
        "attention_episode_return": returns[0],
    }
    return exp.finish(
        table,
        env=ENV_ID,
        goal=f"greedy mean return >= {cfg.target_return:g} over {cfg.eval_episodes} "
        f"episodes within {cfg.total_steps:,} env steps",
        params=count_params(first_policy),
        summary=summary,
        pictures=[str(curve_png), str(attn_png)],
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run(parse_config(CartPoleConfig, argv, __doc__, PRESETS, ALIASES))


if __name__ == "__main__":
    main()

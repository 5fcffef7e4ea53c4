"""Why attention: measured versions of four claims from attention's history.

1. **Long-range dependency** (``recall``): a sequence of ``L`` symbols whose first symbol is
   a "recall" symbol (one of 8) and whose other ``L - 1`` symbols are noise (8 other
   symbols); the label is the first symbol, read out at the last position, so the answer
   lies ``L - 1`` steps back. A GRU (``nn.GRU``, last hidden state) and a 2-layer
   ``GraphTransformer`` on the causal graph (sinusoidal positions, last node) with the same
   parameter budget (the GRU's hidden size is chosen to match within 10 %), the same
   optimiser, batches and number of steps, at ``L`` = 16 .. 512. Chance is 1/8.
2. **Parallelism** (``recall``, same runs): wall time per epoch (a fixed number of
   sequences) of both models at each ``L``.
3. **Quadratic cost** (``cost``): forward + backward time and peak memory of one
   ``GraphAttention`` on a complete graph (fused SDPA kernel, weights never stored), on a
   complete graph with its ``N x N`` weights materialised (``forward_with_weights``), and
   on a sliding window of radius 16 (an edge list, ``backend="auto"``), as ``N`` doubles
   until the next size would pass a time or memory cap; log-log fits give the slopes.
   Peak memory is the RSS growth of one step in a fresh process
   (:mod:`benchmarks.timing`, shared with the benchmarks).
4. **Attention is soft** (``softmax``): the smallest weight on a complete graph with random
   inputs of growing scale, in float32, bfloat16 and float16; and a sweep of the logit gap
   between two sources that finds where the small weight underflows to exactly 0.

Prints a table; writes ``examples/results/why_attention.json`` (:mod:`examples.harness`) and,
in ``--out-dir``, ``recall_accuracy.png``, ``epoch_time.png``, ``quadratic_cost.png``,
``softmax_underflow.png`` and per-run training metrics.

Run: ``python -m examples.why_attention [--threads 1] [--quick] [--parts recall cost softmax]``
(every field of :class:`WhyAttentionConfig` is a flag: ``--help``)

Axis legend: ``B`` batch, ``L``/``N`` sequence length / nodes, ``C`` embed dim, ``H`` heads,
``K`` recall classes, ``G`` gaps in the sweep.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.timing import Step, measure_peak_rss, run_measure_subprocess, time_alternating
from examples.harness import Experiment, config_from_args, config_parser, count_params
from examples.training import TrainConfig, Trainer, atomic_write, seed_everything
from graphattn import (
    AttentionWeights,
    Graph,
    GraphAttention,
    GraphTransformer,
    SinusoidalPositionalEncoding,
    choose_backend,
    graph_attention_with_weights,
)

MODULE = "examples.why_attention"
RESULTS = Path(__file__).resolve().parent / "results" / "why_attention.json"
Part = Literal["recall", "cost", "softmax"]
PARTS: tuple[Part, ...] = get_args(Part)
RecallModel = Literal["attention", "gru"]
MODELS: tuple[RecallModel, ...] = get_args(RecallModel)
CostVariant = Literal["complete", "complete_weights", "window"]
VARIANTS: dict[CostVariant, str] = {
    "complete": "complete graph, fused SDPA (weights never stored)",
    "complete_weights": "complete graph, N x N weights materialised (forward_with_weights)",
    "window": "sliding window |i - j| <= radius, edge list (backend='auto')",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class WhyAttentionConfig:
    """One run of the example; the defaults are the full run."""

    parts: tuple[Part, ...] = PARTS  # which measurements to run
    models: tuple[RecallModel, ...] = MODELS  # recall models to train (both share the budget)
    # --- recall (claims 1 and 2)
    lengths: tuple[int, ...] = (16, 32, 64, 128, 256, 512)  # distance = L - 1
    recall_symbols: int = 8  # classes K; chance accuracy 1 / K
    noise_symbols: int = 8  # distractor symbols, disjoint from the recall symbols
    epochs: int = 12  # epochs of `epoch_sequences` fresh sequences: 384 steps
    epoch_sequences: int = 1024  # sequences per epoch (the unit of the epoch time)
    batch_size: int = 32  # 32 steps per epoch
    lr: float = 3e-3  # AdamW, constant, both models
    grad_clip: float = 1.0  # global gradient-norm clip, both models
    dim: int = 32  # attention model width C (and both models' embedding size)
    num_layers: int = 2  # attention layers
    num_heads: int = 2  # head dim 16: CPU SDPA at head dim 8 ran ~3x slower per FLOP
    test_sequences: int = 1000  # fresh test sequences per length
    seed: int = 0  # model init and data streams
    # --- cost (claim 3)
    cost_variants: tuple[CostVariant, ...] = get_args(CostVariant)  # what the cost part times
    cost_min_n: int = 256  # first N; N doubles from here
    cost_max_n: int = 131072  # never beyond this N
    cost_radius: int = 16  # window radius: 33 in-edges per node
    cost_dim: int = 64  # GraphAttention embed dim
    cost_heads: int = 4  # head dim 16
    cost_batch: int = 1  # sequences per step
    mem_cap_mib: float = 4096.0  # skip a size whose predicted peak passes this (shared box)
    max_step_s: float = 15.0  # skip a size whose predicted fwd+bwd time passes this
    point_budget_s: float = 20.0  # timing budget per point: 3 to 7 timed steps
    fit_min_n: int = 1024  # fit slopes on N >= this (small N is overhead-dominated)
    memory: Literal["subprocess", "inprocess"] = "subprocess"  # a fresh process per point, or not
    # --- softmax (claim 4)
    softmax_nodes: int = 256  # complete graph of N nodes, random q, k
    softmax_heads: int = 4
    softmax_head_dim: int = 16
    softmax_scales: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 8.0)  # q, k ~ N(0, s^2)
    gap_max: float = 120.0  # logit-gap sweep 0 .. gap_max
    gap_step: float = 0.01
    # --- output
    out_dir: str = "runs/why_attention"  # pictures and per-run metrics
    results: str | None = str(RESULTS)  # the summary JSON (None: in out_dir)
    threads: int | None = None  # torch.set_num_threads (None: leave as is)
    progress: bool = True  # tqdm bar per training run

    def __post_init__(self) -> None:
        bad = [p for p in self.parts if p not in PARTS]
        if bad:
            raise ValueError(f"parts must be drawn from {PARTS}, got {bad}")
        bad = [m for m in self.models if m not in MODELS]
        if bad:
            raise ValueError(f"models must be drawn from {MODELS}, got {bad}")
        bad = [v for v in self.cost_variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"cost_variants must be drawn from {tuple(VARIANTS)}, got {bad}")
        if self.memory not in ("subprocess", "inprocess"):
            raise ValueError(f"memory must be 'subprocess' or 'inprocess', got {self.memory!r}")
        if any(n < 2 for n in self.lengths):
            raise ValueError(f"every length must be >= 2, got {self.lengths}")
        if self.epoch_sequences % self.batch_size:
            raise ValueError(
                f"epoch_sequences ({self.epoch_sequences}) must be a multiple of "
                f"batch_size ({self.batch_size})"
            )
        if self.cost_min_n < 2 or self.cost_max_n < self.cost_min_n:
            raise ValueError(
                f"need 2 <= cost_min_n <= cost_max_n, got {self.cost_min_n}, {self.cost_max_n}"
            )


PRESETS = {
    "quick": (
        "a check, not a result",
        {
            "lengths": (16, 64, 256),
            "epochs": 4,
            "epoch_sequences": 512,
            "cost_max_n": 4096,
            "point_budget_s": 5.0,
        },
    )
}
ALIASES = {"cost_max_n": ["--max-n"]}  # the flag's old spelling


# ============================================================================ 1, 2: recall
def make_recall_batch(
    num: int, length: int, recall_symbols: int, noise_symbols: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Sequences whose first token is the label and whose other tokens are noise.

    Tokens ``0..K-1`` are recall symbols, ``K..K+noise-1`` noise symbols.

    Shapes:
        - returns tokens ``(B, L)`` int64 and labels ``(B,)`` int64 in ``[0, K)``.
    """
    k = recall_symbols
    x = torch.randint(k, k + noise_symbols, (num, length), generator=generator)  # (B, L)
    y = torch.randint(0, k, (num,), generator=generator)  # (B,)
    x[:, 0] = y
    return x, y


class RecallStream:
    """Fresh recall batches, ``steps`` per epoch; the epoch seeds the stream (re-iterable, as
    :class:`~examples.training.Trainer` needs)."""

    def __init__(self, cfg: WhyAttentionConfig, length: int, seed: int) -> None:
        self.cfg, self.length, self.seed = cfg, length, seed
        self.steps = cfg.epoch_sequences // cfg.batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(1_000_003 * self.seed + 7919 * self.length + self.epoch)
        for _ in range(self.steps):
            yield make_recall_batch(
                self.cfg.batch_size,
                self.length,
                self.cfg.recall_symbols,
                self.cfg.noise_symbols,
                g,
            )


class AttentionRecall(nn.Module):
    """Embedding + sinusoidal positions -> ``GraphTransformer`` on the causal graph -> the
    last node -> linear head."""

    def __init__(self, vocab: int, classes: int, dim: int, num_layers: int, num_heads: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = SinusoidalPositionalEncoding(dim)
        self.encoder = GraphTransformer(
            num_layers, dim, num_heads, dim_feedforward=2 * dim, dropout=0.0
        )
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: Tensor) -> Tensor:
        """Shapes: tokens ``(B, L)``; returns logits ``(B, K)``."""
        h = self.pos(self.embed(tokens))  # (B, L, C)
        out = self.encoder(h, Graph.causal(tokens.shape[1]))  # (B, L, C)
        return self.head(out[:, -1])  # (B, K)

    def forward_with_weights(self, tokens: Tensor) -> tuple[Tensor, list[AttentionWeights]]:
        """Logits ``(B, K)`` and every layer's attention weights."""
        h = self.pos(self.embed(tokens))  # (B, L, C)
        res = self.encoder.forward_with_weights(h, Graph.causal(tokens.shape[1]))
        return self.head(res.out[:, -1]), res.attentions


class GRURecall(nn.Module):
    """Embedding -> one-layer ``nn.GRU`` -> last hidden state -> linear head."""

    def __init__(self, vocab: int, classes: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.rnn = nn.GRU(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, tokens: Tensor) -> Tensor:
        """Shapes: tokens ``(B, L)``; returns logits ``(B, K)``."""
        out, _ = self.rnn(self.embed(tokens))  # (B, L, hidden)
        return self.head(out[:, -1])  # (B, K)


def build_recall_models(cfg: WhyAttentionConfig) -> dict[str, nn.Module]:
    """Both models, the GRU's hidden size picked so that its parameter count is the closest
    to the attention model's."""
    vocab, k = cfg.recall_symbols + cfg.noise_symbols, cfg.recall_symbols
    attn = AttentionRecall(vocab, k, cfg.dim, cfg.num_layers, cfg.num_heads)
    target = count_params(attn)
    hidden = min(
        range(1, 4 * cfg.dim + 1),
        key=lambda h: abs(count_params(GRURecall(vocab, k, cfg.dim, h)) - target),
    )
    return {"attention": attn, "gru": GRURecall(vocab, k, cfg.dim, hidden)}


@torch.no_grad()
def recall_accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int = 250) -> float:
    """Shapes: x ``(S, L)``, y ``(S,)``."""
    correct = sum(
        int((model(x[i : i + batch]).argmax(-1) == y[i : i + batch]).sum())
        for i in range(0, len(y), batch)
    )
    return correct / len(y)


@torch.no_grad()
def attention_softness(model: AttentionRecall, x: Tensor) -> dict[str, Any]:
    """Per layer: the smallest weight over the causal graph's edges and the mean weight
    (max over heads) that the readout node puts on the recall token.

    Shapes: x ``(B, L)``.
    """
    was = model.training
    model.eval()
    _, attentions = model.forward_with_weights(x)
    model.train(was)
    n = x.shape[1]
    edge = torch.ones(n, n, dtype=torch.bool).tril()  # (L, L): the causal in-edges
    rows = []
    for weights in attentions:
        w = weights.to_dense().float()  # (B, H, L, L)
        rows.append(
            {
                "min_edge_weight": float(w[..., edge].min()),
                "readout_on_recall": float(w[:, :, -1, 0].mean(0).max()),
            }
        )
    return {"layers": rows, "min_edge_weight": min(r["min_edge_weight"] for r in rows)}


def train_recall(
    name: str, model: nn.Module, length: int, cfg: WhyAttentionConfig, test: tuple[Tensor, Tensor]
) -> dict[str, Any]:
    """Train one model at one length; returns accuracy, losses and epoch times."""
    stream = RecallStream(cfg, length, cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)

    def step_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        xb, yb = batch
        logits = model(xb)  # (B, K)
        loss = F.cross_entropy(logits, yb)
        return {"loss": loss, "acc": (logits.argmax(-1) == yb).float().mean()}

    def eval_fn(model: nn.Module) -> dict[str, float]:
        return {"test_acc": recall_accuracy(model, *test)}

    run_dir = Path(cfg.out_dir) / "recall" / f"{name}_L{length}"
    config = TrainConfig(
        max_steps=cfg.epochs * stream.steps,
        log_every=stream.steps,  # one record per epoch: its samples/s gives the epoch time
        grad_clip=cfg.grad_clip,
        out_dir=run_dir,
        resume=False,
        progress=cfg.progress,
    )
    result = Trainer(model, opt, step_fn, stream, config, eval_fn=eval_fn).fit()
    losses = result.values("loss")
    epoch_s = [cfg.epoch_sequences / v for v in result.values("samples_per_s")]
    return {
        "model": name,
        "length": length,
        "test_acc": result.eval["test_acc"],
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "last_train_acc": result.values("acc")[-1],
        "steps": result.step,
        "epoch_s": epoch_s,
        "median_epoch_s": statistics.median(epoch_s),
        "wall_s": result.elapsed_s,
    }


def run_recall(cfg: WhyAttentionConfig) -> dict[str, Any]:
    """Claims 1 and 2: train both models at every length."""
    seed_everything(cfg.seed)
    models = build_recall_models(cfg)
    params = {name: count_params(m) for name, m in models.items()}
    hidden = models["gru"].rnn.hidden_size
    print(
        f"recall: attention {params['attention']:,} params "
        f"({cfg.num_layers} layers, C={cfg.dim}, H={cfg.num_heads}), GRU {params['gru']:,} "
        f"params (hidden {hidden}); chance {1 / cfg.recall_symbols:.3f}",
        flush=True,
    )
    runs, softness = [], {}
    for length in cfg.lengths:
        g = torch.Generator().manual_seed(10_000 + length)
        test = make_recall_batch(
            cfg.test_sequences, length, cfg.recall_symbols, cfg.noise_symbols, g
        )
        for name in cfg.models:
            seed_everything(cfg.seed)
            model = build_recall_models(cfg)[name]
            r = train_recall(name, model, length, cfg, test)
            runs.append(r)
            print(
                f"  L={length:>4} {name:<9}: test acc {r['test_acc']:.3f}, loss "
                f"{r['first_loss']:.3f} -> {r['last_loss']:.3f}, "
                f"{r['median_epoch_s']:.2f} s/epoch",
                flush=True,
            )
            if name == "attention":
                softness[str(length)] = attention_softness(model, test[0][:64])
    return {
        "task": f"copy the first of L symbols (K={cfg.recall_symbols} recall symbols, "
        f"{cfg.noise_symbols} noise symbols), read out at position L - 1",
        "chance": 1 / cfg.recall_symbols,
        "params": params,
        "gru_hidden": hidden,
        "param_ratio_gru_over_attention": params["gru"] / params["attention"],
        "runs": runs,
        "epoch_time_slopes": {
            name: fit_loglog(
                [r["length"] for r in runs if r["model"] == name],
                [r["median_epoch_s"] for r in runs if r["model"] == name],
                min_x=128,
            )
            for name in cfg.models
        },
        "trained_attention_softness": softness,
    }


# ============================================================================ 3: cost
@dataclass
class CostSettings:
    """What one cost point needs (passed as JSON to the measuring subprocess)."""

    dim: int = 64
    heads: int = 4
    batch: int = 1
    radius: int = 16
    threads: int | None = None
    point_budget_s: float = 20.0


def cost_step(variant: str, n: int, s: CostSettings) -> tuple[Step, Graph]:
    """One ``GraphAttention`` forward + backward on ``N`` nodes (loss ``<out, proj>``)."""
    torch.manual_seed(0)
    attn = GraphAttention(s.dim, s.heads)
    x = torch.randn(s.batch, n, s.dim, requires_grad=True)  # (B, N, C)
    graph = Graph.window(n, s.radius) if variant == "window" else Graph.complete(n)
    if variant == "complete_weights":

        def forward() -> Tensor:
            return attn.forward_with_weights(x, graph).out  # (B, N, C)

    else:

        def forward() -> Tensor:
            return attn(x, graph)  # (B, N, C)

    proj = torch.randn(s.batch, n, s.dim)  # (B, N, C)
    return Step(forward, [x, *attn.parameters()], proj), graph


def measure_point(variant: str, n: int, s: CostSettings) -> dict[str, Any]:
    """Peak RSS growth of one step (after a warm-up), then the median of 3-7 timed steps."""
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    step, graph = cost_step(variant, n, s)
    t0 = time.perf_counter()
    mem = measure_peak_rss(step)  # warm-up step + measured step
    per_step = (time.perf_counter() - t0) / 2
    repeats = max(3, min(7, int(s.point_budget_s / max(per_step, 1e-6))))
    timing = time_alternating({variant: step}, repeats=repeats, min_repeats=repeats, warmup=0)
    backend = "dense" if variant != "window" else choose_backend(graph, head_dim=s.dim // s.heads)
    return {
        "variant": variant,
        "n": n,
        "edges": graph.num_edges,
        "backend": backend,
        "time_ms": timing.median_ms[variant],
        "times_ms": timing.times_ms[variant],
        "peak_mib": mem["peak_mib"],
        "memory_method": mem["method"],
    }


def fit_loglog(xs: Sequence[float], ys: Sequence[float], min_x: float = 0.0) -> float | None:
    """Least-squares slope of ``log y`` on ``log x`` over the points with ``x >= min_x`` and
    ``y > 0`` (all positive points when fewer than 2 qualify); ``None`` below 2 points."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y > 0]
    use = [(x, y) for x, y in pts if x >= min_x]
    if len(use) < 2:
        use = pts
    if len(use) < 2:
        return None
    lx = [math.log(x) for x, _ in use]
    ly = [math.log(y) for _, y in use]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / den


def _predict(points: list[dict[str, Any]], key: str, default_growth: float) -> float:
    """The next doubling's value, extrapolating the growth of the last two points."""
    last = points[-1][key]
    if len(points) < 2 or points[-2][key] <= 0 or last <= 0:
        return max(last, 0.0) * default_growth
    growth = min(max(last / points[-2][key], 1.5), 8.0)
    return last * growth


def run_cost(cfg: WhyAttentionConfig) -> dict[str, Any]:
    """Claim 3: time and peak memory as ``N`` doubles, per variant, until a cap."""
    s = CostSettings(
        cfg.cost_dim,
        cfg.cost_heads,
        cfg.cost_batch,
        cfg.cost_radius,
        torch.get_num_threads(),
        cfg.point_budget_s,
    )
    out: dict[str, Any] = {"settings": asdict(s), "variants": {}}
    for variant in cfg.cost_variants:
        points: list[dict[str, Any]] = []
        stop = f"reached cost_max_n={cfg.cost_max_n}"
        n = cfg.cost_min_n
        while n <= cfg.cost_max_n:
            if points:
                t_next = _predict(points, "time_ms", 4.0) / 1e3
                m_next = _predict(points, "peak_mib", 4.0)
                if variant == "complete_weights":  # scores + weights + grad: 3 N x N x H
                    m_next = max(m_next, 3 * 4 * s.batch * s.heads * n * n / 2**20)
                over = []
                if t_next > cfg.max_step_s:
                    over.append(f"{t_next:.1f} s > max_step_s={cfg.max_step_s:g}")
                if m_next > cfg.mem_cap_mib:
                    over.append(f"{m_next:.0f} MiB > mem_cap_mib={cfg.mem_cap_mib:g}")
                if over:
                    stop = f"N={n} skipped: predicted " + " and ".join(over)
                    break
            if cfg.memory == "subprocess":
                p = run_measure_subprocess(
                    MODULE,
                    ["--measure-one", variant, str(n), "--cost-settings", json.dumps(asdict(s))],
                )
                if "error" in p:
                    stop = f"N={n} failed: {p['error']}"
                    break
            else:
                p = measure_point(variant, n, s)  # measure_peak_rss runs gc.collect itself
            points.append(p)
            print(
                f"  cost {variant:<16} N={n:>6}: {p['time_ms']:>9.1f} ms fwd+bwd, "
                f"peak {p['peak_mib']:>8.1f} MiB ({p['backend']})",
                flush=True,
            )
            n *= 2
        ns = [p["n"] for p in points]
        out["variants"][variant] = {
            "description": VARIANTS[variant].replace("radius", f"radius={cfg.cost_radius}"),
            "points": points,
            "largest_n": ns[-1] if ns else None,
            "stopped": stop,
            "time_slope": fit_loglog(ns, [p["time_ms"] for p in points], cfg.fit_min_n),
            "memory_slope": fit_loglog(ns, [p["peak_mib"] for p in points], cfg.fit_min_n),
            # the same fits over the 3 largest N only: the asymptotic regime
            "time_slope_top3": fit_loglog(ns[-3:], [p["time_ms"] for p in points[-3:]]),
            "memory_slope_top3": fit_loglog(ns[-3:], [p["peak_mib"] for p in points[-3:]]),
        }
    out["fit_min_n"] = cfg.fit_min_n
    return out


# ============================================================================ 4: softmax
def gap_sweep(dtype: torch.dtype, backend: str, gaps: Tensor) -> dict[str, Any]:
    """Weights of two sources with logits ``0`` and ``-g`` for every gap ``g``: target ``i``
    has ``q_i = g_i`` (head dim 1, scale 1) and the keys are ``0`` and ``-1``.

    Shapes: gaps ``(G,)``.
    """
    q = gaps.to(dtype)[None, :, None]  # (H=1, G, D=1): the realised gaps in this dtype
    k = torch.tensor([[0.0], [-1.0]], dtype=dtype)[None]  # (1, 2, 1)
    v = torch.eye(2, dtype=dtype)[None]  # (1, 2, 2)
    res = graph_attention_with_weights(q, k, v, None, scale=1.0, backend=backend)
    small = res.attention.to_dense()[0, :, 1].float()  # (G,) weight of the far source
    realised = q[0, :, 0].float()  # (G,)
    zero = (small == 0).nonzero()
    tiny = torch.finfo(dtype).tiny * torch.finfo(dtype).eps  # the smallest subnormal
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "backend": backend,
        "first_zero_gap": float(realised[zero[0, 0]]) if len(zero) else None,
        "largest_positive_gap": float(realised[small > 0].max()),
        "smallest_positive_weight": float(small[small > 0].min()),
        "smallest_subnormal": tiny,
        "predicted_zero_gap": -math.log(tiny / 2),  # exp(-g) rounds to 0 below tiny / 2
        "_curve": (realised, small),
    }


def random_complete(cfg: WhyAttentionConfig, dtype: torch.dtype, scale: float) -> dict[str, Any]:
    """Smallest weight on a complete graph with ``q, k ~ N(0, scale^2)`` (one sample)."""
    g = torch.Generator().manual_seed(cfg.seed)
    shape = (1, cfg.softmax_heads, cfg.softmax_nodes, cfg.softmax_head_dim)  # (B, H, N, D)
    q, k, v = (torch.randn(shape, generator=g) * scale for _ in range(3))
    res = graph_attention_with_weights(
        q.to(dtype), k.to(dtype), v.to(dtype), Graph.complete(cfg.softmax_nodes)
    )
    w = res.attention.to_dense().float()  # (B, H, N, N)
    qf, kf = q.to(dtype).float(), k.to(dtype).float()  # the inputs as rounded to `dtype`
    logits = (qf @ kf.transpose(-1, -2)) / math.sqrt(cfg.softmax_head_dim)  # (B, H, N, N)
    deficit = logits.amax(-1, keepdim=True) - logits  # (B, H, N, N): below the row's max
    zero = w == 0
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "scale": scale,
        "backend": res.backend,
        "max_logit_gap": float(deficit.max()),
        "min_weight": float(w.min()),
        "zero_fraction": float(zero.float().mean()),
        # every exact zero should sit at least `predicted_zero_gap` below its row's maximum
        "min_gap_of_a_zero": float(deficit[zero].min()) if bool(zero.any()) else None,
    }


def run_softmax(cfg: WhyAttentionConfig) -> dict[str, Any]:
    """Claim 4: how small the smallest weight of a complete graph gets, and when it is 0."""
    gaps = torch.arange(0.0, cfg.gap_max + cfg.gap_step / 2, cfg.gap_step)  # (G,)
    sweeps = [gap_sweep(dt, be, gaps) for dt in DTYPES.values() for be in ("dense", "edges")]
    randoms = [random_complete(cfg, dt, s) for dt in DTYPES.values() for s in cfg.softmax_scales]
    return {"sweep": sweeps, "random_complete": randoms}


# ============================================================================ pictures
def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def _save(fig: Any, path: Path) -> str:
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    return str(path)


def plot_recall(recall: dict[str, Any], out: Path) -> list[str]:
    paths = []
    for key, ylabel, name in (
        ("test_acc", "test accuracy", "recall_accuracy.png"),
        ("median_epoch_s", "seconds per epoch (median)", "epoch_time.png"),
    ):
        fig, ax = _figure(5.5, 3.8)
        for model in recall["params"]:
            runs = [r for r in recall["runs"] if r["model"] == model]
            if not runs:
                continue
            label = f"{model} ({recall['params'][model]:,} params)"
            ax.plot([r["length"] for r in runs], [r[key] for r in runs], "o-", label=label)
        if key == "test_acc":
            ax.axhline(recall["chance"], color="grey", ls="--", lw=1, label="chance")
            ax.set_ylim(0, 1.05)
            ax.set_title("recall the first token, read out at the last")
        else:
            ax.set_yscale("log")
            ax.set_title("training time per epoch")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length L (distance L - 1)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / name))
    return paths


def plot_cost(cost: dict[str, Any], out: Path) -> str:
    fig, (ax_t, ax_m) = _figure(10.0, 4.0, ncols=2)
    for variant, v in cost["variants"].items():
        ns = [p["n"] for p in v["points"]]
        for ax, key, slope in (
            (ax_t, "time_ms", v["time_slope"]),
            (ax_m, "peak_mib", v["memory_slope"]),
        ):
            pts = [(n, p[key]) for n, p in zip(ns, v["points"], strict=True) if p[key] > 0]
            label = f"{variant} (slope {slope:.2f})" if slope is not None else variant
            ax.plot([a for a, _ in pts], [b for _, b in pts], "o-", label=label)
    for ax, ylabel in ((ax_t, "forward + backward (ms)"), (ax_m, "peak memory growth (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("nodes N")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    ax_t.set_title(f"time (slopes fitted on N >= {cost['fit_min_n']})")
    ax_m.set_title("peak memory of one step")
    return _save(fig, out / "quadratic_cost.png")


def plot_softmax(softmax: dict[str, Any], out: Path) -> str:
    fig, ax = _figure(5.5, 3.8)
    for s in softmax["sweep"]:
        if s["backend"] != "dense":
            continue
        gaps, w = s["_curve"]
        pos = w > 0
        ax.plot(gaps[pos].numpy(), w[pos].numpy(), label=f"{s['dtype']}")
        if s["first_zero_gap"] is not None:
            ax.axvline(s["first_zero_gap"], ls=":", lw=1, color=ax.lines[-1].get_color())
    ax.set_yscale("log")
    ax.set_xlabel("logit gap g between the two sources")
    ax.set_ylabel("weight of the far source (> 0 only)")
    ax.set_title("softmax weights underflow to exactly 0 at (dotted)")
    ax.legend(fontsize=8)
    return _save(fig, out / "softmax_underflow.png")


# ============================================================================ table
def format_tables(result: dict[str, Any]) -> str:
    lines: list[str] = []
    recall = result.get("recall")
    if recall:
        p = recall["params"]
        lines.append(
            f"(1, 2) recall at distance L - 1: attention {p['attention']:,} params vs GRU "
            f"{p['gru']:,} params; chance {recall['chance']:.3f}"
        )
        lines.append(
            f"{'L':>5} {'attn acc':>9} {'GRU acc':>8} {'attn s/ep':>10} {'GRU s/ep':>9} "
            f"{'GRU/attn':>9} {'attn min w':>11}"
        )
        by = {(r["model"], r["length"]): r for r in recall["runs"]}
        softness = recall["trained_attention_softness"]

        def cell(model: str, length: int, key: str, spec: str) -> str:
            r = by.get((model, length))
            return "-" if r is None else format(r[key], spec)

        for length in sorted({r["length"] for r in recall["runs"]}):
            a, g = by.get(("attention", length)), by.get(("gru", length))
            ratio = (
                "-"
                if a is None or g is None
                else (f"{g['median_epoch_s'] / a['median_epoch_s']:.2f}")
            )
            soft = softness.get(str(length))
            min_w = "-" if soft is None else f"{soft['min_edge_weight']:.2e}"
            lines.append(
                f"{length:>5} {cell('attention', length, 'test_acc', '.3f'):>9} "
                f"{cell('gru', length, 'test_acc', '.3f'):>8} "
                f"{cell('attention', length, 'median_epoch_s', '.2f'):>10} "
                f"{cell('gru', length, 'median_epoch_s', '.2f'):>9} {ratio:>9} {min_w:>11}"
            )
        sl = recall["epoch_time_slopes"]
        lines.append(
            "    epoch-time slope vs L (fit on L >= 128, or all L if fewer than 2): "
            + ", ".join(f"{m} -" if sl[m] is None else f"{m} {sl[m]:.2f}" for m in sl)
        )
    cost = result.get("cost")
    if cost:
        lines.append("")
        lines.append(f"(3) cost of one GraphAttention fwd+bwd (slopes on N >= {cost['fit_min_n']})")
        lines.append(
            f"{'variant':<17} {'N range':>14} {'time slope':>10} {'mem slope':>9} "
            f"{'(top 3 N)':>11} {'ms at largest':>13} {'MiB at largest':>14}  stopped"
        )
        for name, v in cost["variants"].items():
            if not v["points"]:
                lines.append(f"{name:<17} {'-':>14}  {v['stopped']}")
                continue
            first, last = v["points"][0], v["points"][-1]
            span = f"{first['n']}..{last['n']}"
            ts = "-" if v["time_slope"] is None else f"{v['time_slope']:.2f}"
            ms = "-" if v["memory_slope"] is None else f"{v['memory_slope']:.2f}"
            t3, m3 = v["time_slope_top3"], v["memory_slope_top3"]
            top = "-" if t3 is None or m3 is None else f"{t3:.2f}/{m3:.2f}"
            lines.append(
                f"{name:<17} {span:>14} {ts:>10} {ms:>9} {top:>11} "
                f"{last['time_ms']:>13.1f} {last['peak_mib']:>14.1f}  {v['stopped']}"
            )
    soft = result.get("softmax")
    if soft:
        lines.append("")
        lines.append("(4) soft attention: two sources with logits 0 and -g")
        lines.append(
            f"{'dtype':<9} {'backend':<7} {'first g with w=0':>16} {'predicted':>9} "
            f"{'smallest w > 0':>14}"
        )
        for s in soft["sweep"]:
            fz = "none" if s["first_zero_gap"] is None else f"{s['first_zero_gap']:.2f}"
            lines.append(
                f"{s['dtype']:<9} {s['backend']:<7} {fz:>16} {s['predicted_zero_gap']:>9.2f} "
                f"{s['smallest_positive_weight']:>14.3e}"
            )
        lines.append("    complete graph, random q, k ~ N(0, s^2):")
        lines.append(
            f"    {'dtype':<9} {'s':>4} {'max logit gap':>13} {'min weight':>11} {'zeros':>8} "
            f"{'smallest gap of a zero':>22}"
        )
        for r in soft["random_complete"]:
            zg = "-" if r["min_gap_of_a_zero"] is None else f"{r['min_gap_of_a_zero']:.2f}"
            lines.append(
                f"    {r['dtype']:<9} {r['scale']:>4g} {r['max_logit_gap']:>13.1f} "
                f"{r['min_weight']:>11.3e} {100 * r['zero_fraction']:>7.2f}% {zg:>22}"
            )
    return "\n".join(lines)


# ============================================================================ run
def run(cfg: WhyAttentionConfig) -> dict[str, Any]:
    """Run the selected parts, print the tables, write the JSON and the pictures."""
    exp = Experiment("why_attention", cfg)
    result: dict[str, Any] = {}
    pictures: list[str] = []
    part_s: dict[str, float] = {}
    if "recall" in cfg.parts:
        t = time.perf_counter()
        result["recall"] = run_recall(cfg)
        part_s["recall"] = time.perf_counter() - t
        pictures += plot_recall(result["recall"], exp.out_dir)
    if "cost" in cfg.parts:
        t = time.perf_counter()
        result["cost"] = run_cost(cfg)
        part_s["cost"] = time.perf_counter() - t
        pictures.append(plot_cost(result["cost"], exp.out_dir))
    if "softmax" in cfg.parts:
        t = time.perf_counter()
        result["softmax"] = run_softmax(cfg)
        part_s["softmax"] = time.perf_counter() - t
        pictures.append(plot_softmax(result["softmax"], exp.out_dir))
        for sweep in result["softmax"]["sweep"]:
            sweep.pop("_curve")
    return exp.finish(format_tables(result), **result, part_wall_s=part_s, pictures=pictures)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = config_parser(WhyAttentionConfig, __doc__, PRESETS, ALIASES)
    parser.add_argument("--measure-one", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--cost-settings", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_one:  # hidden: one cost point in this (fresh) process, JSON on stdout
        variant, n = args.measure_one[0], int(args.measure_one[1])
        if variant not in VARIANTS:
            raise SystemExit(
                f"--measure-one VARIANT must be one of {tuple(VARIANTS)}, got {variant!r}"
            )
        point = measure_point(variant, n, CostSettings(**json.loads(args.cost_settings)))
        print(json.dumps(point), flush=True)
        return point
    return run(config_from_args(WhyAttentionConfig, args, PRESETS, parser))


if __name__ == "__main__":
    main()

"""A character language model on a causal graph: tiny-shakespeare with nanoGPT's CPU budget.

Every character is a node; the causal graph (``Graph.causal``) lets node ``i`` attend to
nodes ``0..i``, which is GPT's masked self-attention. The sliding-window variant
(``Graph.window(64, 16, causal=True)``) lets each node see only its 16 predecessors.

The budget is nanoGPT's ``config/train_shakespeare_char.py`` with its "CPU" overrides
(README, "I only have a macbook"): 4 layers, 4 heads, 128 dims, context 64, batch 12,
2000 steps, dropout 0, 100 warm-up steps, AdamW with beta2 0.99 and weight decay 0.1,
gradient clip 1, ``eval_iters=20``. nanoGPT's README reports a validation loss of 1.88 for
that run. Three changes inside the same budget (same model size, tokens and steps): rotary
position embeddings in every layer instead of a learned position table; the hidden weight
matrices trained with :class:`examples.training.Muon` (peak lr 0.02) and the rest with AdamW
at a peak lr of 3e-3 (cosine to a tenth) instead of AdamW at 1e-3 throughout.
``--positions learned --optimizer adamw --lr 1e-3 --min-lr 1e-4`` is nanoGPT's
configuration exactly.

Writes ``examples/results/char_lm.json`` (one entry per graph kind, merged; the speed
comparison under ``"speed"``) and, in ``--out-dir``/GRAPH, the metrics, the curves and a
summary of the run.

Generation decodes with a key-value cache (:mod:`graphattn.decoding`): each new character
costs one position, not a pass over the whole context. ``--generate N`` samples ``N``
characters from the trained run's checkpoint (``--temperature``, ``--top-k``, ``--prompt``);
``--compare-decoding`` measures characters per second with the cache and with recomputation
(nanoGPT's sampler) at contexts 64 and 256.

Run: ``python -m examples.char_lm [--graph causal|window] [--steps 2000] [--quick]
[--compare-speed] [--generate N] [--compare-decoding]`` (every field of
:class:`CharLMConfig` is a flag: ``--help``)

Axis legend: ``B`` batch, ``N`` nodes (characters in the context), ``C`` embed dim,
``V`` vocabulary.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.timing import time_alternating
from examples.harness import (
    Experiment,
    config_from_args,
    config_parser,
    count_params,
    format_table,
    write_json,
)
from examples.training import (
    CheckpointManager,
    Muon,
    TrainConfig,
    Trainer,
    ensure_dataset,
    plot_curves,
    seed_everything,
)
from graphattn import Graph, GraphTransformer, KVCache, RotaryEmbedding, choose_backend

RESULTS = Path(__file__).resolve().parent / "results" / "char_lm.json"


@dataclass
class CharLMConfig:
    """One run. The defaults are nanoGPT's shakespeare_char budget for CPUs."""

    graph: Literal["causal", "window"] = "causal"  # "window": causal sliding window
    window_radius: int = 16  # "window": each node attends to itself and 16 predecessors
    num_layers: int = 4  # nanoGPT CPU: n_layer=4
    num_heads: int = 4  # n_head=4
    embed_dim: int = 128  # n_embd=128
    context: int = 64  # block_size=64
    batch_size: int = 12  # batch_size=12
    steps: int = 2000  # max_iters=2000
    dropout: float = 0.0  # dropout=0.0
    positions: Literal["rotary", "learned"] = "rotary"  # RoPE in every layer, or nanoGPT's wpe
    activation: Literal["gelu", "relu2"] = "gelu"  # feed-forward: nanoGPT's GELU, or relu(x)^2
    tie_head: bool = True  # the output head shares the token embedding (nanoGPT)
    zero_init: bool = False  # attention and feed-forward output projections start at zero
    lr: float = 3e-3  # nanoGPT: learning_rate=1e-3
    min_lr: float = 3e-4  # min_lr = learning_rate / 10
    warmup_steps: int = 100  # warmup_iters=100
    weight_decay: float = 0.1  # nanoGPT's default for 2-D weights
    optimizer: Literal["muon", "adamw"] = "muon"  # Muon on hidden matrices + AdamW, or AdamW
    muon_lr: float = 0.02  # Muon's peak learning rate (hidden matrices), same schedule
    muon_weight_decay: float = 0.0  # decoupled: each step scales the hidden matrices by 1 - lr*wd
    beta2: float = 0.99  # "make a bit bigger because number of tokens per iter is small"
    grad_clip: float = 1.0  # grad_clip=1.0
    eval_every: int = 250  # eval_interval=250
    eval_iters: int = 20  # eval_iters=20: batches per loss estimate (nanoGPT's noise level)
    final_eval_iters: int = 200  # a less noisy final estimate, reported next to the above
    val_fraction: float = 0.1  # the last 10% of the text, as nanoGPT's prepare.py
    train_chars: int | None = None  # use only the first this many characters (smoke tests)
    sample_chars: int = 300  # characters to generate after training
    generate: int = 0  # >0: no training; sample this many characters from the run's checkpoint
    prompt: str = ""  # the text a sample continues ("": one newline, as nanoGPT's sampler)
    temperature: float = 0.8  # divides the logits before sampling (nanoGPT's sample.py)
    top_k: int | None = 200  # sample among the k likeliest characters (None: all)
    seed: int = 1337  # nanoGPT's seed
    threads: int | None = None  # torch.set_num_threads; None: leave torch's default
    data_dir: str | None = None  # see examples.training.resolve_data_dir
    out_dir: str = "runs/char_lm"  # per graph kind: metrics, checkpoints, curves, summary
    results: str | None = str(RESULTS)  # the JSON every run is merged into (None: in out_dir)
    progress: bool = True  # tqdm bar


PRESETS = {
    "quick": (
        "a check, not a result",
        {"steps": 200, "train_chars": 200_000, "eval_every": 50, "final_eval_iters": 20},
    )
}


# ----------------------------------------------------------------------------- data
@dataclass
class CharData:
    """The text as ids of its distinct characters, split 90/10 (train first)."""

    chars: list[str]
    train: Tensor  # (T_train,) int64
    val: Tensor  # (T_val,) int64

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] for i in ids)


def load_shakespeare(
    data_dir: str | os.PathLike | None, val_fraction: float = 0.1, limit: int | None = None
) -> CharData:
    """tiny-shakespeare as character ids; the vocabulary is the characters of the whole text
    (65), as in nanoGPT's ``data/shakespeare_char/prepare.py``."""
    root = ensure_dataset("tinyshakespeare", data_dir)
    text = (root / "input.txt").read_text(encoding="utf-8")
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    if limit is not None:
        text = text[:limit]
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)  # (T,)
    n_train = int(len(ids) * (1 - val_fraction))
    return CharData(chars, ids[:n_train], ids[n_train:])


class RandomWindows:
    """Endless random contexts ``(x, y)``, y shifted by one (nanoGPT's ``get_batch``).

    Each "epoch" is ``batches_per_epoch`` batches drawn from a generator seeded with
    ``seed + epoch``, so a resumed :class:`~examples.training.Trainer` sees the same data.
    """

    def __init__(
        self, ids: Tensor, context: int, batch_size: int, seed: int, batches_per_epoch: int = 500
    ) -> None:
        if len(ids) <= context + 1:
            raise ValueError(f"text of {len(ids)} ids is too short for context {context}")
        self.ids, self.context, self.batch_size = ids, context, batch_size
        self.seed, self.batches_per_epoch, self.epoch = seed, batches_per_epoch, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        for _ in range(self.batches_per_epoch):
            yield get_batch(self.ids, self.context, self.batch_size, g)


def get_batch(
    ids: Tensor, context: int, batch_size: int, g: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``batch_size`` random windows: inputs ``(B, N)`` and next-character targets ``(B, N)``."""
    start = torch.randint(len(ids) - context - 1, (batch_size,), generator=g)  # (B,)
    offsets = torch.arange(context)  # (N,)
    x = ids[start[:, None] + offsets]  # (B, N)
    y = ids[start[:, None] + offsets + 1]  # (B, N)
    return x, y


# ----------------------------------------------------------------------------- model
def relu_squared(x: Tensor) -> Tensor:
    """``relu(x) ** 2``, the feed-forward activation of modded-nanogpt (So et al., 2021,
    "Primer")."""
    return F.relu(x).square()


class CharLM(nn.Module):
    """Token + learned position embeddings -> :class:`~graphattn.GraphTransformer` on a
    causal graph -> LayerNorm -> linear head tied to the token embedding (as nanoGPT)."""

    def __init__(self, vocab: int, cfg: CharLMConfig) -> None:
        super().__init__()
        self.context = cfg.context
        self.token = nn.Embedding(vocab, cfg.embed_dim)
        if cfg.positions not in ("learned", "rotary"):
            raise ValueError(f"positions must be 'learned' or 'rotary', got {cfg.positions!r}")
        self.position = (
            nn.Embedding(cfg.context, cfg.embed_dim) if cfg.positions == "learned" else None
        )
        self.rotary = (
            RotaryEmbedding(cfg.embed_dim // cfg.num_heads) if cfg.positions == "rotary" else None
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.body = GraphTransformer(
            cfg.num_layers,
            cfg.embed_dim,
            cfg.num_heads,
            dim_feedforward=4 * cfg.embed_dim,
            dropout=cfg.dropout,
            activation=relu_squared if cfg.activation == "relu2" else cfg.activation,
            norm_first=True,
            final_norm=True,
        )
        self.head = nn.Linear(cfg.embed_dim, vocab, bias=False)
        if cfg.tie_head:
            self.head.weight = self.token.weight  # weight tying
        self.zero_init = cfg.zero_init
        if cfg.graph == "causal":
            self.graph: Graph = Graph.causal(cfg.context)
        elif cfg.graph == "window":
            self.graph = Graph.window(cfg.context, cfg.window_radius, causal=True)
        else:
            raise ValueError(f"graph must be 'causal' or 'window', got {cfg.graph!r}")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2's initialisation: normal(0, 0.02) embeddings and linear weights."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        if self.zero_init:  # every block starts as the identity (modded-nanogpt)
            for layer in self.body.layers:
                nn.init.zeros_(layer.self_attn.out_proj.weight)
                nn.init.zeros_(layer.linear2.weight)

    def graph_for(self, n: int) -> Graph:
        if n == self.context:
            return self.graph
        if self.graph.kind == "causal":
            return Graph.causal(n)
        return Graph.window(n, self.graph.radius, causal=True)

    def forward(self, ids: Tensor) -> Tensor:
        """Logits ``(B, N, V)`` of the next character for ids ``(B, N)``, ``N <= context``."""
        n = ids.shape[1]
        x = self.token(ids)  # (B, N, C)
        if self.position is not None:
            x = x + self.position.weight[:n]
        h = self.body(self.drop(x), self.graph_for(n), rotary=self.rotary)  # (B, N, C)
        return self.head(h)  # (B, N, V)

    def init_cache(self) -> list[KVCache]:
        """Empty key-value caches for :meth:`decode`, one per layer, on the model's graph: a
        causal cache holds ``context`` positions, a window cache its last ``window_radius``."""
        return self.body.init_cache(self.graph)

    def decode(self, ids: Tensor, cache: list[KVCache]) -> Tensor:
        """Logits ``(B, T, V)`` of the next character after each of ``T`` new ids ``(B, T)``
        that follow the positions ``cache`` holds: the last ``T`` rows of :meth:`forward` on
        the whole text so far, at the cost of ``T`` positions."""
        start, n = cache[0].length, ids.shape[1]
        x = self.token(ids)  # (B, T, C)
        if self.position is not None:
            if start + n > self.context:
                raise ValueError(
                    f"ids would reach position {start + n - 1} but the learned position table "
                    f"has context={self.context} rows: reset the cache"
                )
            x = x + self.position.weight[start : start + n]
        h = self.body.decode_step(self.drop(x), cache, rotary=self.rotary)  # (B, T, C)
        return self.head(h)  # (B, T, V)

    @torch.no_grad()
    def generate(
        self,
        ids: Tensor,
        new: int,
        temperature: float = 0.8,
        top_k: int | None = 200,
        generator: torch.Generator | None = None,
        *,
        use_cache: bool = True,
    ) -> Tensor:
        """Append ``new`` sampled characters to ``ids`` ``(B, N0)`` (nanoGPT's sampler).

        ``use_cache=True`` decodes with a key-value cache (:meth:`decode`): the prompt (its
        last ``context`` characters) in one step, then one position per character.
        ``use_cache=False`` recomputes the last ``context`` characters for every new one, as
        nanoGPT does. Up to ``context`` characters in all, both draw the same characters.
        Past it, the recomputation slides its window by one character at a time; a window
        cache (rotary positions) runs on, since it keeps only the last ``window_radius``
        positions anyway; a causal cache (or a learned position table) is full, and restarts
        from the last ``context // 2`` characters.
        """
        if not use_cache:
            for _ in range(new):
                logits = self(ids[:, -self.context :])[:, -1]  # (B, V)
                ids = torch.cat([ids, sample_next(logits, temperature, top_k, generator)], 1)
            return ids
        cache = self.init_cache()
        bounded = self.graph.kind == "causal" or self.position is not None
        logits = self.decode(ids[:, -self.context :], cache)[:, -1] if new else None  # (B, V)
        for i in range(new):
            nxt = sample_next(logits, temperature, top_k, generator)  # (B, 1)
            ids = torch.cat([ids, nxt], 1)
            if i == new - 1:
                break
            if bounded and cache[0].length == self.context:
                for c in cache:
                    c.reset()
                nxt = ids[:, -(self.context // 2) :]  # (B, context // 2): the restart
            logits = self.decode(nxt, cache)[:, -1]  # (B, V)
        return ids


def sample_next(
    logits: Tensor,
    temperature: float = 0.8,
    top_k: int | None = 200,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One character id per row ``(B, 1)`` drawn from ``softmax(logits / temperature)``
    over the ``top_k`` likeliest (nanoGPT's ``sample.py``); ``logits``: ``(B, V)``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    logits = logits / temperature  # (B, V)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, -math.inf)
    return torch.multinomial(F.softmax(logits, -1), 1, generator=generator)  # (B, 1)


def make_optimizer(model: nn.Module, cfg: CharLMConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (nanoGPT's ``configure_optimizers``), or
    :class:`~examples.training.Muon` on the transformer's hidden matrices and AdamW on the
    embedding (tied to the head), biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    if cfg.optimizer == "muon":
        hidden = [p for p in model.body.parameters() if p.dim() == 2]
        ids = {id(p) for p in hidden}
        groups = [
            {
                "params": hidden,
                "use_muon": True,
                "lr": cfg.muon_lr,
                "weight_decay": cfg.muon_weight_decay,
            },
            {
                "params": [p for p in decay if id(p) not in ids],
                "use_muon": False,
                "weight_decay": cfg.weight_decay,
            },
            {"params": no_decay, "use_muon": False, "weight_decay": 0.0},
        ]
        return Muon(groups, adam_lr=cfg.lr, adam_betas=(0.9, cfg.beta2))
    if cfg.optimizer != "adamw":
        raise ValueError(f"optimizer must be 'adamw' or 'muon', got {cfg.optimizer!r}")
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2))


def lr_factor(step: int, cfg: CharLMConfig) -> float:
    """nanoGPT's ``get_lr`` as a multiple of ``cfg.lr``: linear warm-up, cosine to min_lr."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    if step > cfg.steps:
        return cfg.min_lr / cfg.lr
    ratio = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return (cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)) / cfg.lr


@torch.no_grad()
def estimate_loss(model: CharLM, ids: Tensor, cfg: CharLMConfig, iters: int, seed: int) -> float:
    """Mean loss over ``iters`` random batches drawn with a fixed seed (nanoGPT's
    ``estimate_loss``; the same batches at every evaluation)."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(iters):
        x, y = get_batch(ids, cfg.context, cfg.batch_size, g)
        logits = model(x)  # (B, N, V)
        losses.append(F.cross_entropy(logits.flatten(0, 1), y.flatten()).item())
    model.train(was_training)
    return sum(losses) / len(losses)


# ----------------------------------------------------------------------------- run
def run(cfg: CharLMConfig) -> dict[str, Any]:
    """Train one model, print its table and sample, merge its results into the JSON."""
    exp = Experiment("char_lm", cfg)
    seed_everything(cfg.seed)
    data = load_shakespeare(cfg.data_dir, cfg.val_fraction, cfg.train_chars)
    model = CharLM(len(data.chars), cfg)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    loader = RandomWindows(data.train, cfg.context, cfg.batch_size, cfg.seed)
    out_dir = exp.out_dir / cfg.graph

    def step_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        logits = model(x)  # (B, N, V)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    eval_seconds = 0.0

    def eval_fn(model: nn.Module) -> dict[str, float]:
        nonlocal eval_seconds
        t0 = time.perf_counter()
        out = {
            "loss": estimate_loss(model, data.val, cfg, cfg.eval_iters, seed=0),
            "train_loss": estimate_loss(model, data.train, cfg, cfg.eval_iters, seed=0),
        }
        eval_seconds += time.perf_counter() - t0
        return out

    config = TrainConfig(
        max_steps=cfg.steps,
        eval_every=cfg.eval_every,
        log_every=max(1, min(50, cfg.steps // 10)),
        grad_clip=cfg.grad_clip,
        out_dir=out_dir,
        resume=False,
        progress=cfg.progress,
    )
    first_loss = estimate_loss(model, data.val, cfg, cfg.eval_iters, seed=0)
    result = Trainer(model, opt, step_fn, loader, config, scheduler=sched, eval_fn=eval_fn).fit()
    train_s = result.elapsed_s - eval_seconds
    t0 = time.perf_counter()
    final_val = estimate_loss(model, data.val, cfg, cfg.final_eval_iters, seed=1)
    final_train = estimate_loss(model, data.train, cfg, cfg.final_eval_iters, seed=1)
    final_eval_s = time.perf_counter() - t0

    model.eval()
    sample = sample_text(model, data, cfg, cfg.sample_chars)
    curves = plot_curves(
        result.history,
        out_dir / "curves.png",
        names=["loss"],
        title=f"char LM, {cfg.graph} graph",
    )
    tokens = cfg.steps * cfg.batch_size * cfg.context
    summary = {
        "example": "char_lm",
        "graph": cfg.graph,
        "graph_edges": model.graph.num_edges,
        "initial_val_loss": first_loss,
        "val_loss": result.eval["loss"],  # eval_iters=20, nanoGPT's estimate
        "train_loss": result.eval["train_loss"],
        "val_loss_200": final_val,  # final_eval_iters batches, less noisy
        "train_loss_200": final_train,
        "steps": result.step,
        "train_s": train_s,
        "ms_per_step": 1e3 * train_s / result.step,
        "tokens_per_s": tokens / train_s,
        "elapsed_s": result.elapsed_s + final_eval_s,
        "threads": torch.get_num_threads(),
        "parameters": count_params(model),
        "sample": sample,
        "curves": str(curves),
        "config": asdict(cfg),
        "anchor": {"nanoGPT README, shakespeare_char CPU budget, val loss": 1.88},
    }
    write_json(out_dir / "summary.json", summary)
    table = format_table(
        ["graph", "edges", "val(20)", "val(200)", "train(200)", "ms/step", "tokens/s", "wall s"],
        [
            [
                cfg.graph,
                summary["graph_edges"],
                f"{summary['val_loss']:.4f}",
                f"{final_val:.4f}",
                f"{final_train:.4f}",
                f"{summary['ms_per_step']:.1f}",
                f"{summary['tokens_per_s']:.0f}",
                f"{summary['elapsed_s']:.0f}",
            ]
        ],
    )
    print(f"{table}\nanchor: nanoGPT README, same budget: val loss 1.88; goal <= 1.70")
    print(f"\nsample ({cfg.graph} graph, {cfg.sample_chars} characters):\n{sample}")
    merge_results(exp.path, summary)
    print(f"wrote {out_dir / 'summary.json'} and {exp.path}", flush=True)
    return summary


def compare_speed(cfg: CharLMConfig, steps: int = 40, rounds: int = 5) -> dict[str, Any]:
    """Training-step time of the causal and the window model, measured in one process.

    Both models (same weights) take ``rounds`` turns of ``steps`` optimizer steps each on the
    same batches, alternating causal / window after one warm-up turn each
    (:func:`benchmarks.timing.time_alternating`), so that a busy machine slows both alike;
    the result is the median per-step time of each and their ratio, merged into the JSON
    under ``"speed"``.
    """
    exp = Experiment("char_lm", cfg)
    data = load_shakespeare(cfg.data_dir, cfg.val_fraction, cfg.train_chars)
    models, opts = {}, {}
    for graph in ("causal", "window"):
        seed_everything(cfg.seed)
        models[graph] = CharLM(len(data.chars), CharLMConfig(**{**asdict(cfg), "graph": graph}))
        opts[graph] = make_optimizer(models[graph], cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    batches = [get_batch(data.train, cfg.context, cfg.batch_size, g) for _ in range(steps)]

    def train_steps(graph: str) -> Callable[[], None]:
        model, opt = models[graph], opts[graph]

        def run_steps() -> None:
            for x, y in batches:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
                opt.step()

        return run_steps

    timing = time_alternating(
        {graph: train_steps(graph) for graph in models},
        repeats=rounds,
        min_repeats=rounds,
        warmup=1,
    )
    out: dict[str, Any] = {"steps_per_round": steps, "rounds": rounds}
    for graph, model in models.items():
        out[graph] = {
            "ms_per_step": timing.median_ms[graph] / steps,
            "edges": model.graph.num_edges,
            "backend": choose_backend(model.graph, head_dim=cfg.embed_dim // cfg.num_heads),
        }
    out["window_over_causal"] = out["window"]["ms_per_step"] / out["causal"]["ms_per_step"]
    out["threads"] = torch.get_num_threads()
    c, w = out["causal"], out["window"]
    print(
        f"causal: {c['ms_per_step']:.1f} ms/step ({c['edges']} edges, {c['backend']}); "
        f"window: {w['ms_per_step']:.1f} ms/step ({w['edges']} edges, {w['backend']}); "
        f"window/causal {out['window_over_causal']:.2f}, {out['threads']} thread(s)"
    )
    merge_results(exp.path, out, key="speed")
    return out


# ----------------------------------------------------------------------------- generation
def prompt_ids(data: CharData, prompt: str) -> Tensor:
    """``prompt`` as ids ``(1, P)``; ``""`` is one newline."""
    text = prompt or "\n"
    unknown = sorted(set(text) - set(data.chars))
    if unknown:
        raise ValueError(f"prompt has characters outside the vocabulary: {unknown}")
    index = {c: i for i, c in enumerate(data.chars)}
    return torch.tensor([[index[c] for c in text]])  # (1, P)


def sample_text(
    model: CharLM, data: CharData, cfg: CharLMConfig, n: int, *, use_cache: bool = True
) -> str:
    """``n`` characters after ``cfg.prompt``, drawn with ``cfg.temperature`` and ``cfg.top_k``
    by a generator seeded with ``cfg.seed``."""
    start = prompt_ids(data, cfg.prompt)  # (1, P)
    g = torch.Generator().manual_seed(cfg.seed)
    ids = model.generate(start, n, cfg.temperature, cfg.top_k, g, use_cache=use_cache)
    return data.decode(ids[0, start.shape[1] :].tolist())


def load_trained(cfg: CharLMConfig, vocab: int) -> tuple[CharLM, tuple[int, Path] | None]:
    """The model ``cfg`` describes, with the weights of the newest checkpoint of its run
    (``<out_dir>/<graph>/checkpoints``, written at the end of training) and that
    checkpoint's ``(step, path)``; ``None`` and fresh weights when there is none."""
    model = CharLM(vocab, cfg)
    found = CheckpointManager(Path(cfg.out_dir) / cfg.graph / "checkpoints").latest()
    if found is None:
        return model, None
    step, path, state = found
    model.load_state_dict(state["model"])
    return model, (step, path)


def generate_from_checkpoint(cfg: CharLMConfig) -> dict[str, Any]:
    """Print ``cfg.generate`` characters sampled from the trained run's checkpoint, with the
    key-value cache; raises ``FileNotFoundError`` when the run has not been trained."""
    Experiment("char_lm", cfg)  # sets the threads
    data = load_shakespeare(cfg.data_dir, cfg.val_fraction, cfg.train_chars)
    model, found = load_trained(cfg, len(data.chars))
    if found is None:
        where = Path(cfg.out_dir) / cfg.graph / "checkpoints"
        raise FileNotFoundError(
            f"no checkpoint in {where}: train first, python -m examples.char_lm --graph "
            f"{cfg.graph} --out-dir {cfg.out_dir} (same model flags), then add --generate N"
        )
    step, path = found
    model.eval()
    t0 = time.perf_counter()
    text = sample_text(model, data, cfg, cfg.generate)
    seconds = time.perf_counter() - t0
    print(
        f"{cfg.generate} characters from {path} (step {step}, {cfg.graph} graph, temperature "
        f"{cfg.temperature}, top_k {cfg.top_k}; {cfg.generate / seconds:.0f} characters/s "
        f"with the cache, {torch.get_num_threads()} thread(s)):\n{cfg.prompt}{text}"
    )
    return {"text": text, "checkpoint": str(path), "step": step, "seconds": seconds}


def compare_decoding(
    cfg: CharLMConfig, contexts: Sequence[int] = (64, 256), rounds: int = 3
) -> dict[str, Any]:
    """Characters per second of generation with the key-value cache and with recomputation
    (nanoGPT's sampler), at each context ``N`` of ``contexts``.

    A model of context ``N`` (the trained run's weights when it has a checkpoint and rotary
    positions, which fit any context; else fresh ones: the speed does not depend on them)
    draws ``N - 1`` characters after a newline, batch 1, so that the last sees ``N``; the
    cached and the recomputing sampler take ``rounds`` turns, alternated after one warm-up
    each (:func:`benchmarks.timing.time_alternating`), and both must draw the same text. The
    median wall-clock and CPU-time rates (the process's CPU seconds: the rate of a quiet
    machine when other processes share the cores) and their ratios are merged into the
    results JSON under ``"decoding_<graph>"``.
    """
    exp = Experiment("char_lm", cfg)
    data = load_shakespeare(cfg.data_dir, cfg.val_fraction, cfg.train_chars)
    start = prompt_ids(data, "")  # (1, 1)
    out: dict[str, Any] = {"graph": cfg.graph, "batch_size": 1, "rounds": rounds}
    drawn: dict[str, Tensor] = {}  # each sampler's last ids (1, N), per context
    cpu_s: dict[str, list[float]] = {}  # each sampler's CPU seconds per call, per context
    for n in contexts:
        model_cfg = CharLMConfig(**{**asdict(cfg), "context": n})
        found = None
        if cfg.positions == "rotary":
            model, found = load_trained(model_cfg, len(data.chars))
        else:
            model = CharLM(len(data.chars), model_cfg)
        model.eval()
        drawn.clear()
        cpu_s.update(cached=[], recomputed=[])

        def sampler(name: str, model: CharLM = model, n: int = n) -> Callable[[], None]:
            def draw() -> None:
                g = torch.Generator().manual_seed(cfg.seed)
                t0 = time.process_time()
                drawn[name] = model.generate(
                    start, n - 1, cfg.temperature, cfg.top_k, g, use_cache=name == "cached"
                )
                cpu_s[name].append(time.process_time() - t0)

            return draw

        timing = time_alternating(
            {name: sampler(name) for name in cpu_s},
            repeats=rounds,
            min_repeats=rounds,
            warmup=1,
        )
        cps = {name: (n - 1) / (ms / 1e3) for name, ms in timing.median_ms.items()}
        # CPU time of the process (the timed rounds, not the warm-up): what a quiet machine
        # would take, where other processes share the cores
        cpu = {name: (n - 1) / statistics.median(ts[1:]) for name, ts in cpu_s.items()}
        out[str(n)] = {
            "chars": n - 1,
            "cached_chars_per_s": cps["cached"],
            "recomputed_chars_per_s": cps["recomputed"],
            "cached_over_recomputed": cps["cached"] / cps["recomputed"],
            "cached_chars_per_cpu_s": cpu["cached"],
            "recomputed_chars_per_cpu_s": cpu["recomputed"],
            "cpu_cached_over_recomputed": cpu["cached"] / cpu["recomputed"],
            "same_text": bool(torch.equal(drawn["cached"], drawn["recomputed"])),
            "weights": "untrained" if found is None else f"{found[1]} (step {found[0]})",
        }
        r = out[str(n)]
        print(
            f"context {n}: cached {r['cached_chars_per_s']:.0f} chars/s, recomputed "
            f"{r['recomputed_chars_per_s']:.0f} chars/s, ratio {r['cached_over_recomputed']:.2f}"
            f" (per CPU second: {cpu['cached']:.0f} / {cpu['recomputed']:.0f}, ratio "
            f"{r['cpu_cached_over_recomputed']:.2f}), same text: {r['same_text']} "
            f"({cfg.graph} graph, {r['weights']})"
        )
    out["threads"] = torch.get_num_threads()
    merge_results(exp.path, out, key=f"decoding_{cfg.graph}")
    return out


def merge_results(path: Path, summary: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    """Keep one entry per graph kind in the results JSON (or store ``summary`` under a
    top-level ``key``)."""
    merged: dict[str, Any] = {}
    if path.exists():
        try:
            merged = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            merged = {}
    if key is not None:
        merged[key] = summary
    else:
        merged.setdefault("runs", {})[summary["graph"]] = summary
    write_json(path, merged)
    return merged


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = config_parser(CharLMConfig, __doc__, PRESETS)
    parser.add_argument(
        "--compare-speed",
        action="store_true",
        help="only time training steps of the causal and window models, alternating, in one "
        "process; stored under 'speed' in the results JSON",
    )
    parser.add_argument(
        "--compare-decoding",
        action="store_true",
        help="only measure characters per second of generation with the key-value cache and "
        "with recomputation at contexts 64 and 256 (the run's checkpoint when there is one); "
        "stored under 'decoding_<graph>' in the results JSON",
    )
    args = parser.parse_args(argv)
    cfg = config_from_args(CharLMConfig, args, PRESETS, parser)
    if args.compare_speed:
        return compare_speed(cfg)
    if args.compare_decoding:
        return compare_decoding(cfg)
    return generate_from_checkpoint(cfg) if cfg.generate > 0 else run(cfg)


if __name__ == "__main__":
    main()

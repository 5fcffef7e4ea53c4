"""Byte-level sentiment classifier from scratch on movie-review sentences (rt-polarity).

Pang & Lee's sentence polarity data (5,331 positive and 5,331 negative sentences), a fixed
stratified 90/10 split, several seeds. No pretrained embeddings, no word tokenizer: the
input is the UTF-8 bytes of the sentence (:class:`modalities.ByteTokenizer`).

The model is a hybrid: byte embeddings -> a 1-D convolution and a masked max-pool over
``pool`` bytes (n-gram detectors, as a character CNN; each pooled cell becomes a node) ->
learned node positions -> :class:`~graphattn.GraphTransformer` whose lower layers run on a
sliding-window graph (local phrases) and whose last layer on the complete graph, with key
padding -> masked mean pool -> linear.

Anchor: Kim (2014), CNN with random word embeddings ("CNN-rand"), 76.1% accuracy on this
data set (10-fold cross-validation).

Run: ``python -m examples.sentiment [--seeds 5] [--data-dir ...] [--quick]``

Axis legend: ``B`` batch, ``T`` bytes, ``N`` nodes (pooled cells), ``C`` embed dim.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn import Graph, GraphTransformer
from graphattn.plot import plot_attention_heatmap
from graphattn.training import (
    TrainConfig,
    Trainer,
    add_data_dir_argument,
    ensure_dataset,
    plot_curves,
    seed_everything,
)
from modalities import ByteTokenizer

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class SentimentConfig:
    """One experiment (every seed). Defaults: the full run reported in the README."""

    max_bytes: int = 256  # BOS + bytes + EOS; 95th percentile of a sentence is ~210 bytes
    byte_dim: int = 64  # byte embedding size
    conv_kernel: int = 5  # bytes seen by one convolution filter (a character 5-gram)
    pool: int = 3  # bytes per node after the masked max-pool (shorter sequences: faster)
    embed_dim: int = 96  # node feature size C
    num_layers: int = 2  # transformer layers: one on the window graph, one complete
    num_heads: int = 4  # heads (24 dims each)
    window_radius: int = 4  # lower layers: nodes within 4 cells (about 12 bytes) each side
    dropout: float = 0.1  # attention, feed-forward, residual and classifier dropout
    epochs: int = 6  # passes over the training split (CPU budget)
    batch_size: int = 32  # sentences per step
    lr: float = 2e-3  # AdamW peak learning rate
    weight_decay: float = 0.1  # AdamW decoupled weight decay on matrices
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 0
    label_smoothing: float = 0.1  # softer targets: less over-confidence on 9.6k sentences
    test_fraction: float = 0.1  # stratified held-out split, fixed by split_seed
    split_seed: int = 0  # the split is the same for every training seed
    limit: int | None = None  # use this many sentences per class (smoke tests)
    threads: int | None = None  # torch.set_num_threads; None: torch's default
    data_dir: str | None = None  # see graphattn.training.resolve_data_dir
    out_dir: str = "runs/sentiment"  # metrics, checkpoints, curves, heatmaps
    progress: bool = True  # tqdm bar


# ----------------------------------------------------------------------------- data
@dataclass
class Split:
    ids: Tensor  # (S, T) int64 byte ids, padded with ByteTokenizer.PAD
    mask: Tensor  # (S, T) bool, True = real byte
    labels: Tensor  # (S,) int64, 1 = positive
    texts: list[str]


def load_rt_polarity(
    data_dir: str | os.PathLike | None,
    max_bytes: int,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    limit: int | None = None,
) -> tuple[Split, Split]:
    """The sentences as byte ids and a stratified train/test split (fixed by ``split_seed``)."""
    root = ensure_dataset("rt-polarity", data_dir)
    tok = ByteTokenizer()
    g = torch.Generator().manual_seed(split_seed)
    parts: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for label, name in ((0, "rt-polarity.neg"), (1, "rt-polarity.pos")):
        raw = (root / name).read_bytes().decode("utf-8", errors="replace")
        lines = [s.strip() for s in raw.splitlines() if s.strip()]
        if limit is not None:
            lines = lines[:limit]
        order = torch.randperm(len(lines), generator=g).tolist()
        n_test = round(len(lines) * test_fraction)
        parts["test"] += [(lines[i], label) for i in order[:n_test]]
        parts["train"] += [(lines[i], label) for i in order[n_test:]]

    def encode(rows: list[tuple[str, int]]) -> Split:
        texts = [t for t, _ in rows]
        enc = tok.batch_encode(texts, max_bytes)
        return Split(enc.ids, enc.mask, torch.tensor([y for _, y in rows]), texts)

    return encode(parts["train"]), encode(parts["test"])


class LengthBuckets:
    """Shuffled batches of sentences of similar length (less padding, faster steps).

    Epoch ``e``: a permutation seeded with ``seed + e``, cut into chunks of 50 batches,
    sorted by length inside each chunk, batched, and the batches shuffled. Each batch is cut
    to its longest sentence. Has ``set_epoch``, so a resumed Trainer sees the same batches.
    """

    def __init__(self, split: Split, batch_size: int, seed: int) -> None:
        self.split, self.batch_size, self.seed, self.epoch = split, batch_size, seed, 0
        self.lengths = split.mask.sum(1)  # (S,)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g)  # (S,)
        chunk = 50 * self.batch_size
        batches = []
        for c in range(0, len(order), chunk):
            part = order[c : c + chunk]
            part = part[torch.argsort(self.lengths[part], stable=True)]
            batches += list(part.split(self.batch_size))
        for b in torch.randperm(len(batches), generator=g).tolist():
            idx = batches[b]  # (B,)
            n = int(self.lengths[idx].max())
            yield self.split.ids[idx, :n], self.split.mask[idx, :n], self.split.labels[idx]


# ----------------------------------------------------------------------------- model
class ByteClassifier(nn.Module):
    """Bytes -> conv + masked max-pool (nodes) -> graph transformer -> mean pool -> logits."""

    def __init__(self, cfg: SentimentConfig, num_classes: int = 2) -> None:
        super().__init__()
        self.pool = cfg.pool
        self.window_radius = cfg.window_radius
        self.num_layers = cfg.num_layers
        self.byte = nn.Embedding(ByteTokenizer.vocab_size, cfg.byte_dim, padding_idx=0)
        self.conv = nn.Conv1d(
            cfg.byte_dim, cfg.embed_dim, cfg.conv_kernel, padding=cfg.conv_kernel // 2
        )
        max_nodes = -(-cfg.max_bytes // cfg.pool)
        self.position = nn.Parameter(torch.zeros(max_nodes, cfg.embed_dim))
        self.drop = nn.Dropout(cfg.dropout)
        self.body = GraphTransformer(
            cfg.num_layers,
            cfg.embed_dim,
            cfg.num_heads,
            dim_feedforward=2 * cfg.embed_dim,
            dropout=cfg.dropout,
            activation="gelu",
        )
        self.head = nn.Linear(cfg.embed_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.byte.weight, std=0.5)
        self.conv.reset_parameters()
        nn.init.normal_(self.position, std=0.02)
        self.body.reset_parameters()
        self.head.reset_parameters()

    def graphs(self, n: int) -> list[Graph | None]:
        """A sliding window in every layer but the last; the complete graph (None) last."""
        local = Graph.window(n, self.window_radius)
        return [local] * (self.num_layers - 1) + [None]

    def nodes(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Node features ``(B, N, C)`` and node mask ``(B, N)`` (True = real) of bytes."""
        x = self.byte(ids) * mask[..., None]  # (B, T, E), padding zeroed
        h = F.gelu(self.conv(x.transpose(1, 2)))  # (B, C, T)
        h = h.masked_fill(~mask[:, None], -torch.inf)
        t = h.shape[-1]
        pad = (-t) % self.pool
        h = F.pad(h, (0, pad), value=-torch.inf)
        h = F.max_pool1d(h, self.pool)  # (B, C, N)
        node_mask = F.max_pool1d(F.pad(mask.float(), (0, pad))[:, None], self.pool)[:, 0] > 0
        h = h.transpose(1, 2)  # (B, N, C)
        h = torch.where(node_mask[..., None], h, torch.zeros_like(h))
        n = h.shape[1]
        return h + self.position[:n], node_mask

    def forward(self, ids: Tensor, mask: Tensor, *, return_attention: bool = False) -> Any:
        """Logits ``(B, 2)`` for byte ids ``(B, T)`` with mask ``(B, T)`` (True = real)."""
        x, node_mask = self.nodes(ids, mask)  # (B, N, C), (B, N)
        res = self.body(
            self.drop(x),
            self.graphs(x.shape[1]),
            key_padding_mask=~node_mask,
            return_attention=return_attention,
        )
        h = res.out if return_attention else res  # (B, N, C)
        w = node_mask[..., None].to(h.dtype)  # (B, N, 1)
        pooled = (h * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, C): masked mean
        logits = self.head(self.drop(pooled))  # (B, 2)
        return (logits, res.attentions) if return_attention else logits


def make_optimizer(model: nn.Module, cfg: SentimentConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms and the position table."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and n != "position"]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and n != "position")]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr)


@torch.no_grad()
def predict(model: ByteClassifier, split: Split, batch_size: int = 256) -> Tensor:
    """Predicted labels ``(S,)`` (eval mode; sentences sorted by length for speed)."""
    was_training = model.training
    model.eval()
    lengths = split.mask.sum(1)
    order = torch.argsort(lengths)
    preds = torch.empty(len(order), dtype=torch.long)
    for idx in order.split(batch_size):
        n = int(lengths[idx].max())
        preds[idx] = model(split.ids[idx, :n], split.mask[idx, :n]).argmax(-1)
    model.train(was_training)
    return preds


# ----------------------------------------------------------------------------- run
def train_one(cfg: SentimentConfig, seed: int, train: Split, test: Split) -> dict[str, Any]:
    """Train one seed; returns its test accuracy, timings and the model."""
    seed_everything(seed)
    model = ByteClassifier(cfg)
    opt = make_optimizer(model, cfg)
    loader = LengthBuckets(train, cfg.batch_size, seed)
    steps = cfg.epochs * len(loader)
    warm = min(cfg.warmup_steps, max(1, steps // 10))

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1 + torch.cos(torch.tensor((s - warm) / max(1, steps - warm) * torch.pi)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: float(factor(s)))

    def step_fn(model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> dict[str, Tensor]:
        ids, mask, y = batch
        logits = model(ids, mask)  # (B, 2)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        return {"loss": loss, "acc": (logits.argmax(-1) == y).float().mean()}

    def eval_fn(model: nn.Module) -> dict[str, float]:
        # logged once per epoch for the curves; the reported number is the last epoch's
        return {"test_acc": float((predict(model, test) == test.labels).float().mean())}

    out_dir = Path(cfg.out_dir) / f"seed{seed}"
    config = TrainConfig(
        max_steps=steps,
        eval_every=len(loader),
        log_every=max(1, min(50, steps // 10)),
        grad_clip=1.0,
        out_dir=out_dir,
        resume=False,
        progress=cfg.progress,
    )
    result = Trainer(model, opt, step_fn, loader, config, scheduler=sched, eval_fn=eval_fn).fit()
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    return {
        "seed": seed,
        "test_acc": result.eval["test_acc"],
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "steps": result.step,
        "elapsed_s": result.elapsed_s,
        "metrics": str(out_dir / "metrics.jsonl"),
        "model": model,
    }


def byte_labels(tok: ByteTokenizer, ids: Sequence[int], pool: int) -> list[str]:
    """One label per node: the bytes its pooled cell covers (BOS/EOS as < and >)."""
    chars = ["<" if i == tok.BOS else ">" if i == tok.EOS else tok.decode([i]) for i in ids]
    return ["".join(chars[i : i + pool]) for i in range(0, len(chars), pool)]


def attention_pictures(
    model: ByteClassifier, test: Split, preds: Tensor, out_dir: Path, pool: int
) -> dict[str, Any]:
    """Heatmaps of the last (complete-graph) layer, mean over heads, for one correctly and
    one incorrectly classified test sentence of moderate length."""
    tok = ByteTokenizer()
    lengths = test.mask.sum(1)
    short = (lengths >= 40) & (lengths <= 90)
    out: dict[str, Any] = {}
    model.eval()
    for kind, hit in (("correct", True), ("incorrect", False)):
        ok = (preds == test.labels) == hit
        cand = torch.nonzero(ok & short).flatten()
        if len(cand) == 0:
            cand = torch.nonzero(ok).flatten()
        if len(cand) == 0:
            continue
        i = int(cand[0])
        n = int(lengths[i])
        ids, mask = test.ids[i : i + 1, :n], test.mask[i : i + 1, :n]
        with torch.no_grad():
            logits, attentions = model(ids, mask, return_attention=True)
        prob = float(logits.softmax(-1)[0, 1])
        label = "positive" if int(test.labels[i]) == 1 else "negative"
        path = plot_attention_heatmap(
            attentions[-1],
            out_dir / f"sentiment_attention_{kind}.png",
            tokens=byte_labels(tok, ids[0].tolist(), pool),
            title=f"{kind}: label {label}, P(positive)={prob:.2f} (last layer, mean of heads)",
        )
        out[kind] = {
            "index": i,
            "text": test.texts[i],
            "label": label,
            "p_positive": prob,
            "path": str(path),
        }
    return out


def run(cfg: SentimentConfig, seeds: Sequence[int], results_path: Path | None = None) -> dict:
    """Train every seed; write the JSON summary after each, heatmaps of the first seed."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    train, test = load_rt_polarity(
        cfg.data_dir, cfg.max_bytes, cfg.test_fraction, cfg.split_seed, cfg.limit
    )
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    pictures: dict[str, Any] = {}
    for seed in seeds:
        res = train_one(cfg, seed, train, test)
        model = res.pop("model")
        runs.append(res)
        if not pictures:  # the first seed's model: pictures exist even if a run is cut short
            preds = predict(model, test)
            pictures = attention_pictures(model, test, preds, out_dir, cfg.pool)
        accs = [r["test_acc"] for r in runs]
        summary = {
            "example": "sentiment",
            "data": f"rt-polarity, {len(train.labels)} train / {len(test.labels)} test "
            "(stratified, fixed split)",
            "seeds_done": len(runs),
            "seeds_planned": len(seeds),
            "mean_test_acc": statistics.fmean(accs),
            "std_test_acc": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "runs": runs,
            "parameters": sum(p.numel() for p in model.parameters()),
            "threads": torch.get_num_threads(),
            "elapsed_s": time.perf_counter() - t0,
            "config": asdict(cfg),
            "anchor": {"Kim 2014 CNN-rand (10-fold CV)": 0.761},
            "pictures": pictures,
        }
        _write_json(out_dir / "sentiment.json", summary)
        if results_path is not None:
            _write_json(results_path, summary)
    summary["curves"] = str(
        plot_curves(
            runs[-1]["metrics"],
            out_dir / "sentiment_curves.png",
            names=["loss", "test_acc"],
            title=f"sentiment, seed {runs[-1]['seed']}",
        )
    )
    summary["elapsed_s"] = time.perf_counter() - t0
    _write_json(out_dir / "sentiment.json", summary)
    if results_path is not None:
        _write_json(results_path, summary)
    return summary


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def print_table(summary: dict[str, Any]) -> None:
    print(f"\n{'seed':>4} {'test acc':>9} {'loss first->last':>17} {'steps':>6} {'wall s':>7}")
    for r in summary["runs"]:
        loss = f"{r['first_loss']:.3f}->{r['last_loss']:.3f}"
        acc = r["test_acc"]
        print(f"{r['seed']:>4} {acc:>9.4f} {loss:>17} {r['steps']:>6} {r['elapsed_s']:>7.0f}")
    print(
        f"mean {summary['mean_test_acc']:.4f} +/- {summary['std_test_acc']:.4f} over "
        f"{summary['seeds_done']} seeds; anchor Kim 2014 CNN-rand 0.761; "
        f"total wall {summary['elapsed_s']:.0f} s, {summary['threads']} thread(s)"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--dropout", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--out-dir", default="runs/sentiment")
    parser.add_argument("--results", default=str(RESULTS / "sentiment.json"))
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 1000 sentences")
    parser.add_argument("--no-progress", action="store_true")
    add_data_dir_argument(parser)
    args = parser.parse_args(argv)
    cfg = SentimentConfig(
        threads=args.threads,
        data_dir=args.data_dir,
        out_dir=args.out_dir,
        progress=not args.no_progress,
    )
    seeds = list(range(args.seeds))
    if args.quick:
        cfg.epochs, cfg.limit, seeds = 1, 500, [0]
    if args.epochs is not None:
        cfg.epochs = args.epochs
    if args.dropout is not None:
        cfg.dropout = args.dropout
    summary = run(cfg, seeds, None if args.quick else Path(args.results))
    print_table(summary)
    for kind, pic in summary["pictures"].items():
        print(
            f"{kind}: {pic['text']!r} ({pic['label']}, P(positive)={pic['p_positive']:.2f})"
            f" -> {pic['path']}"
        )
    return summary


if __name__ == "__main__":
    main()

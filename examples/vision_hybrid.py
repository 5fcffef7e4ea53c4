"""Hybrid CNN + graph attention on scikit-learn's 8x8 handwritten digits.

Three models of similar size, trained the same way (AdamW, cosine schedule, random shifts of
up to one pixel), on a fixed stratified 80/20 split (``random_state=0``), over several seeds:

- ``hybrid``: a small conv stem (8x8 -> 4x4 feature map); its 16 cells become nodes with 2-D
  sin-cos positions (``modalities.CNNFeatureAdapter``), then a ``GraphTransformer`` whose
  first layer runs on the 3x3 grid neighbourhood and second on the complete graph, mean pool,
  linear head;
- ``cnn``: the same stem plus more convolutions, global average pool, linear head;
- ``vit``: ViT-style patches (2x2 pixels -> 16 nodes, ``modalities.PatchAdapter``) and a
  ``GraphTransformer`` on the complete graph.

Writes ``examples/results/vision_hybrid.json`` (atomically) and, in ``--out``, per-run
metrics (``examples.training.Trainer``) and an attention-rollout overlay of the hybrid model
on a test digit (``attention_rollout.png``).

Run: ``python -m examples.vision_hybrid [--seeds 5] [--epochs 40] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from examples.training import BatchLoader, TrainConfig, Trainer, atomic_write, seed_everything
from graphattn import Graph, GraphTransformer
from graphattn.explain import attention_rollout
from graphattn.plot import plot_image_attention
from modalities import CNNFeatureAdapter, PatchAdapter

RESULTS = Path(__file__).resolve().parent / "results" / "vision_hybrid.json"
MODELS = ("hybrid", "cnn", "vit")


@dataclass
class VisionConfig:
    """One run of the example; the defaults are the full run."""

    models: tuple[str, ...] = MODELS  # which models to train
    seeds: int = 5  # seeds 0..seeds-1 per model
    epochs: int = 40  # passes over the 1437 training images
    batch_size: int = 64  # 23 steps per epoch
    lr: float = 3e-3  # AdamW peak learning rate, cosine-annealed to 0
    weight_decay: float = 0.05  # AdamW decoupled weight decay
    dim: int = 64  # node width of the attention models
    shift: int = 1  # random translation of up to this many pixels (0: no augmentation)
    train_limit: int | None = None  # use only the first n training images (smoke tests)
    test_limit: int | None = None  # use only the first n test images (smoke tests)
    out_dir: str = "runs/vision_hybrid"  # per-run metrics and the rollout picture
    results_path: str = str(RESULTS)  # the summary JSON
    threads: int | None = None  # torch.set_num_threads (None: leave as is)
    progress: bool = True  # tqdm bar per run


# ----------------------------------------------------------------------------- data
def load_digits_split(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The 1797 digits scaled to [0, 1] as ``(S, 1, 8, 8)`` and a stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # (S, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.long)  # (S,)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=0.2, stratify=y.numpy(), random_state=seed
    )
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def random_shift(x: Tensor, max_shift: int) -> Tensor:
    """Translate every image by its own random ``(dy, dx)`` in ``[-s, s]``, zero fill.

    Shapes:
        - x: ``(B, C, H, W)``; returns the same shape.
    """
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))  # (B, C, H + 2s, W + 2s)
    dy = torch.randint(0, 2 * s + 1, (b,))  # (B,)
    dx = torch.randint(0, 2 * s + 1, (b,))  # (B,)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b)[:, None, None, None]  # (B, 1, 1, 1)
    chan = torch.arange(x.shape[1])[None, :, None, None]  # (1, C, 1, 1)
    return padded[batch, chan, rows, cols]  # (B, C, H, W)


# ----------------------------------------------------------------------------- models
def stem(width: int) -> nn.Sequential:
    """8x8 -> 4x4: 3x3 conv (1 -> width / 2), then 3x3 stride-2 conv (-> width)."""
    return nn.Sequential(
        nn.Conv2d(1, width // 2, 3, padding=1, bias=False),
        nn.BatchNorm2d(width // 2),
        nn.ReLU(inplace=True),
        nn.Conv2d(width // 2, width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    )


class HybridNet(nn.Module):
    """Conv stem -> 16 feature-map cells as nodes -> graph transformer -> mean pool -> head.

    Layer 0 runs on the 3x3 grid neighbourhood of each cell, layer 1 on the complete graph.
    """

    def __init__(self, dim: int = 64, num_layers: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.adapter = CNNFeatureAdapter(stem(dim), dim=dim, in_channels=1, grid_radius=1)
        self.encoder = GraphTransformer(
            num_layers, dim, 4, dim_feedforward=2 * dim, dropout=0.1, activation="gelu"
        )
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: Tensor, return_attention: bool = False) -> Any:
        nodes = self.adapter(images)  # features (B, 16, D)
        h, w = nodes.grid_shape
        graphs = [Graph.grid(h, w, radius=1)] + [None] * (len(self.encoder.layers) - 1)
        res = self.encoder(nodes.features, graphs, return_attention=return_attention)
        out = res.out if return_attention else res  # (B, N, D)
        logits = self.head(out.mean(1))  # (B, classes)
        return (logits, res.attentions) if return_attention else logits


class CNNNet(nn.Module):
    """Conv stem -> two 3x3 conv blocks at 4x4 -> global average pool -> head."""

    def __init__(self, width: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        blocks = [stem(width)]
        for _ in range(2):
            blocks += [
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        fmap = self.features(images)  # (B, W, 4, 4)
        return self.head(self.dropout(fmap.mean((2, 3))))  # (B, classes)


class PatchViT(nn.Module):
    """2x2 patches -> 16 nodes with sin-cos positions -> graph transformer on the complete
    graph -> mean pool -> head (ViT without a CLS token)."""

    def __init__(self, dim: int = 64, num_layers: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.adapter = PatchAdapter(1, 2, dim)
        self.encoder = GraphTransformer(
            num_layers, dim, 4, dim_feedforward=2 * dim, dropout=0.1, activation="gelu"
        )
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        nodes = self.adapter(images)  # (B, 16, D)
        return self.head(self.encoder(nodes.features).mean(1))  # (B, classes)


def build_model(name: str, dim: int) -> nn.Module:
    if name == "hybrid":
        return HybridNet(dim)
    if name == "cnn":
        return CNNNet(dim)
    if name == "vit":
        return PatchViT(dim)
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- training
@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int = 512) -> float:
    was = model.training
    model.eval()
    correct = sum(
        int((model(x[i : i + batch]).argmax(-1) == y[i : i + batch]).sum())
        for i in range(0, len(y), batch)
    )
    model.train(was)
    return correct / len(y)


def train_one(
    name: str, seed: int, cfg: VisionConfig, data: tuple[Tensor, Tensor, Tensor, Tensor]
) -> dict[str, Any]:
    """Train one model with one seed; returns its test accuracy, losses and timing."""
    x_train, y_train, x_test, y_test = data
    seed_everything(seed)
    model = build_model(name, cfg.dim)
    loader = BatchLoader(x_train, y_train, batch_size=cfg.batch_size, seed=seed)
    steps = cfg.epochs * len(loader)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=max(steps, 1), pct_start=0.1
    )

    def step_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        xb, yb = batch
        logits = model(random_shift(xb, cfg.shift))  # (B, classes)
        loss = F.cross_entropy(logits, yb, label_smoothing=0.1)
        return {"loss": loss, "acc": (logits.argmax(-1) == yb).float().mean()}

    def eval_fn(model: nn.Module) -> dict[str, float]:
        return {"test_acc": accuracy(model, x_test, y_test)}

    run_dir = Path(cfg.out_dir) / name / f"seed{seed}"
    config = TrainConfig(
        max_steps=steps,
        eval_every=0,
        log_every=1 if steps < 50 else len(loader),
        out_dir=run_dir,
        resume=False,
        progress=cfg.progress,
    )
    t0 = time.perf_counter()
    result = Trainer(model, opt, step_fn, loader, config, scheduler=sched, eval_fn=eval_fn).fit()
    wall = time.perf_counter() - t0
    records = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if '"kind": "train"' in line
    ]
    return {
        "model": name,
        "seed": seed,
        "test_acc": result.eval["test_acc"],
        "first_loss": records[0]["loss"],
        "last_loss": records[-1]["loss"],
        "steps": result.step,
        "wall_s": wall,
        "_model": model,
    }


def save_rollout(model: HybridNet, x_test: Tensor, y_test: Tensor, path: Path) -> Path:
    """Attention rollout of the hybrid model (mean over target cells, as the mean pool reads
    every cell) over one test digit."""
    model.eval()
    with torch.no_grad():
        logits, attentions = model(x_test[:1], return_attention=True)
        rollout = attention_rollout(attentions)  # (1, 16, 16)
    relevance = rollout[0].mean(0)  # (16,) what the pooled output draws from each cell
    pred, true = int(logits.argmax(-1)), int(y_test[0])
    return plot_image_attention(
        x_test[0, 0],
        relevance,
        path,
        grid=(4, 4),
        label="rollout",
        title=f"hybrid: attention rollout over 4x4 stem cells (true {true}, predicted {pred})",
    )


def summarize(runs: list[dict[str, Any]], params: dict[str, int]) -> list[dict[str, Any]]:
    rows = []
    for name in params:
        mine = [r for r in runs if r["model"] == name]
        accs = [r["test_acc"] for r in mine]
        rows.append(
            {
                "model": name,
                "params": params[name],
                "seeds": len(accs),
                "mean_acc": statistics.fmean(accs),
                "std_acc": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "accs": accs,
                "wall_s": sum(r["wall_s"] for r in mine),
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'model':<8} {'params':>8} {'seeds':>5} {'test acc (mean ± std)':>22} {'wall s':>8}",
    ]
    for r in rows:
        acc = f"{100 * r['mean_acc']:.2f} ± {100 * r['std_acc']:.2f} %"
        lines.append(
            f"{r['model']:<8} {r['params']:>8,} {r['seeds']:>5} {acc:>22} {r['wall_s']:>8.1f}"
        )
    return "\n".join(lines)


def run(cfg: VisionConfig) -> dict[str, Any]:
    """Train every model for every seed, print the table, write the JSON and the picture."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    data = load_digits_split(0)
    x_train, y_train, x_test, y_test = data
    if cfg.train_limit is not None:
        x_train, y_train = x_train[: cfg.train_limit], y_train[: cfg.train_limit]
    if cfg.test_limit is not None:
        x_test, y_test = x_test[: cfg.test_limit], y_test[: cfg.test_limit]
    data = (x_train, y_train, x_test, y_test)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    runs, params, hybrid = [], {}, None
    for name in cfg.models:
        params[name] = count_params(build_model(name, cfg.dim))
        for seed in range(cfg.seeds):
            r = train_one(name, seed, cfg, data)
            model = r.pop("_model")
            if name == "hybrid" and seed == 0:
                hybrid = model
            print(
                f"{name} seed {seed}: test acc {100 * r['test_acc']:.2f} %, "
                f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}, {r['wall_s']:.1f} s",
                flush=True,
            )
            runs.append(r)
    rows = summarize(runs, params)
    table = format_table(rows)
    print(table, flush=True)
    picture = None
    if hybrid is not None:
        picture = str(save_rollout(hybrid, x_test, y_test, out / "attention_rollout.png"))
    result = {
        "example": "vision_hybrid",
        "data": f"sklearn load_digits, stratified 80/20 (random_state=0): "
        f"{len(y_train)} train / {len(y_test)} test",
        "threads": torch.get_num_threads(),
        "total_wall_s": time.perf_counter() - t_start,
        "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
        "summary": rows,
        "runs": runs,
        "picture": picture,
        "table": table,
    }
    path = Path(cfg.results_path)
    with atomic_write(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {path}" + (f" and {picture}" if picture else ""), flush=True)
    return result


def parse_args(argv: Sequence[str] | None) -> VisionConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=None, help="default 40 (quick: 2)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--out", default="runs/vision_hybrid")
    p.add_argument("--results", default=str(RESULTS), help="summary JSON path")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--quick", action="store_true", help="1 seed, 2 epochs: a check, not a result")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    epochs = a.epochs if a.epochs is not None else (2 if a.quick else 40)
    return VisionConfig(
        models=tuple(a.models),
        seeds=1 if a.quick else a.seeds,
        epochs=epochs,
        out_dir=a.out,
        results_path=a.results,
        threads=a.threads,
        progress=not a.no_progress,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()

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

Writes ``examples/results/vision_hybrid.json`` (:mod:`examples.harness`) and, in
``--out-dir``, per-run metrics (``examples.training.Trainer``) and an attention-rollout
overlay of the hybrid model on a test digit (``attention_rollout.png``).

Run: ``python -m examples.vision_hybrid [--seeds 5] [--epochs 40] [--quick]`` (every
field of :class:`VisionConfig` is a flag: ``--help``)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from examples.harness import Experiment, count_params, format_table, parse_config, pm, summarize
from examples.training import BatchLoader, TrainConfig, Trainer, seed_everything
from graphattn import Graph, GraphTransformer
from graphattn.explain import attention_rollout
from graphattn.plot import plot_image_attention
from modalities import CNNFeatureAdapter, PatchAdapter

RESULTS = Path(__file__).resolve().parent / "results" / "vision_hybrid.json"
Model = Literal["hybrid", "cnn", "vit"]
MODELS: tuple[Model, ...] = get_args(Model)


@dataclass
class VisionConfig:
    """One run of the example; the defaults are the full run."""

    models: tuple[Model, ...] = MODELS  # which models to train
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
    results: str | None = str(RESULTS)  # the summary JSON (None: in out_dir)
    threads: int | None = None  # torch.set_num_threads (None: leave as is)
    progress: bool = True  # tqdm bar per run


PRESETS = {"quick": ("a check, not a result", {"seeds": 1, "epochs": 2})}


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

    def forward(self, images: Tensor, need_weights: bool = False) -> Any:
        nodes = self.adapter(images)  # features (B, 16, D)
        h, w = nodes.grid_shape
        graphs = [Graph.grid(h, w, radius=1)] + [None] * (len(self.encoder.layers) - 1)
        res = self.encoder(nodes.features, graphs, need_weights=need_weights)
        out = res.out if need_weights else res  # (B, N, D)
        logits = self.head(out.mean(1))  # (B, classes)
        return (logits, res.attentions) if need_weights else logits


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
) -> tuple[dict[str, Any], nn.Module]:
    """Train one model with one seed; returns its test accuracy, losses and timing, and the
    trained model."""
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
    result = Trainer(model, opt, step_fn, loader, config, scheduler=sched, eval_fn=eval_fn).fit()
    losses = result.values("loss")
    record = {
        "model": name,
        "seed": seed,
        "test_acc": result.eval["test_acc"],
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "steps": result.step,
        "wall_s": result.elapsed_s,
    }
    return record, model


def save_rollout(model: HybridNet, x_test: Tensor, y_test: Tensor, path: Path) -> Path:
    """Attention rollout of the hybrid model (mean over target cells, as the mean pool reads
    every cell) over one test digit."""
    model.eval()
    with torch.no_grad():
        logits, attentions = model(x_test[:1], need_weights=True)
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


def run(cfg: VisionConfig) -> dict[str, Any]:
    """Train every model for every seed, print the table, write the JSON and the picture."""
    exp = Experiment("vision_hybrid", cfg)
    x_train, y_train, x_test, y_test = load_digits_split(0)
    x_train, y_train = x_train[: cfg.train_limit], y_train[: cfg.train_limit]
    x_test, y_test = x_test[: cfg.test_limit], y_test[: cfg.test_limit]
    data = (x_train, y_train, x_test, y_test)
    hybrid, params = None, {}
    for name in cfg.models:
        for seed in range(cfg.seeds):
            r, model = train_one(name, seed, cfg, data)
            hybrid = model if name == "hybrid" and seed == 0 else hybrid
            params[name] = count_params(model)
            exp.add(
                r,
                f"{name} seed {seed}: test acc {100 * r['test_acc']:.2f} %, "
                f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}, {r['wall_s']:.1f} s",
            )
    rows = [{**row, "params": params[row["model"]]} for row in summarize(exp.runs, "model")]
    table = format_table(
        ["model", "params", "seeds", "test acc (mean ± std)", "wall s"],
        [
            [
                r["model"],
                f"{r['params']:,}",
                r["seeds"],
                pm(r["mean"], r["std"]),
                f"{r['wall_s']:.1f}",
            ]
            for r in rows
        ],
    )
    picture = None
    if hybrid is not None:
        picture = str(save_rollout(hybrid, x_test, y_test, exp.out_dir / "attention_rollout.png"))
    return exp.finish(
        table,
        data=f"sklearn load_digits, stratified 80/20 (random_state=0): "
        f"{len(y_train)} train / {len(y_test)} test",
        summary=rows,
        picture=picture,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run(parse_config(VisionConfig, argv, __doc__, PRESETS))


if __name__ == "__main__":
    main()

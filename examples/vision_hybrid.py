"""Hybrid CNN + graph attention on scikit-learn's 8x8 handwritten digits.

Three models of similar size, trained the same way (AdamW, cosine schedule, random shifts of
up to one pixel), on a fixed stratified 80/20 split (``random_state=0``), over several seeds:

- ``hybrid``: the CNN's convolutions (a stem from 8x8 to a 4x4 feature map, two 3x3 blocks);
  the 16 cells of the map become nodes (``modalities.CNNFeatureAdapter``), then one
  graph-transformer layer on the complete graph as a gated residual block (LayerScale,
  stochastic depth), mean pool, linear head;
- ``cnn``: the stem and the two 3x3 blocks, global average pool, linear head;
- ``vit``: ViT-style patches (2x2 pixels -> 16 nodes, ``modalities.PatchAdapter``) and a
  ``GraphTransformer`` on the complete graph.

Writes ``examples/results/vision_hybrid.json`` (:mod:`examples.harness`) and, in
``--out-dir``, per-run metrics (``examples.training.Trainer``) and one attention-rollout
overlay of the seed-0 hybrid per class (``rollout_class0.png`` ... ``rollout_class9.png``).
``--validate`` trains on 80 % of the training part and evaluates on the other 20 %: settings
are chosen so, never on the test split.

Run: ``python -m examples.vision_hybrid [--seeds 5] [--epochs 40] [--validate] [--quick]``
(every field of :class:`VisionConfig` is a flag: ``--help``)
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
from graphattn import (
    AttentionWeights,
    Graph,
    GraphTransformer,
    GraphTransformerLayer,
    LayerOutput,
)
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
    dim: int = 64  # width of the CNN and the ViT-style model
    hybrid_dim: int = 56  # width of the hybrid (56: about the CNN's size, 101k against 94k)
    drop_path: float = 0.2  # stochastic depth of the hybrid's attention blocks (chosen on
    # --validate from 0, 0.2 and 0.5)
    shift: int = 1  # random translation of up to this many pixels (0: no augmentation)
    train_limit: int | None = None  # use only the first n training images (smoke tests)
    test_limit: int | None = None  # use only the first n test images (smoke tests)
    validate: bool = False  # hold out 20% of the training images, report accuracy on them
    # instead of the test split (choose settings with this, never on the test split)
    out_dir: str = "runs/vision_hybrid"  # per-run metrics and the rollout pictures
    results: str | None = str(RESULTS)  # the summary JSON (None: in out_dir)
    threads: int | None = None  # torch.set_num_threads (None: leave as is)
    progress: bool = True  # tqdm bar per run


PRESETS = {"quick": ("a check, not a result", {"seeds": 1, "epochs": 2})}


# ----------------------------------------------------------------------------- data
def stratified_split(
    x: Tensor, y: Tensor, seed: int = 0, fraction: float = 0.2
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``x, y`` split into ``(x_a, y_a, x_b, y_b)``, ``fraction`` of each class in ``b``."""
    from sklearn.model_selection import train_test_split

    idx_a, idx_b = train_test_split(
        torch.arange(len(y)).numpy(), test_size=fraction, stratify=y.numpy(), random_state=seed
    )
    return x[idx_a], y[idx_a], x[idx_b], y[idx_b]


def load_digits_split(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The 1797 digits scaled to [0, 1] as ``(S, 1, 8, 8)`` and a stratified 80/20 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # (S, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.long)  # (S,)
    return stratified_split(x, y, seed)


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


def conv_block(width: int) -> list[nn.Module]:
    """A 3x3 convolution that keeps the size of the map, BatchNorm, ReLU."""
    return [
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]


class LayerScaled(nn.Module):
    """A transformer layer as a gated residual block, ``x + gamma * (layer(x) - x)``, with one
    gate per channel initialised to ``init`` (LayerScale: Touvron et al., 2021, "Going deeper
    with Image Transformers"): the block starts as the identity, so the network starts as
    the CNN below it, and attention takes over only as far as training pulls the gates up.

    Shapes:
        - x: ``(B, N, D)``; returns the same shape.
    """

    def __init__(
        self, layer: GraphTransformerLayer, init: float = 1e-4, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.layer = layer
        self.init = init
        self.drop_path = drop_path
        self.gamma = nn.Parameter(torch.full((layer.embed_dim,), init))  # (D,)

    def _branch(self, x: Tensor, out: Tensor) -> Tensor:
        """``gamma * (out - x)``, in training dropped for whole samples with probability
        ``drop_path`` (stochastic depth: Huang et al., 2016) and rescaled."""
        branch = self.gamma * (out - x)  # (B, N, D)
        if not self.training or self.drop_path == 0.0:
            return branch
        keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.drop_path  # (B, 1, 1)
        return branch * keep / (1.0 - self.drop_path)

    def reset_parameters(self) -> None:
        self.layer.reset_parameters()
        nn.init.constant_(self.gamma, self.init)

    def forward(self, x: Tensor, graph: Graph | None = None) -> Tensor:
        return x + self._branch(x, self.layer(x, graph))  # (B, N, D)

    def forward_with_weights(self, x: Tensor, graph: Graph | None = None) -> LayerOutput:
        res = self.layer.forward_with_weights(x, graph)
        return LayerOutput(x + self._branch(x, res.out), res.attention)

    def extra_repr(self) -> str:
        return f"init={self.init}, drop_path={self.drop_path}"


class HybridNet(nn.Module):
    """The CNN's convolutions (stem and two 3x3 blocks at 4x4) -> the 16 feature-map cells as
    nodes -> gated graph-transformer layers on the complete graph -> mean pool -> head.

    Convolutions do the local work, attention the global mixing (CoAtNet's order: Dai et
    al., 2021). Every transformer layer is a :class:`LayerScaled` residual block with
    stochastic depth, and there is no LayerNorm between the last block and the mean pool: the
    pool then weighs each cell by the size of its features, as the CNN's global average pool
    does (the example's section in ``docs/examples.md`` gives the experiments behind these
    choices). The nodes carry no added positions: the convolutions' zero padding already
    tells the cells apart.

    Args:
        dim: width of the convolutions and of the nodes ``D`` (56: about the CNN's size).
        num_layers: transformer layers.
        layer_scale: initial value of the gates.
        drop_path: probability of dropping a block's branch for a sample in training.
        num_classes: classes.

    Shapes:
        - images: ``(B, 1, 8, 8)``; returns logits ``(B, classes)``.
    """

    def __init__(
        self,
        dim: int = 56,
        num_layers: int = 1,
        layer_scale: float = 1e-4,
        drop_path: float = 0.2,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        convs = [stem(dim), *conv_block(dim), *conv_block(dim)]
        self.adapter = CNNFeatureAdapter(
            nn.Sequential(*convs), dim=dim, in_channels=1, pos_embed="none"
        )
        self.blocks = nn.ModuleList(
            LayerScaled(
                GraphTransformerLayer(
                    dim, 4, dim_feedforward=2 * dim, dropout=0.1, activation="gelu"
                ),
                layer_scale,
                drop_path,
            )
            for _ in range(num_layers)
        )
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(B, classes)``."""
        x = self.adapter(images).features  # (B, 16, D)
        for block in self.blocks:
            x = block(x)  # (B, 16, D), complete graph
        return self.head(self.dropout(x.mean(1)))  # (B, classes)

    def forward_with_weights(self, images: Tensor) -> tuple[Tensor, list[AttentionWeights]]:
        """Logits ``(B, classes)`` and every layer's attention weights."""
        x = self.adapter(images).features  # (B, 16, D)
        attentions = []
        for block in self.blocks:
            res = block.forward_with_weights(x)
            x = res.out  # (B, 16, D)
            attentions.append(res.attention)
        return self.head(self.dropout(x.mean(1))), attentions


class CNNNet(nn.Module):
    """Conv stem -> two 3x3 conv blocks at 4x4 -> global average pool -> head."""

    def __init__(self, width: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(stem(width), *conv_block(width), *conv_block(width))
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


def build_model(name: str, dim: int, hybrid_dim: int = 56, drop_path: float = 0.2) -> nn.Module:
    if name == "hybrid":
        return HybridNet(hybrid_dim, drop_path=drop_path)
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
    """Train one model with one seed; returns its accuracy on the evaluation split (test, or
    validation with ``cfg.validate``), losses and timing, and the trained model."""
    x_train, y_train, x_test, y_test = data
    metric = "val_acc" if cfg.validate else "test_acc"
    seed_everything(seed)
    model = build_model(name, cfg.dim, cfg.hybrid_dim, cfg.drop_path)
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
        return {metric: accuracy(model, x_test, y_test)}

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
        metric: result.eval[metric],
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "steps": result.step,
        "wall_s": result.elapsed_s,
    }
    return record, model


def save_rollouts(model: HybridNet, x_test: Tensor, y_test: Tensor, out_dir: Path) -> list[Path]:
    """One attention-rollout picture per class, ``rollout_class{c}.png`` in ``out_dir``: the
    first test digit of class ``c`` the model classifies correctly (the first of the class
    when it gets none right). The relevance of a cell is the mean over target cells of the
    rollout, as the mean pool reads every cell.

    Shapes:
        - x_test: ``(S, 1, 8, 8)``; y_test: ``(S,)``.
    """
    model.eval()
    with torch.no_grad():
        pred = model(x_test).argmax(-1)  # (S,)
    picks = []
    for c in range(int(y_test.max()) + 1):
        right = torch.nonzero((y_test == c) & (pred == c)).flatten()
        of_class = torch.nonzero(y_test == c).flatten()
        picks += right[:1].tolist() or of_class[:1].tolist()
    idx = torch.tensor(picks)  # (K,) one test digit per class present
    with torch.no_grad():
        logits, attentions = model.forward_with_weights(x_test[idx])  # (K, classes)
        rollout = attention_rollout(attentions)  # (K, 16, 16)
    relevance = rollout.mean(1)  # (K, 16) what the pooled output draws from each cell
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, i in enumerate(picks):
        true, guess = int(y_test[i]), int(logits[k].argmax())
        paths.append(
            plot_image_attention(
                x_test[i, 0],
                relevance[k],
                out_dir / f"rollout_class{true}.png",
                grid=(4, 4),
                label="rollout",
                title=f"hybrid: attention rollout over the 4x4 feature-map cells "
                f"(digit {i}: true {true}, predicted {guess})",
            )
        )
    return paths


def run(cfg: VisionConfig) -> dict[str, Any]:
    """Train every model for every seed, print the table, write the JSON and the pictures."""
    exp = Experiment("vision_hybrid", cfg)
    x_train, y_train, x_test, y_test = load_digits_split(0)
    split = "test"
    if cfg.validate:  # the test split is left unseen
        x_train, y_train, x_test, y_test = stratified_split(x_train, y_train)
        split = "validation"
    metric = "val_acc" if cfg.validate else "test_acc"
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
                f"{name} seed {seed}: {split} acc {100 * r[metric]:.2f} %, "
                f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}, {r['wall_s']:.1f} s",
            )
    rows = [{**row, "params": params[row["model"]]} for row in summarize(exp.runs, "model", metric)]
    table = format_table(
        ["model", "params", "seeds", f"{split} acc (mean ± std)", "wall s"],
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
    pictures = []
    if hybrid is not None:
        pictures = [str(p) for p in save_rollouts(hybrid, x_test, y_test, exp.out_dir)]
    return exp.finish(
        table,
        data=f"sklearn load_digits, stratified 80/20 (random_state=0): "
        f"{len(y_train)} train / {len(y_test)} {split}"
        + (" (both carved from the 80 % training part)" if cfg.validate else ""),
        summary=rows,
        pictures=pictures,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run(parse_config(VisionConfig, argv, __doc__, PRESETS))


if __name__ == "__main__":
    main()

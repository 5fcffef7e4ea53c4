"""Make the pictures in docs/ from two small models trained for a few seconds on real data.

- A byte-level causal language model (2 GraphTransformer layers on the causal graph) trained
  on the opening of Dickens' "A Tale of Two Cities" (public domain): attention heatmap of a
  sentence and the statistics of its heads.
- A classifier of scikit-learn's bundled handwritten digits (8 x 8 pixels, each pixel a node,
  plus a CLS node; complete graph): gradient x attention relevance of the CLS node overlaid
  on a test digit, and the attention graph of the first layer drawn on the pixel grid.

Run from the repository root (about 20 s on 2 CPU threads, no download):

    python docs/make_pictures.py [--out docs]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn

from graphattn import AttentionWeights, Graph, GraphTransformer
from graphattn.explain import attention_rollout, head_statistics
from graphattn.plot import (
    plot_attention_graph,
    plot_attention_heatmap,
    plot_head_statistics,
    plot_image_attention,
)

TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it "
    "was the season of Light, it was the season of Darkness, it was the spring of hope, it "
    "was the winter of despair, we had everything before us, we had nothing before us, we "
    "were all going direct to Heaven, we were all going direct the other way - in short, the "
    "period was so far like the present period, that some of its noisiest authorities "
    "insisted on its being received, for good or for evil, in the superlative degree of "
    "comparison only."
)
SENTENCE = "it was the best of times, it was the worst of times"


class ByteLM(nn.Module):
    """Bytes -> embeddings + learned positions -> GraphTransformer (causal) -> next byte."""

    def __init__(self, dim: int = 64, heads: int = 4, layers: int = 2, max_len: int = 64):
        super().__init__()
        self.embed = nn.Embedding(256, dim)
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.body = GraphTransformer(
            layers, dim, heads, dim_feedforward=2 * dim, dropout=0.0, backend="dense"
        )
        self.head = nn.Linear(dim, 256)

    def forward(self, ids: Tensor) -> Tensor:
        n = ids.shape[1]
        x = self.embed(ids) + self.pos[:n]  # (B, N, C)
        return self.head(self.body(x, Graph.causal(n)))  # (B, N, 256)

    def forward_with_weights(self, ids: Tensor) -> tuple[Tensor, list[AttentionWeights]]:
        n = ids.shape[1]
        x = self.embed(ids) + self.pos[:n]  # (B, N, C)
        res = self.body.forward_with_weights(x, Graph.causal(n))
        return self.head(res.out), res.attentions  # (B, N, 256), L weights


def digit_graph() -> Graph:
    """A CLS node (0) linked both ways to the 64 pixel nodes (1 + row * 8 + col), which see
    their 3 x 3 neighbourhood: the first layer's graph."""
    grid = Graph.grid(8, 8, radius=1).edge_index() + 1  # (2, E) pixel -> pixel
    pixels = torch.arange(1, 65)
    cls = torch.zeros(64, dtype=torch.long)
    to_cls = torch.stack([pixels, cls])  # pixel -> CLS
    from_cls = torch.stack([cls, pixels])  # CLS -> pixel
    loop = torch.zeros(2, 1, dtype=torch.long)
    return Graph.from_edge_index(torch.cat([loop, to_cls, from_cls, grid], 1), 65, 65)


class DigitClassifier(nn.Module):
    """Pixels and a CLS node (index 0) -> GraphTransformer -> 10 classes. Layer 0 runs on
    :func:`digit_graph` (local), layer 1 on the complete graph."""

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.pixel = nn.Linear(1, dim)
        self.pos = nn.Parameter(torch.randn(65, dim) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.body = GraphTransformer(2, dim, heads, dim_feedforward=2 * dim, dropout=0.0)
        self.graphs = [digit_graph(), None]
        self.head = nn.Linear(dim, 10)

    def _nodes(self, images: Tensor) -> Tensor:
        b = images.shape[0]
        x = self.pixel(images.reshape(b, 64, 1))  # (B, 64, C)
        return torch.cat([self.cls.expand(b, -1, -1), x], 1) + self.pos  # (B, 65, C)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.body(self._nodes(images), self.graphs)[:, 0])  # (B, 10)

    def forward_with_weights(self, images: Tensor) -> tuple[Tensor, list[AttentionWeights]]:
        res = self.body.forward_with_weights(self._nodes(images), self.graphs)
        return self.head(res.out[:, 0]), res.attentions  # (B, 10), L weights


def train_text(steps: int, gen: torch.Generator) -> ByteLM:
    data = torch.tensor(list(TEXT.lower().encode()), dtype=torch.long)
    model = ByteLM()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    window = 48
    for _ in range(steps):
        start = torch.randint(0, len(data) - window - 1, (32,), generator=gen)
        idx = start[:, None] + torch.arange(window + 1)
        batch = data[idx]  # (B, window + 1)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"  byte LM: {steps} steps, last loss {loss.item():.2f} (uniform: 5.55)")
    return model


def train_digits(steps: int, gen: torch.Generator) -> tuple[DigitClassifier, Tensor, Tensor]:
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # (1797, 8, 8)
    labels = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(images), generator=gen)
    train, test = perm[:1500], perm[1500:]
    model = DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = train[torch.randint(0, len(train), (64,), generator=gen)]
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (model(images[test]).argmax(1) == labels[test]).float().mean().item()
    print(f"  digits: {steps} steps, test accuracy {acc:.2f}")
    return model, images[test], labels[test]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--text-steps", type=int, default=300)
    parser.add_argument("--digit-steps", type=int, default=300)
    args = parser.parse_args()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()

    lm = train_text(args.text_steps, gen).eval()
    ids = torch.tensor([list(SENTENCE.encode())])
    with torch.no_grad():
        _, atts = lm.forward_with_weights(ids)
    stats = [head_statistics(a) for a in atts]
    # the head of the last layer with the most concentrated attention
    layer, head = len(atts) - 1, int(stats[-1].entropy.argmin())
    path = plot_attention_heatmap(
        atts[layer],
        args.out / "attention_heatmap.png",
        tokens=list(SENTENCE),
        head=head,
        title=f"Byte-level causal LM, layer {layer} head {head}",
    )
    print(f"  wrote {path}")
    path = plot_head_statistics(
        stats,
        args.out / "head_statistics.png",
        title="Heads of the byte-level LM on one sentence (distance in bytes)",
    )
    print(f"  wrote {path}")

    clf, images, labels = train_digits(args.digit_steps, gen)
    clf.eval()
    sample = images[:8]
    with torch.no_grad():
        logits, atts = clf.forward_with_weights(sample)
    pred = logits.argmax(1)
    i = int((pred == labels[:8]).nonzero()[0])  # first correctly classified test digit
    rollout = attention_rollout(atts)  # (B, 65, 65): layer 0 per edge, layer 1 dense
    path = plot_image_attention(
        sample[i],
        rollout[i, 0, 1:],  # what the CLS node draws from each pixel
        args.out / "image_attention.png",
        grid=(8, 8),
        label="rollout weight",
        title=f"Digit classifier (predicts {int(pred[i])}): attention rollout of the CLS node",
    )
    print(f"  wrote {path}")

    rows, cols = torch.arange(64) // 8, torch.arange(64) % 8
    positions = torch.cat([torch.tensor([[3.5, 1.6]]), torch.stack([cols, -rows], 1).float()])
    values = [str(int(round(16 * v))) for v in sample[i].reshape(-1).tolist()]
    path = plot_attention_graph(
        atts[0],  # layer 0, per edge
        args.out / "attention_graph.png",
        sample=i,
        node_labels=["C", *values],
        modality=[0] + [1] * 64,
        modality_names=["CLS node", "pixel (label: ink 0-16)"],
        positions=positions,
        top_edges=60,
        title="Digit classifier, layer 0 (3 x 3 neighbourhoods + CLS): top 60 edges",
    )
    print(f"  wrote {path}")
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

"""Byte-level sentiment classifier from scratch on movie-review sentences (rt-polarity).

Pang & Lee's sentence polarity data (5,331 positive and 5,331 negative sentences), a fixed
stratified 90/10 split, several seeds. No pretrained embeddings, no word tokenizer: the
input is the UTF-8 bytes of the sentence (:class:`modalities.ByteTokenizer`).

The model: every byte is a node. A node's features are the sum of learned vectors of the
byte n-grams (n = 1..5) that end at it, hashed into 2**18 buckets (as fastText does for
character n-grams; the table is a sparse ``nn.EmbeddingBag`` trained with
:class:`examples.training.LazyAdamW`; in training each n-gram of a node is dropped with
probability ``ngram_dropout``) -> learned positions -> a
:class:`~graphattn.GraphTransformer` (one layer on the complete byte graph by default; with
more layers the lower ones run on a sliding window) with key padding -> masked mean pool ->
linear. The n-gram vectors carry the words and their parts; attention mixes them in context.

At prediction, the attention path's logits get a second opinion: the multinomial naive-Bayes
log-odds of the sentence's words (:class:`NaiveBayesPrior`, the log-count ratios of NBSVM,
Wang & Manning 2012; words in a negation's scope marked ``NOT_``, :func:`mark_negation`),
counted on the training part by the example and added with a fixed weight (``nb_weight``).
One model, trained in one run; the attention path is trained alone (feeding the prior during
training as well was worse on validation). Every run also reports the attention path alone
and the naive-Bayes score alone. ``--nb-ngrams 0``: attention only. ``--ensemble K`` trains
K attention models per seed and averages their logits before the prior is added (tried with
3: no gain on validation, so not the default).

``--validate`` carves a stratified 10 % of the training part as a validation split and
reports accuracy on it (the test split stays unseen): every setting was chosen that way.

Anchors (10-fold cross-validation on this data set): Kim (2014), CNN with random word
embeddings ("CNN-rand"), 76.1%; NBSVM with word uni- and bigrams (Wang & Manning 2012), 79.4%.

Writes ``examples/results/sentiment.json`` (:mod:`examples.harness`) and, in ``--out-dir``,
per-seed metrics, the attention heatmaps of the first seed's model and the curves of the last.

Run: ``python -m examples.sentiment [--seeds 5] [--validate] [--data-dir ...] [--quick]``
(every field of :class:`SentimentConfig` is a flag: ``--help``)

Axis legend: ``B`` batch, ``T`` bytes (= nodes), ``C`` embed dim.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from examples.harness import Experiment, count_params, format_table, parse_config, stats
from examples.training import (
    LazyAdamW,
    TrainConfig,
    Trainer,
    TrainResult,
    ensure_dataset,
    plot_curves,
    seed_everything,
)
from graphattn import AttentionWeights, Graph, GraphTransformer
from graphattn.plot import plot_attention_heatmap
from modalities import ByteTokenizer

RESULTS = Path(__file__).resolve().parent / "results" / "sentiment.json"


@dataclass
class SentimentConfig:
    """One experiment (every seed). Defaults: the full run reported in the README."""

    seeds: int = 5  # training seeds 0..seeds-1 (the split is fixed by split_seed)
    max_bytes: int = 320  # BOS + bytes + EOS; the longest sentence has 269 bytes
    ngram_max: int = 5  # node features: hashed byte n-grams ending at the node, n = 1..5
    hash_buckets: int = 2**18  # rows of the n-gram table (row 0: no n-gram)
    embed_dim: int = 64  # node feature size C
    num_layers: int = 1  # transformer layers: the last on the complete graph, others windowed
    num_heads: int = 4  # heads (16 dims each)
    window_radius: int = 8  # lower layers (if any): bytes within 8 positions each side
    dropout: float = 0.3  # dropout of the node features and of the pooled vector
    ngram_dropout: float = 0.2  # in training, drop each n-gram of a node with this probability
    attn_dropout: float = 0.1  # attention, feed-forward and residual dropout in the layers
    epochs: int = 3  # passes over the training split
    batch_size: int = 32  # sentences per step
    lr: float = 2e-3  # peak learning rate (LazyAdamW)
    weight_decay: float = 0.0  # decoupled weight decay on the dense matrices
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 0
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    nb_ngrams: int = 1  # naive-Bayes log-odds of word n-grams n = 1..nb_ngrams (0: none)
    nb_alpha: float = 1.0  # NB count smoothing (as Wang & Manning; chosen on validation)
    nb_weight: float = 2.5  # weight of the NB log-odds added to the attention logits (validated)
    nb_negation: bool = True  # NB words in a negation's scope marked NOT_ (mark_negation)
    test_fraction: float = 0.1  # stratified held-out split, fixed by split_seed
    split_seed: int = 0  # the split is the same for every training seed
    validate: bool = False  # hold out 10% of the training part; report accuracy on it
    ensemble: int = 1  # attention models per seed (seeds s, s + 1000, ...), logits averaged
    limit: int | None = None  # use this many sentences per class (smoke tests)
    threads: int | None = None  # torch.set_num_threads; None: torch's default
    data_dir: str | None = None  # see examples.training.resolve_data_dir
    out_dir: str = "runs/sentiment"  # metrics, checkpoints, curves, heatmaps
    results: str | None = str(RESULTS)  # the summary JSON (None: in out_dir)
    progress: bool = True  # tqdm bar


PRESETS = {"quick": ("a check, not a result", {"seeds": 1, "epochs": 1, "limit": 500})}


# ----------------------------------------------------------------------------- data
@dataclass
class Split:
    ids: Tensor  # (S, T) int64 byte ids, padded with ByteTokenizer.PAD
    mask: Tensor  # (S, T) bool, True = real byte
    labels: Tensor  # (S,) int64, 1 = positive
    texts: list[str]
    prior: Tensor | None = None  # (S,) naive-Bayes log-odds of "positive" (NaiveBayesPrior)

    def subset(self, idx: Tensor) -> Split:
        """The sentences at ``idx`` (the prior is dropped: it depends on the training part)."""
        return Split(
            self.ids[idx], self.mask[idx], self.labels[idx], [self.texts[i] for i in idx.tolist()]
        )


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


def carve_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """A stratified ``fraction`` of ``train`` as a validation split (the test split stays
    unseen); the rest is the new training part."""
    g = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for label in (0, 1):
        rows = torch.nonzero(train.labels == label).flatten()
        rows = rows[torch.randperm(len(rows), generator=g)]
        n = round(len(rows) * fraction)
        held.append(rows[:n])
        keep.append(rows[n:])
    return train.subset(torch.cat(keep)), train.subset(torch.cat(held))


# ----------------------------------------------------------------------------- NB prior
NEGATIONS = frozenset(
    "not no never nothing nobody none neither nor without hardly cannot n't".split()
)  # and every word ending in "n't" (rt-polarity splits "isn't" as "isn't")
SCOPE_ENDS = frozenset(". , ; : ! ? -- but".split())  # where a negation's scope ends


def mark_negation(words: Sequence[str]) -> list[str]:
    """``NOT_`` before every word after a negation up to the next punctuation or "but"
    (Das & Chen 2001; Pang, Lee & Vaithyanathan 2002): "not good" and "good" become
    different features. The negation word and the punctuation stay as they are.

    Example:
        >>> mark_negation("it isn't good or funny , but fine".split())
        ['it', "isn't", 'NOT_good', 'NOT_or', 'NOT_funny', ',', 'but', 'fine']
    """
    out, negated = [], False
    for w in words:
        if w in SCOPE_ENDS:
            negated = False
        out.append("NOT_" + w if negated else w)
        if w in NEGATIONS or w.endswith("n't"):
            negated = True
    return out


def word_ngrams(text: str, n_max: int, negation: bool = False) -> set[str]:
    """The distinct word n-grams (n = 1..``n_max``) of a sentence, lower-cased and split on
    white space (rt-polarity is already tokenized), with ``negation`` after
    :func:`mark_negation`. Binarized, as NBSVM uses them."""
    words = text.lower().split()
    if negation:
        words = mark_negation(words)
    return {
        " ".join(words[i : i + n]) for n in range(1, n_max + 1) for i in range(len(words) - n + 1)
    }


class NaiveBayesPrior:
    """Naive-Bayes log-count ratios of binarized word n-grams (Wang & Manning 2012, NBSVM):
    ``r = log((p / |p|_1) / (q / |q|_1))`` with ``p = alpha + sum of the positive sentences'
    feature vectors``, ``q`` the same over the negative ones. A sentence's score is
    ``sum(r[f] for f in its n-grams)`` (multinomial NB's log-odds, up to the class prior),
    which :class:`ByteClassifier` adds, weighted, to the attention path's logits. Counted on
    the training part only; n-grams never seen there count 0.

    Example:
        >>> nb = NaiveBayesPrior.fit(["good film", "bad film"], [1, 0], n_max=1, alpha=1.0)
        >>> nb.score(["good", "bad", "film"]).tolist()
        [0.6931471824645996, -0.6931471824645996, 0.0]
    """

    def __init__(
        self,
        pos: dict[str, int],
        neg: dict[str, int],
        n_max: int,
        alpha: float,
        negation: bool = False,
    ) -> None:
        self.pos, self.neg, self.n_max, self.alpha = pos, neg, n_max, alpha
        self.negation = negation  # words in a negation's scope marked (mark_negation)
        vocab = len(set(pos) | set(neg))
        self.pos_norm = alpha * vocab + sum(pos.values())  # |p|_1
        self.neg_norm = alpha * vocab + sum(neg.values())  # |q|_1

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        labels: Sequence[int],
        n_max: int,
        alpha: float,
        negation: bool = False,
    ) -> NaiveBayesPrior:
        pos: dict[str, int] = {}
        neg: dict[str, int] = {}
        for text, y in zip(texts, labels, strict=True):
            counts = pos if int(y) == 1 else neg
            for f in word_ngrams(text, n_max, negation):
                counts[f] = counts.get(f, 0) + 1
        return cls(pos, neg, n_max, alpha, negation)

    def __repr__(self) -> str:
        vocab = len(set(self.pos) | set(self.neg))
        return (
            f"NaiveBayesPrior(n_max={self.n_max}, alpha={self.alpha}, "
            f"negation={self.negation}, vocab={vocab})"
        )

    def ratio(self, feature: str) -> float:
        """``r[feature]`` (0 for an n-gram never seen in training)."""
        p, q = self.pos.get(feature, 0), self.neg.get(feature, 0)
        if p + q == 0:
            return 0.0
        return math.log((p + self.alpha) / self.pos_norm) - math.log(
            (q + self.alpha) / self.neg_norm
        )

    def score(self, texts: Sequence[str]) -> Tensor:
        """The sentences' log-odds of "positive" ``(S,)``."""
        grams = (word_ngrams(t, self.n_max, self.negation) for t in texts)
        out = [sum(self.ratio(f) for f in g) for g in grams]
        return torch.tensor(out, dtype=torch.float32)


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
_HASH_MOD = 2_147_483_647  # 2**31 - 1: rolling hashes stay below 2**31
_HASH_MULT = 2_654_435_761  # Knuth's multiplicative hash; products stay below 2**63


def byte_ngram_buckets(ids: Tensor, mask: Tensor, ngram_max: int, buckets: int) -> Tensor:
    """Bucket ids of the byte n-grams ending at every position, n = 1..``ngram_max``.

    An n-gram that would start before the sequence, or ends on padding, gets bucket 0 (the
    embedding's padding row); real n-grams fall in ``1..buckets-1``, different n apart.

    Shapes:
        ids, mask: ``(B, T)``; returns ``(B, T, ngram_max)`` int64.
    """
    t = ids.shape[1]
    position = torch.arange(t, device=ids.device)  # (T,)
    h = torch.zeros_like(ids)  # (B, T) rolling hash of bytes t-n+1..t
    out = []
    for n in range(1, ngram_max + 1):
        older = F.pad(ids, (n - 1, 0))[:, :t]  # (B, T): the byte n-1 positions back
        h = (h * 257 + older + 1) % _HASH_MOD
        bucket = 1 + (h * _HASH_MULT + n) % (buckets - 1)  # (B, T)
        valid = mask & (position >= n - 1)  # (B, T)
        out.append(torch.where(valid, bucket, torch.zeros_like(bucket)))
    return torch.stack(out, -1)  # (B, T, ngram_max)


class ByteClassifier(nn.Module):
    """Bytes -> hashed n-gram node features -> graph transformer -> mean pool -> logits,
    plus ``nb_weight`` times the sentence's naive-Bayes log-odds when given."""

    def __init__(self, cfg: SentimentConfig, num_classes: int = 2) -> None:
        super().__init__()
        if cfg.hash_buckets < 2:
            raise ValueError(f"hash_buckets must be >= 2, got {cfg.hash_buckets}")
        self.ngram_max, self.buckets = cfg.ngram_max, cfg.hash_buckets
        if not 0.0 <= cfg.ngram_dropout < 1.0:
            raise ValueError(f"ngram_dropout must be in [0, 1), got {cfg.ngram_dropout}")
        self.ngram_dropout = cfg.ngram_dropout
        self.window_radius = cfg.window_radius
        self.num_layers = cfg.num_layers
        self.ngrams = nn.EmbeddingBag(
            cfg.hash_buckets, cfg.embed_dim, mode="sum", padding_idx=0, sparse=True
        )
        self.position = nn.Parameter(torch.zeros(cfg.max_bytes, cfg.embed_dim))
        self.drop = nn.Dropout(cfg.dropout)
        self.body = GraphTransformer(
            cfg.num_layers,
            cfg.embed_dim,
            cfg.num_heads,
            dim_feedforward=2 * cfg.embed_dim,
            dropout=cfg.attn_dropout,
            activation="gelu",
        )
        self.head = nn.Linear(cfg.embed_dim, num_classes)
        # the fixed weight of the naive-Bayes log-odds (NaiveBayesPrior), chosen on validation
        self.prior_scale: Tensor | None
        self.register_buffer(
            "prior_scale", torch.tensor(cfg.nb_weight) if cfg.nb_ngrams > 0 else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.ngrams.weight, std=0.02)
        with torch.no_grad():
            self.ngrams.weight[0].zero_()  # the padding row
        nn.init.zeros_(self.position)
        self.body.reset_parameters()
        self.head.reset_parameters()

    def graphs(self, n: int) -> list[Graph | None]:
        """A sliding window in every layer but the last; the complete graph (None) last."""
        local = Graph.window(n, self.window_radius)
        return [local] * (self.num_layers - 1) + [None]

    def nodes(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Node features ``(B, T, C)``: the sum of the n-gram vectors ending at each byte
        (in training each n-gram dropped with probability ``ngram_dropout``)."""
        b, t = ids.shape
        grams = byte_ngram_buckets(ids, mask, self.ngram_max, self.buckets)  # (B, T, n)
        if self.training and self.ngram_dropout > 0:  # whole n-grams go to the zero row
            keep = torch.rand(grams.shape, device=grams.device) >= self.ngram_dropout
            grams = grams * keep  # (B, T, n)
        x = self.ngrams(grams.view(b * t, self.ngram_max))  # (B*T, C)
        return x.view(b, t, -1)  # (B, T, C)

    def _inputs(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, list[Graph]]:
        """Node features ``(B, T, C)`` and the per-layer graphs."""
        t = ids.shape[1]
        if t > self.position.shape[0]:
            raise ValueError(f"sequence of {t} bytes exceeds max_bytes={self.position.shape[0]}")
        x = self.drop(self.nodes(ids, mask)) + self.position[:t]  # (B, T, C)
        return x, self.graphs(t)

    def _logits(self, h: Tensor, mask: Tensor, prior: Tensor | None) -> Tensor:
        w = mask[..., None].to(h.dtype)  # (B, T, 1)
        pooled = (h * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, C): masked mean
        return with_prior(self.head(self.drop(pooled)), prior, self.prior_scale)  # (B, 2)

    def forward(self, ids: Tensor, mask: Tensor, prior: Tensor | None = None) -> Tensor:
        """Logits ``(B, 2)`` for byte ids ``(B, T)`` with mask ``(B, T)`` (True = real) and
        the sentences' naive-Bayes scores ``prior`` ``(B,)``; without ``prior`` (or with
        ``nb_ngrams=0``), the attention path alone."""
        h = self.body(*self._inputs(ids, mask), key_padding_mask=~mask)  # (B, T, C)
        return self._logits(h, mask, prior)

    def forward_with_weights(
        self, ids: Tensor, mask: Tensor, prior: Tensor | None = None
    ) -> tuple[Tensor, list[AttentionWeights]]:
        """Logits ``(B, 2)`` (as :meth:`forward`) and every layer's attention weights."""
        res = self.body.forward_with_weights(*self._inputs(ids, mask), key_padding_mask=~mask)
        return self._logits(res.out, mask, prior), res.attentions


def with_prior(logits: Tensor, prior: Tensor | None, scale: Tensor | None) -> Tensor:
    """Attention-path logits ``(B, 2)`` plus the naive-Bayes ``prior`` ``(B,)`` times
    ``scale`` (:func:`add_prior`); unchanged without a prior or a scale (``nb_ngrams=0``)."""
    if prior is None or scale is None:
        return logits
    return add_prior(logits, prior, scale)


def add_prior(logits: Tensor, prior: Tensor, scale: Tensor) -> Tensor:
    """``logits`` ``(B, 2)`` plus ``scale`` times the naive-Bayes log-odds ``prior`` ``(B,)``,
    split evenly over the two classes."""
    half = 0.5 * scale * prior  # (B,)
    return logits + torch.stack([-half, half], -1)  # (B, 2)


def make_optimizer(model: nn.Module, cfg: SentimentConfig) -> LazyAdamW:
    """LazyAdamW (sparse n-gram table: lazy Adam); weight decay only on dense matrices."""
    named = list(model.named_parameters())
    decay = [p for n, p in named if p.dim() >= 2 and n.startswith(("body.", "head."))]
    rest = [p for n, p in named if not (p.dim() >= 2 and n.startswith(("body.", "head.")))]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return LazyAdamW(groups, lr=cfg.lr)


@torch.no_grad()
def ensemble_logits(
    models: Sequence[ByteClassifier], split: Split, batch_size: int = 256
) -> Tensor:
    """The mean of the models' attention-path logits ``(S, 2)`` over ``split``, without the
    prior; eval mode (each model's mode is restored), sentences sorted by length for speed."""
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    lengths = split.mask.sum(1)
    order = torch.argsort(lengths)
    logits = torch.empty(len(order), 2)
    for idx in order.split(batch_size):
        n = int(lengths[idx].max())
        ids, mask = split.ids[idx, :n], split.mask[idx, :n]
        logits[idx] = torch.stack([m(ids, mask) for m in models]).mean(0)  # (B, 2)
    for m, mode in zip(models, was_training, strict=True):
        m.train(mode)
    return logits


def ensemble_predict(
    models: Sequence[ByteClassifier], split: Split, batch_size: int = 256, use_prior: bool = True
) -> Tensor:
    """Predicted labels ``(S,)`` of the mean of the models' attention-path logits, then the
    naive-Bayes prior added once (:func:`add_prior`); with ``use_prior=False``, of the
    attention paths alone."""
    logits = ensemble_logits(models, split, batch_size)  # (S, 2)
    scale = models[0].prior_scale
    return (with_prior(logits, split.prior, scale) if use_prior else logits).argmax(-1)


def predict(
    model: ByteClassifier, split: Split, batch_size: int = 256, use_prior: bool = True
) -> Tensor:
    """Predicted labels ``(S,)`` of one model (:func:`ensemble_predict` of one); with
    ``use_prior=False``, of the attention path alone."""
    return ensemble_predict([model], split, batch_size, use_prior)


def accuracies(models: Sequence[ByteClassifier], split: Split) -> tuple[float, float]:
    """Accuracy on ``split`` of the models' mean logits with the prior, and of the attention
    paths alone, from one pass over the split."""
    logits = ensemble_logits(models, split)  # (S, 2)
    combined = with_prior(logits, split.prior, models[0].prior_scale).argmax(-1)  # (S,)
    alone = logits.argmax(-1)  # (S,)
    return (
        float((combined == split.labels).float().mean()),
        float((alone == split.labels).float().mean()),
    )


# ----------------------------------------------------------------------------- run
def train_one(
    cfg: SentimentConfig, seed: int, train: Split, test: Split
) -> tuple[dict[str, Any], ByteClassifier, TrainResult]:
    """Train one seed; returns its accuracy on ``test`` (the validation split with
    ``cfg.validate``) and timing, the model and the metrics."""
    metric = "val_acc" if cfg.validate else "test_acc"
    seed_everything(seed)
    model = ByteClassifier(cfg)
    opt = make_optimizer(model, cfg)
    loader = LengthBuckets(train, cfg.batch_size, seed)
    steps = cfg.epochs * len(loader)
    warm = min(cfg.warmup_steps, max(1, steps // 10))

    def factor(s: int) -> float:  # examples.harness.warmup_cosine, but cosine in float32:
        if s < warm:  # kept so that the published runs stay bitwise reproducible
            return (s + 1) / warm
        return 0.5 * (1 + torch.cos(torch.tensor((s - warm) / max(1, steps - warm) * torch.pi)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: float(factor(s)))

    def step_fn(model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> dict[str, Tensor]:
        ids, mask, y = batch
        logits = model(ids, mask)  # (B, 2): the attention path is trained alone
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        return {"loss": loss, "acc": (logits.argmax(-1) == y).float().mean()}

    def eval_fn(model: nn.Module) -> dict[str, float]:
        # logged once per epoch for the curves; the reported numbers are the last epoch's
        combined, alone = accuracies([model], test)
        return {metric: combined, "attention_only_acc": alone}

    out_dir = Path(cfg.out_dir) / f"seed{seed}"
    config = TrainConfig(
        max_steps=steps,
        eval_every=len(loader),
        log_every=max(1, min(50, steps // 10)),
        grad_clip=None,  # fastText-style training; sparse n-gram gradients
        out_dir=out_dir,
        resume=False,
        progress=cfg.progress,
    )
    result = Trainer(model, opt, step_fn, loader, config, scheduler=sched, eval_fn=eval_fn).fit()
    losses = result.values("loss")
    record = {
        "seed": seed,
        metric: result.eval[metric],
        "attention_only_acc": result.eval["attention_only_acc"],  # same model, no prior
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "steps": result.step,
        "wall_s": result.elapsed_s,
    }
    return record, model, result


def byte_labels(tok: ByteTokenizer, ids: Sequence[int]) -> list[str]:
    """One label per node (byte); BOS/EOS as < and >."""
    return ["<" if i == tok.BOS else ">" if i == tok.EOS else tok.decode([i]) for i in ids]


def attention_pictures(
    model: ByteClassifier, test: Split, preds: Tensor, out_dir: Path
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
        prior = test.prior[i : i + 1] if test.prior is not None else None
        with torch.no_grad():
            logits, attentions = model.forward_with_weights(ids, mask, prior)
        prob = float(logits.softmax(-1)[0, 1])
        label = "positive" if int(test.labels[i]) == 1 else "negative"
        path = plot_attention_heatmap(
            attentions[-1],
            out_dir / f"sentiment_attention_{kind}.png",
            tokens=byte_labels(tok, ids[0].tolist()),
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


def run(cfg: SentimentConfig) -> dict[str, Any]:
    """Train every seed (the JSON rewritten after each); heatmaps of the first seed's model,
    curves of the last seed; print the table."""
    if cfg.ensemble < 1:
        raise ValueError(f"ensemble must be at least 1, got {cfg.ensemble}")
    exp = Experiment("sentiment", cfg)
    train, test = load_rt_polarity(
        cfg.data_dir, cfg.max_bytes, cfg.test_fraction, cfg.split_seed, cfg.limit
    )
    split, metric = "test", "test_acc"
    if cfg.validate:  # the test split is left unseen
        train, test = carve_validation(train, cfg.test_fraction, cfg.split_seed + 1)
        split, metric = "validation", "val_acc"
    nb_only = None
    if cfg.nb_ngrams > 0:  # counted on the training part only; used only at prediction
        nb = NaiveBayesPrior.fit(
            train.texts, train.labels.tolist(), cfg.nb_ngrams, cfg.nb_alpha, cfg.nb_negation
        )
        test.prior = nb.score(test.texts)
        nb_only = float(((test.prior > 0).long() == test.labels).float().mean())
        print(f"naive-Bayes prior alone: {split} acc {nb_only:.4f}", flush=True)
    pictures: dict[str, Any] = {}
    for seed in range(cfg.seeds):
        r, model, result = train_one(cfg, seed, train, test)
        if cfg.ensemble > 1:  # more members, then the ensemble's figures replace the first's
            members = [model]
            r["member_accs"] = [r[metric]]
            for m in range(1, cfg.ensemble):
                rm, member, _ = train_one(cfg, seed + 1000 * m, train, test)
                members.append(member)
                r["member_accs"].append(rm[metric])
                r["wall_s"] += rm["wall_s"]
            r[metric], r["attention_only_acc"] = accuracies(members, test)
        if nb_only is not None:
            r["nb_only_acc"] = nb_only
        if not pictures:  # the first seed's model: pictures exist even if a run is cut short
            pictures = attention_pictures(model, test, predict(model, test), exp.out_dir)
        exp.add(
            r,
            f"seed {seed}: {split} acc {r[metric]:.4f} (attention path alone "
            f"{r['attention_only_acc']:.4f}), loss {r['first_loss']:.3f} -> "
            f"{r['last_loss']:.3f}, {r['steps']} steps, {r['wall_s']:.0f} s",
        )
    curves = plot_curves(
        result.history,
        exp.out_dir / "sentiment_curves.png",
        names=["loss", metric],
        title=f"sentiment, seed {cfg.seeds - 1}",
    )
    summary = stats(r[metric] for r in exp.runs)
    attention_only = stats(r["attention_only_acc"] for r in exp.runs)
    table = format_table(
        ["seed", f"{split} acc", "attention alone", "loss first->last", "steps", "wall s"],
        [
            [
                r["seed"],
                f"{r[metric]:.4f}",
                f"{r['attention_only_acc']:.4f}",
                f"{r['first_loss']:.3f}->{r['last_loss']:.3f}",
                r["steps"],
                f"{r['wall_s']:.0f}",
            ]
            for r in exp.runs
        ],
    )
    table += (
        f"\nmean {summary['mean']:.4f} +/- {summary['std']:.4f} over {len(exp.runs)} seeds "
        f"(attention path alone {attention_only['mean']:.4f} +/- {attention_only['std']:.4f}"
        + (f"; naive-Bayes prior alone {nb_only:.4f}" if nb_only is not None else "")
        + "); anchors Kim 2014 CNN-rand 0.761, NBSVM-bi 0.794"
    )
    for kind, pic in pictures.items():
        print(
            f"{kind}: {pic['text']!r} ({pic['label']}, P(positive)={pic['p_positive']:.2f})"
            f" -> {pic['path']}"
        )
    return exp.finish(
        table,
        data=f"rt-polarity, {len(train.labels)} train / {len(test.labels)} {split} "
        "(stratified, fixed split"
        + (", both carved from the 90 % training part)" if cfg.validate else ")"),
        summary=summary,
        attention_only=attention_only,
        nb_only=nb_only,
        parameters=count_params(model),
        anchor={"Kim 2014 CNN-rand (10-fold CV)": 0.761, "NBSVM-bi (10-fold CV)": 0.794},
        pictures=pictures,
        curves=str(curves),
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run(parse_config(SentimentConfig, argv, __doc__, PRESETS))


if __name__ == "__main__":
    main()

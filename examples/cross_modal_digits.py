"""Three modalities in one graph: spoken digits, handwritten digits and digit words.

Data (every number below is measured on held-out items):

- **audio**: the Free Spoken Digit Dataset (``examples.fsdd``), official split: takes 5-49 of
  the 6 speakers train (2700 clips), takes 0-4 test (300 clips);
- **image**: scikit-learn's 8x8 digits, the stratified 80/20 split (``random_state=0``) of
  ``examples.vision_hybrid`` (1437 train / 360 test images);
- **text**: the digit as words: 108 training phrasings (12 prefixes x {"seven", "Seven",
  "7"} x 3 suffixes: "seven", "the digit Seven!", "number 7 please", ...) and 5 held-out
  phrasings with prefixes and a suffix never seen in training ("this is a seven", "the word
  seven", "it says seven", "numeral 7", "Seven.") used only at test time.

Model: one adapter per modality (``AudioFrameAdapter`` log-mel frames, ``CNNFeatureAdapter``
conv-stem cells, ``TextAdapter`` bytes) -> learned modality embedding
(``ModalityFusion``) -> one **shared** ``GraphTransformer`` trunk over each modality's nodes
-> mean pool -> per-modality projection -> L2-normalised embedding. Two objectives:

- a supervised (class-level) InfoNCE between the embeddings of modality pairs: items of the
  same digit are positives, every other item in the batch a negative;
- cross-modal attention fusion: the trunk's nodes of a sample triple (audio, image, text) are
  joined into **one graph** (``ModalityFusion``, complete graph: every node attends to every
  node of every modality), a fusion ``GraphTransformer`` runs on it and a head says whether
  the triple is matched (all the same digit) or one member was swapped for another digit.
  Its attention gives the cross-modal attention graph picture and the per-modality-pair
  attention table (``FusedGraph.modality_summary``). ``--fusion-projections per_modality``
  gives its attention one query/key/value/output projection per modality (HGT's node-type
  projections, ``modalities.ModalityTransformer``) instead of one set for all nodes.

Two variants, each over several seeds:

- ``paired``: contrastive loss on all three pairs, fusion over (audio, image, text) triples;
- ``zero_shot``: text and image are **never** seen together: the contrastive loss uses only
  audio-image and text-audio pairs, and the fusion block sees only (audio, image) and
  (text, audio) graphs. Text -> image retrieval then tests whether the shared space links
  them through audio.

Retrieval is class-level recall@1: the top-ranked gallery item (cosine similarity) has the
query's digit. Goals: audio -> image and text -> audio R@1 >= 95 %.

Without FSDD (no ``--data-dir``/``$GRAPHATTN_DATA``/``../shared/data`` copy) the example says
so and runs images + text only.

Writes ``examples/results/cross_modal_digits.json`` (:mod:`examples.harness`) and, in
``--out-dir``, per-run metrics and loss curves, ``attention_graph.png`` (the strongest
attention edges of the fused graph of one test triple) and ``modality_attention.png`` (the
modality-by-modality attention table).

Run: ``python -m examples.cross_modal_digits [--seeds 3] [--steps 600] [--threads 1]``;
``--demo``: the short flagship version (one seed of ``paired``, about two minutes). Every
field of :class:`CrossModalConfig` is a flag (``--help``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from examples.harness import Experiment, count_params, parse_config, stats
from examples.training import TrainConfig, Trainer, plot_curves, seed_everything
from examples.vision_hybrid import load_digits_split, random_shift, stem
from graphattn import AttentionWeights, GraphTransformer
from graphattn.plot import plot_attention_graph, plot_attention_heatmap
from modalities import (
    AudioFrameAdapter,
    ByteTokenizer,
    CNNFeatureAdapter,
    FusedGraph,
    ModalityFusion,
    ModalityTransformer,
    NodeSet,
    TextAdapter,
    batch_encode,
    masked_mean,
)

RESULTS = Path(__file__).resolve().parent / "results" / "cross_modal_digits.json"
Variant = Literal["paired", "zero_shot"]
Projections = Literal["shared", "per_modality"]
VARIANTS: tuple[Variant, ...] = get_args(Variant)
ALL_MODALITIES = ("audio", "image", "text")
GOALS = {"audio->image": 0.95, "text->audio": 0.95}  # class-level recall@1 on held-out items
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Training phrasings: every prefix x form x suffix (1080 strings over the 10 digits); the
# held-out phrasings use prefixes and a suffix that training never shows.
TRAIN_PREFIXES = (
    "",
    "the digit ",
    "number ",
    "the number ",
    "a ",
    "digit ",
    "the spoken word ",
    "i said ",
    "you hear ",
    "it's ",
    "here is ",
    "write ",
)
TRAIN_FORMS = ("{w}", "{W}", "{d}")  # word, capitalised word, numeral
TRAIN_SUFFIXES = ("", "!", " please")
TEST_PHRASES = ("this is a {w}", "the word {w}", "it says {w}", "numeral {d}", "{W}.")
SAMPLE_RATE = 8000  # FSDD
TEXT_MAX_LEN = 32  # bytes incl. BOS/EOS; the longest phrase needs 30


@dataclass
class CrossModalConfig:
    """One run of the example; the defaults are the full run."""

    variants: tuple[Variant, ...] = VARIANTS  # which training protocols to run
    seeds: int = 3  # seeds 0..seeds-1 per variant
    steps: int = 600  # optimizer steps per run (batch_size triples each)
    batch_size: int = 64  # triples per step; ~6 per digit, so every row has positives
    lr: float = 2e-3  # AdamW peak learning rate, one-cycle schedule
    weight_decay: float = 0.05  # AdamW decoupled weight decay
    dim: int = 64  # node width everywhere
    heads: int = 4  # attention heads
    trunk_layers: int = 2  # shared GraphTransformer layers per modality
    fusion_layers: int = 1  # GraphTransformer layers on the fused (cross-modal) graph
    fusion_projections: Projections = "shared"  # fusion attention: one q/k/v/out for all
    # modalities, or one per modality (HGT-style, modalities.ModalityTransformer)
    temperature: float = 0.1  # InfoNCE softmax temperature
    match_weight: float = 0.5  # weight of the matched/mismatched loss of the fusion block
    match_batch: int = 32  # the fusion block sees the first n tuples of a batch (+ n swapped)
    max_samples: int = 6000  # audio cut to 0.75 s (95 % of FSDD clips are shorter)
    n_mels: int = 40  # log-mel bins of 256-sample (32 ms) windows
    hop_length: int = 192  # 24 ms between frames: <= 30 audio nodes per clip
    eval_tuples: int = 300  # matched test tuples (and as many swapped) for the fusion metrics
    shift: int = 1  # random translation of the images by up to this many pixels
    audio: bool = True  # False: images + text only (also the automatic FSDD fallback)
    data_dir: str | None = None  # folder holding fsdd/ (None: resolve_data_dir)
    audio_per_class: int | None = None  # FSDD takes per (speaker, digit) and side (smoke)
    image_train_limit: int | None = None  # first n training images (smoke tests)
    image_test_limit: int | None = None  # first n test images (smoke tests)
    out_dir: str = "runs/cross_modal_digits"  # metrics, curves and pictures
    results: str | None = str(RESULTS)  # the summary JSON (None: in out_dir)
    threads: int | None = None  # torch.set_num_threads (None: leave as is)
    progress: bool = True  # tqdm bar per run

    def __post_init__(self) -> None:
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ValueError(
                f"variants must be a non-empty subset of {VARIANTS}, got {self.variants}"
            )
        if self.fusion_projections not in get_args(Projections):
            raise ValueError(
                f"CrossModalConfig.fusion_projections must be one of {get_args(Projections)}, "
                f"got {self.fusion_projections!r}"
            )
        for name in ("seeds", "steps", "dim", "heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CrossModalConfig.{name} must be an int >= 1, got {value!r}")
        for name in ("batch_size", "match_batch", "eval_tuples"):  # batches need negatives
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"CrossModalConfig.{name} must be an int >= 2, got {value!r}")


PRESETS = {
    "quick": ("a check, not a result", {"seeds": 1, "steps": 20}),
    "demo": (
        "the flagship demo (~2-3 min on one CPU thread)",
        {"seeds": 1, "steps": 300, "variants": ("paired",)},
    ),
}


# ----------------------------------------------------------------------------- data
@dataclass
class Split:
    """Inputs and digit labels of one modality's train and test items.

    Attributes:
        train: input tensors, indexed together (audio: waveforms ``(S, T)`` and lengths
            ``(S,)``; image: ``(S, 1, 8, 8)``; text: ids and mask ``(S, L)``).
        train_y: digits ``(S,)``.
        test: test inputs, as ``train``.
        test_y: digits of the test items.
        test_names: a short description of every test item (for the pictures).
    """

    train: tuple[Tensor, ...]
    train_y: Tensor
    test: tuple[Tensor, ...]
    test_y: Tensor
    test_names: list[str]


def phrases(templates: Sequence[str]) -> tuple[list[str], Tensor]:
    """Every template filled with every digit, and the digits.

    Example:
        >>> texts, y = phrases(["number {d}"])
        >>> texts[7], int(y[7])
        ('number 7', 7)
    """
    texts, labels = [], []
    for t in templates:
        for d, w in enumerate(WORDS):
            texts.append(t.format(w=w, W=w.capitalize(), d=d))
            labels.append(d)
    return texts, torch.tensor(labels, dtype=torch.long)


def train_templates() -> list[str]:
    """Every training template: prefix + form + suffix."""
    return [p + f + s for p in TRAIN_PREFIXES for f in TRAIN_FORMS for s in TRAIN_SUFFIXES]


def load_text() -> Split:
    """Training phrasings and held-out phrasings as byte ids ``(S, L)`` and masks.

    Raises:
        ValueError: a held-out phrase also occurs in training (a broken template list).
    """
    tok = ByteTokenizer()
    train_texts, train_y = phrases(train_templates())
    test_texts, test_y = phrases(TEST_PHRASES)
    seen = set(train_texts) & set(test_texts)
    if seen:
        raise ValueError(f"held-out phrases also occur in training: {sorted(seen)[:5]}")
    train = batch_encode(tok, train_texts, TEXT_MAX_LEN)
    test = batch_encode(tok, test_texts, TEXT_MAX_LEN)
    return Split((train.ids, train.mask), train_y, (test.ids, test.mask), test_y, test_texts)


def load_images(train_limit: int | None, test_limit: int | None) -> Split:
    """The sklearn digits split of ``examples.vision_hybrid``, ``(S, 1, 8, 8)`` in [0, 1]."""
    x_train, y_train, x_test, y_test = load_digits_split(0)
    x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    x_test, y_test = x_test[:test_limit], y_test[:test_limit]
    names = [f"image of {int(d)}" for d in y_test]
    return Split((x_train,), y_train, (x_test,), y_test, names)


def _waveform_batch(recordings: Sequence[Any], max_samples: int) -> tuple[Tensor, Tensor]:
    """Zero-padded waveforms, each scaled to an RMS of 0.1 over its real samples (FSDD
    speakers record at different levels).

    Shapes:
        - returns ``(S, T)`` float32 and lengths ``(S,)`` long.
    """
    from examples.fsdd import pad_waveforms

    waves, lengths = pad_waveforms(recordings, max_samples)  # (S, T), (S,)
    real = torch.arange(waves.shape[1]) < lengths[:, None]  # (S, T)
    rms = ((waves**2).sum(1) / lengths.clamp_min(1)).sqrt().clamp_min(1e-4)  # (S,)
    return (waves / rms[:, None]) * 0.1 * real, lengths  # (S, T): RMS 0.1


def load_audio(data_dir: str | None, per_class: int | None, max_samples: int) -> Split:
    """FSDD's official split as level-normalised waveforms ``(S, T <= max_samples)``.

    Raises:
        FileNotFoundError: FSDD is not under the resolved data folder.
    """
    from examples.fsdd import load_fsdd

    data = load_fsdd(data_dir, limit_per_class=per_class)
    train, test = data.official_split()
    tr = _waveform_batch(train, max_samples)
    te = _waveform_batch(test, max_samples)
    train_y = torch.tensor([r.digit for r in train], dtype=torch.long)
    test_y = torch.tensor([r.digit for r in test], dtype=torch.long)
    names = [f"{r.speaker} says {r.digit}" for r in test]
    return Split(tr, train_y, te, test_y, names)


def load_all(cfg: CrossModalConfig) -> tuple[dict[str, Split], str | None]:
    """The splits of every available modality, and a note when FSDD had to be left out."""
    splits: dict[str, Split] = {}
    note = None
    if cfg.audio:
        try:
            splits["audio"] = load_audio(cfg.data_dir, cfg.audio_per_class, cfg.max_samples)
        except FileNotFoundError as err:
            note = (
                f"FSDD not found ({err}); running images + text only. Point --data-dir at a "
                "folder holding fsdd/recordings for the audio modality."
            )
    else:
        note = "audio switched off (--no-audio): images + text only"
    splits["image"] = load_images(cfg.image_train_limit, cfg.image_test_limit)
    splits["text"] = load_text()
    return splits, note


class TripleSampler:
    """Endless class-balanced batches: ``batch_size`` digits drawn uniformly, then for each
    digit and modality a random training item of that digit.

    Re-iterable (one "epoch" is ``steps_per_epoch`` batches) and driven by torch's global
    generator, so :class:`examples.training.Trainer` can restore it exactly.

    Yields:
        ``(digits, {modality: item indices})``, ``(B,)`` each.
    """

    def __init__(
        self, labels: dict[str, Tensor], batch_size: int, steps_per_epoch: int = 50
    ) -> None:
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for a contrastive loss, got {batch_size}")
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.num_classes = len(WORDS)
        self.order: dict[str, Tensor] = {}
        self.start: dict[str, Tensor] = {}
        self.count: dict[str, Tensor] = {}
        for name, y in labels.items():
            count = torch.bincount(y, minlength=self.num_classes)  # (C,)
            if bool((count == 0).any()):
                missing = (count == 0).nonzero().flatten().tolist()
                raise ValueError(f"modality {name!r} has no training item of digits {missing}")
            self.order[name] = torch.argsort(y, stable=True)  # (S,) items grouped by digit
            self.count[name] = count
            self.start[name] = torch.cumsum(count, 0) - count  # (C,)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def sample(self) -> tuple[Tensor, dict[str, Tensor]]:
        """One batch of digits and per-modality item indices."""
        y = torch.randint(0, self.num_classes, (self.batch_size,))  # (B,)
        idx = {}
        for name, order in self.order.items():
            offset = (torch.rand(self.batch_size) * self.count[name][y]).long()  # (B,)
            idx[name] = order[self.start[name][y] + offset]  # (B,)
        return y, idx

    def __iter__(self) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
        for _ in range(self.steps_per_epoch):
            yield self.sample()


# ----------------------------------------------------------------------------- model
class CrossModalNet(nn.Module):
    """Per-modality adapters -> shared graph-transformer trunk -> embeddings; plus a fusion
    block over the joined node sets of several modalities.

    Args:
        modalities: the modality names used (a subset of ``("audio", "image", "text")``).
        cfg: sizes (``dim``, ``heads``, ``trunk_layers``, ``fusion_layers``, ``n_mels``) and
            the fusion block's attention projections (``fusion_projections``).

    Shapes:
        - :meth:`encode`: modality inputs -> :class:`NodeSet` ``(B, N_m, D)``
        - :meth:`embed`: that node set -> ``(B, D)`` unit vectors
        - :meth:`match`: node sets of several modalities -> logits ``(B,)``
    """

    def __init__(self, modalities: Sequence[str], cfg: CrossModalConfig) -> None:
        super().__init__()
        unknown = set(modalities) - set(ALL_MODALITIES)
        if unknown or not modalities:
            raise ValueError(f"modalities must be a subset of {ALL_MODALITIES}, got {modalities}")
        self.modalities = tuple(modalities)
        d = cfg.dim
        adapters: dict[str, nn.Module] = {}
        if "audio" in modalities:
            adapters["audio"] = AudioFrameAdapter(
                SAMPLE_RATE, d, n_mels=cfg.n_mels, n_fft=256, hop_length=cfg.hop_length
            )
        if "image" in modalities:
            adapters["image"] = CNNFeatureAdapter(stem(d), dim=d, in_channels=1)
        if "text" in modalities:
            adapters["text"] = TextAdapter(ByteTokenizer.vocab_size, d, TEXT_MAX_LEN)
        self.adapters = nn.ModuleDict(adapters)
        # log-mel, conv features and token embeddings arrive at very different scales
        self.in_norm = nn.ModuleDict({m: nn.LayerNorm(d) for m in self.modalities})
        self.modality_embed = ModalityFusion(d, self.modalities)  # trunk's modality embedding
        self.trunk = GraphTransformer(
            cfg.trunk_layers, d, cfg.heads, dim_feedforward=2 * d, dropout=0.1, activation="gelu"
        )
        self.project = nn.ModuleDict({m: nn.Linear(d, d) for m in self.modalities})
        self.fusion_embed = ModalityFusion(d, self.modalities)  # fusion block's own embedding
        fusion_kw: dict[str, Any] = {"dim_feedforward": 2 * d, "dropout": 0.1, "activation": "gelu"}
        self.per_modality = cfg.fusion_projections == "per_modality"
        self.fusion: GraphTransformer | ModalityTransformer
        if self.per_modality:  # every fusion layer: one q/k/v/out projection per modality
            self.fusion = ModalityTransformer(
                cfg.fusion_layers, d, cfg.heads, self.modalities, **fusion_kw
            )
        else:
            self.fusion = GraphTransformer(cfg.fusion_layers, d, cfg.heads, **fusion_kw)
        self.match_head = nn.Linear(d, 1)

    def encode(self, modality: str, inputs: Sequence[Tensor]) -> NodeSet:
        """Adapter, input norm, modality embedding and the shared trunk (each modality on
        its own complete graph, padding masked).

        Shapes:
            - inputs: audio ``(B, T)`` + lengths ``(B,)``; image ``(B, 1, 8, 8)``; text ids
              + mask ``(B, L)``
            - returns a :class:`NodeSet` ``(B, N_m, D)``.
        """
        if modality not in self.adapters:
            raise ValueError(f"modality must be one of {self.modalities}, got {modality!r}")
        nodes = self.adapters[modality](*inputs)  # (B, N_m, D)
        nodes = nodes.with_features(self.in_norm[modality](nodes.features))
        fused = self.modality_embed([nodes], mode="complete")  # one modality: its own graph
        out = self.trunk(fused.nodes.features, fused.graph)  # (B, N_m, D)
        return fused.nodes.with_features(out)

    def embed(self, nodes: NodeSet) -> Tensor:
        """Mean pool over real nodes, project, L2-normalise.

        Shapes:
            - nodes ``(B, N, D)`` of one modality; returns ``(B, D)``.
        """
        pooled = masked_mean(nodes.features, nodes.mask)  # (B, D)
        return F.normalize(self.project[nodes.modality](pooled), dim=-1)  # (B, D)

    def fuse(self, nodesets: Sequence[NodeSet]) -> FusedGraph:
        """Join trunk outputs of several modalities into one complete graph."""
        return self.fusion_embed(nodesets, mode="complete")

    def _fused(self, nodesets: Sequence[NodeSet]) -> tuple[FusedGraph, Any]:
        """The fused graph and what the fusion block reads as its structure: the
        :class:`FusedGraph` itself for per-modality projections (every node's modality),
        else its graph."""
        fused = self.fuse(nodesets)
        return fused, (fused if self.per_modality else fused.graph)

    def match(self, nodesets: Sequence[NodeSet]) -> Tensor:
        """Matched-or-not logit of each sample's fused graph.

        Shapes:
            - nodesets: ``(B, N_m, D)`` each; returns logits ``(B,)``.
        """
        fused, where = self._fused(nodesets)
        out = self.fusion(fused.nodes.features, where)  # (B, N, D)
        return self.match_head(masked_mean(out, fused.nodes.mask)).squeeze(-1)  # (B,)

    def match_with_weights(
        self, nodesets: Sequence[NodeSet]
    ) -> tuple[Tensor, FusedGraph, list[AttentionWeights]]:
        """:meth:`match`, also returning the :class:`FusedGraph` and every fusion layer's
        attention weights."""
        fused, where = self._fused(nodesets)
        res = self.fusion.forward_with_weights(fused.nodes.features, where)
        logits = self.match_head(masked_mean(res.out, fused.nodes.mask)).squeeze(-1)  # (B,)
        return logits, fused, res.attentions


# ----------------------------------------------------------------------------- objectives
def class_infonce(za: Tensor, zb: Tensor, ya: Tensor, yb: Tensor, temperature: float) -> Tensor:
    """Symmetric supervised InfoNCE: every item of the other modality with the same digit is
    a positive; the loss is ``-log(sum_pos softmax)`` per row, averaged over both directions.

    Shapes:
        - za: ``(B, D)``, zb: ``(B', D)`` unit vectors; ya: ``(B,)``, yb: ``(B',)``
        - returns a scalar.
    """
    logits = za @ zb.T / temperature  # (B, B')
    pos = ya[:, None] == yb[None, :]  # (B, B')
    neg_inf = torch.finfo(logits.dtype).min

    def one_way(lg: Tensor, p: Tensor) -> Tensor:
        num = torch.logsumexp(lg.masked_fill(~p, neg_inf), dim=1)  # (rows,)
        keep = p.any(1)  # rows without a positive carry no signal
        return (torch.logsumexp(lg, dim=1) - num)[keep].mean()

    return 0.5 * (one_way(logits, pos) + one_way(logits.T, pos.T))


def mismatched(nodesets: Sequence[NodeSet], y: Tensor) -> tuple[list[NodeSet], Tensor]:
    """Swap one random member of every sample's tuple for the same modality's member of
    another sample (a random roll of the batch), and say which tuples are still matched.

    Shapes:
        - nodesets: ``(B, N_m, D)`` each; y: ``(B,)``
        - returns the swapped node sets and labels ``(B,)`` float (1 = all one digit).
    """
    b = y.shape[0]
    which = torch.randint(0, len(nodesets), (b,))  # (B,) modality swapped in each sample
    shift = int(torch.randint(1, b, ()))
    donor = torch.roll(torch.arange(b), shift)  # (B,)
    out = []
    for m, ns in enumerate(nodesets):
        swap = which == m  # (B,)
        feats = torch.where(swap[:, None, None], ns.features[donor], ns.features)  # (B, N, D)
        mask = torch.where(swap[:, None], ns.mask[donor], ns.mask)  # (B, N)
        out.append(NodeSet(feats, mask, modality=ns.modality))
    labels = (y[donor] == y).float()  # (B,): the swapped-in item may share the digit
    return out, labels


# ----------------------------------------------------------------------------- variants
def variant_plan(
    variant: str, modalities: Sequence[str]
) -> tuple[list[tuple[str, str]], list[tuple[str, ...]]]:
    """``(contrastive pairs, fusion groups)`` of a training protocol.

    ``paired`` uses every pair and fuses all modalities in one graph; ``zero_shot`` (needs
    audio) never puts text and image together.
    """
    mods = list(modalities)
    if variant == "paired":
        pairs = [(a, b) for i, a in enumerate(mods) for b in mods[i + 1 :]]
        return pairs, [tuple(mods)]
    if variant == "zero_shot":
        if set(mods) != set(ALL_MODALITIES):
            raise ValueError(f"variant 'zero_shot' needs {ALL_MODALITIES}, got {tuple(mods)}")
        return [("audio", "image"), ("text", "audio")], [("audio", "image"), ("text", "audio")]
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def directions(modalities: Sequence[str]) -> list[str]:
    """Every ordered ``query->gallery`` pair of modalities."""
    return [f"{a}->{b}" for a in modalities for b in modalities if a != b]


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def embed_split(model: CrossModalNet, name: str, inputs: tuple[Tensor, ...]) -> Tensor:
    """Embeddings of a whole split, in chunks. Shapes: returns ``(S, D)``."""
    chunks = []
    for i in range(0, len(inputs[0]), 256):
        part = [t[i : i + 256] for t in inputs]
        chunks.append(model.embed(model.encode(name, part)))
    return torch.cat(chunks)


def recall_at_1(zq: Tensor, yq: Tensor, zg: Tensor, yg: Tensor) -> float:
    """Class-level recall@1: share of queries whose most similar gallery item has their
    digit.

    Shapes:
        - zq ``(Q, D)``, yq ``(Q,)``, zg ``(G, D)``, yg ``(G,)``.
    """
    top = (zq @ zg.T).argmax(dim=1)  # (Q,)
    return float((yg[top] == yq).float().mean())


def held_out_tuples(splits: dict[str, Split], group: Sequence[str], n: int, seed: int) -> Any:
    """``n`` matched test tuples of a fusion group: for each, a random test item of every
    modality with the same digit (fixed generator).

    Returns:
        ``(digits (n,), {modality: item indices (n,)})``.
    """
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, len(WORDS), (n,), generator=gen)  # (n,)
    idx = {}
    for m in group:
        ty = splits[m].test_y
        pick = []
        for d in y.tolist():
            cand = (ty == d).nonzero().flatten()
            pick.append(int(cand[torch.randint(0, len(cand), (1,), generator=gen)]))
        idx[m] = torch.tensor(pick, dtype=torch.long)
    return y, idx


@torch.no_grad()
def evaluate(
    model: CrossModalNet,
    splits: dict[str, Split],
    groups: Sequence[tuple[str, ...]],
    n_tuples: int = 300,
) -> dict[str, Any]:
    """Recall@1 of every direction, fusion matching accuracy and modality attention tables.

    Returns:
        ``{"recall@1": {direction: r}, "text_recall@1_by_phrase": {direction: {phrase:
        r}}, "match_acc": {group: acc}, "modality_attention": {group: {"names": [...],
        "layers": [(M, M) as lists]}}}``.
    """
    was = model.training
    model.eval()
    z = {m: embed_split(model, m, splits[m].test) for m in model.modalities}
    recall = {}
    for d in directions(model.modalities):
        q, g = d.split("->")
        recall[d] = recall_at_1(z[q], splits[q].test_y, z[g], splits[g].test_y)
    by_phrase: dict[str, dict[str, float]] = {}
    if "text" in z:  # text -> every other modality, per held-out phrasing
        per = len(WORDS)
        for g in (m for m in model.modalities if m != "text"):
            by_phrase[f"text->{g}"] = {
                TEST_PHRASES[i]: recall_at_1(
                    z["text"][i * per : (i + 1) * per],
                    splits["text"].test_y[i * per : (i + 1) * per],
                    z[g],
                    splits[g].test_y,
                )
                for i in range(len(TEST_PHRASES))
            }
    match_acc, tables = {}, {}
    for group in groups:
        key = "+".join(group)
        y, idx = held_out_tuples(splits, group, n_tuples, seed=1234)
        nodes = [model.encode(m, [t[idx[m]] for t in splits[m].test]) for m in group]
        gen_state = torch.get_rng_state()
        torch.manual_seed(4321)  # the same negatives every evaluation
        neg, labels = mismatched(nodes, y)
        torch.set_rng_state(gen_state)
        logits, fused, attns = model.match_with_weights(nodes)  # (n,)
        neg_logits = model.match(neg)  # (n,)
        correct = (logits > 0).float().sum() + ((neg_logits > 0).float() == labels).float().sum()
        match_acc[key] = float(correct / (2 * n_tuples))
        onehot = F.one_hot(fused.modality_ids, len(fused.modality_names)).float()  # (N, M)
        counts = fused.nodes.mask.float() @ onehot  # (n, M) real nodes per modality
        tables[key] = {
            "names": list(fused.modality_names),
            "layers": [fused.modality_summary(a).tolist() for a in attns],
            # what a target would give each modality if it attended uniformly to all nodes
            "uniform": (counts / counts.sum(1, keepdim=True)).mean(0).tolist(),
        }
    model.train(was)
    return {
        "recall@1": recall,
        "text_recall@1_by_phrase": by_phrase,
        "match_acc": match_acc,
        "modality_attention": tables,
    }


# ----------------------------------------------------------------------------- training
def train_one(
    variant: str, seed: int, cfg: CrossModalConfig, splits: dict[str, Split]
) -> tuple[dict[str, Any], CrossModalNet]:
    """Train one variant with one seed; returns its evaluation, losses and timing, and the
    trained model."""
    modalities = tuple(m for m in ALL_MODALITIES if m in splits)
    pairs, groups = variant_plan(variant, modalities)
    seed_everything(seed)
    model = CrossModalNet(modalities, cfg)
    sampler = TripleSampler({m: splits[m].train_y for m in modalities}, cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=max(cfg.steps, 1), pct_start=0.1
    )

    def step_fn(model: CrossModalNet, batch: Any) -> dict[str, Any]:
        y, idx = batch  # (B,), {modality: (B,)}
        nodes = {}
        for m in modalities:
            inputs = [t[idx[m]] for t in splits[m].train]
            if m == "image":
                inputs = [random_shift(inputs[0], cfg.shift)]  # (B, 1, 8, 8)
            nodes[m] = model.encode(m, inputs)  # (B, N_m, D)
        z = {m: model.embed(nodes[m]) for m in modalities}  # (B, D) each
        nce = torch.stack([class_infonce(z[a], z[b], y, y, cfg.temperature) for a, b in pairs])
        match_losses, match_acc = [], []
        k = min(cfg.match_batch, y.shape[0])
        for group in groups:
            pos = [NodeSet(nodes[m].features[:k], nodes[m].mask[:k], modality=m) for m in group]
            neg, labels = mismatched(pos, y[:k])
            logits = torch.cat([model.match(pos), model.match(neg)])  # (2B,)
            target = torch.cat([torch.ones_like(labels), labels])  # (2B,)
            match_losses.append(F.binary_cross_entropy_with_logits(logits, target))
            match_acc.append(((logits > 0).float() == target).float().mean())
        match = torch.stack(match_losses).mean()
        loss = nce.mean() + cfg.match_weight * match
        return {
            "loss": loss,
            "nce": nce.mean(),
            "match": match,
            "match_acc": torch.stack(match_acc).mean(),
            "num_samples": y.shape[0],
        }

    last_eval: dict[str, Any] = {}

    def eval_fn(model: CrossModalNet) -> dict[str, float]:
        last_eval.update(evaluate(model, splits, groups, cfg.eval_tuples))  # kept for the report
        return {f"r1_{k}": v for k, v in last_eval["recall@1"].items()}

    run_dir = Path(cfg.out_dir) / variant / f"seed{seed}"
    log_every = max(1, min(25, cfg.steps // 4))  # first and last loss: means of >= 1 step
    config = TrainConfig(
        max_steps=cfg.steps,
        eval_every=0,
        log_every=log_every,
        out_dir=run_dir,
        resume=False,
        progress=cfg.progress,
        grad_clip=1.0,
    )
    t0 = time.perf_counter()
    result = Trainer(model, opt, step_fn, sampler, config, scheduler=sched, eval_fn=eval_fn).fit()
    losses = result.values("loss")
    plot_curves(
        result.history,
        run_dir / "curves.png",
        names=["loss", "nce", "match", "match_acc"],
        title=f"cross_modal_digits {variant} seed {seed}",
    )
    record = {
        "variant": variant,
        "seed": seed,
        "pairs": [f"{a}-{b}" for a, b in pairs],
        "fusion_groups": ["+".join(g) for g in groups],
        **last_eval,  # the Trainer's final evaluation (after the last step), in full
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "steps": cfg.steps,
        "wall_s": time.perf_counter() - t0,
        "train_wall_s": result.elapsed_s,
    }
    return record, model


# ----------------------------------------------------------------------------- pictures
def _layout(fused: FusedGraph, grid: tuple[int, int]) -> Tensor:
    """Node coordinates for the picture: audio frames along the top, image cells as their
    ``grid`` in the middle, text bytes along the bottom.

    Shapes:
        - returns ``(N, 2)``.
    """
    xy = torch.zeros(fused.nodes.num_nodes, 2)  # (N, 2)
    rows = {"audio": 1.25, "text": -0.9}
    for name, (lo, hi) in fused.slices.items():
        n = hi - lo
        if name == "image" and grid[0] * grid[1] == n:
            cell = torch.arange(n)  # (n,) row-major cells
            xy[lo:hi, 0] = (cell % grid[1] - (grid[1] - 1) / 2) * 0.18
            xy[lo:hi, 1] = 0.45 - (cell // grid[1]) * 0.3
        else:
            xy[lo:hi, 0] = torch.linspace(-1.6, 1.6, n) if n > 1 else 0.0
            xy[lo:hi, 1] = rows.get(name, 0.0)
    return xy


def _trim(nodes: NodeSet) -> NodeSet:
    """A batch of one without its padded nodes. Shapes: ``(1, N, D)`` -> ``(1, N', D)``."""
    keep = nodes.mask[0]  # (N,)
    return NodeSet(nodes.features[:, keep], nodes.mask[:, keep], modality=nodes.modality)


@torch.no_grad()
def save_pictures(
    model: CrossModalNet,
    splits: dict[str, Split],
    group: tuple[str, ...],
    table: dict[str, Any],
    out: Path,
    title: str,
) -> dict[str, str]:
    """The fused attention graph of one matched test tuple (no padding: a batch of one) and
    the modality-by-modality attention table of the last fusion layer."""
    model.eval()
    y, idx = held_out_tuples(splits, group, 1, seed=7)
    nodes = [_trim(model.encode(m, [t[idx[m]] for t in splits[m].test])) for m in group]
    logit, fused, attns = model.match_with_weights(nodes)
    labels: list[str] = []
    for m, ns in zip(group, nodes, strict=True):
        if m == "text":
            ids = splits["text"].test[0][idx["text"][0]][: ns.num_nodes].tolist()
            labels += [ByteTokenizer().decode([i]) or "·" for i in ids]
        elif m == "audio":
            labels += [f"a{i}" for i in range(ns.num_nodes)]
        else:
            labels += [f"i{i}" for i in range(ns.num_nodes)]
    what = "; ".join(f"{m}: {splits[m].test_names[int(idx[m][0])]!r}" for m in group)
    graph_path = plot_attention_graph(
        attns[-1],
        out / "attention_graph.png",
        node_labels=labels,
        modality=fused.modality_ids,
        modality_names=fused.modality_names,
        positions=_layout(fused, (4, 4)),
        top_edges=80,
        sample=0,
        title=f"{title}: strongest fused-graph attention edges\n"
        f"({what}; match p={float(torch.sigmoid(logit[0])):.2f})",
    )
    summary = torch.tensor(table["layers"][-1])  # (M, M)
    table_path = plot_attention_heatmap(
        summary,
        out / "modality_attention.png",
        tokens=table["names"],
        title=f"{title}: attention mass by modality\n(row: target, column: source)",
    )
    return {"attention_graph": str(graph_path), "modality_attention": str(table_path)}


# ----------------------------------------------------------------------------- report
def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread over seeds of every variant's recall@1 per direction."""
    rows = []
    for variant in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == variant]
        rows.append(
            {
                "variant": variant,
                "seeds": len(mine),
                "recall@1": {d: stats(r["recall@1"][d] for r in mine) for d in mine[0]["recall@1"]},
                "match_acc": {
                    g: statistics.fmean(r["match_acc"][g] for r in mine)
                    for g in mine[0]["match_acc"]
                },
                "wall_s": sum(r["wall_s"] for r in mine),
            }
        )
    return rows


def format_recall_table(rows: list[dict[str, Any]]) -> str:
    """Directions as rows, variants as columns (``mean ± std`` % over seeds), goal column."""
    dirs = list(dict.fromkeys(d for r in rows for d in r["recall@1"]))
    head = f"{'R@1 (class-level)':<16}" + "".join(f"{r['variant']:>20}" for r in rows)
    lines = [head + f"{'goal':>8}"]
    for d in dirs:
        cells = []
        for r in rows:
            v = r["recall@1"].get(d)
            cell = "-" if v is None else f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f} %"
            if r["variant"] == "zero_shot" and d in ("text->image", "image->text"):
                cell = "*" + cell
            cells.append(f"{cell:>20}")
        goal = f">= {100 * GOALS[d]:.0f} %" if d in GOALS else ""
        lines.append(f"{d:<16}" + "".join(cells) + f"{goal:>8}")
    lines.append(
        f"{'match acc':<16}"
        + "".join(f"{100 * statistics.fmean(r['match_acc'].values()):>18.1f} %" for r in rows)
    )
    lines.append(f"{'seeds':<16}" + "".join(f"{r['seeds']:>20}" for r in rows))
    if any(r["variant"] == "zero_shot" for r in rows):
        lines.append("* zero-shot: text and image were never paired in training")
    return "\n".join(lines)


def format_attention(table: dict[str, Any], label: str) -> str:
    """The last fusion layer's modality table as text rows."""
    names = table["names"]
    m = table["layers"][-1]
    lines = [f"{label}: attention mass, target <- source (last fusion layer)"]
    lines.append(f"{'':<8}" + "".join(f"{n:>8}" for n in names))
    for n, row in zip(names, m, strict=True):
        lines.append(f"{n:<8}" + "".join(f"{v:>8.3f}" for v in row))
    lines.append(f"{'uniform':<8}" + "".join(f"{v:>8.3f}" for v in table["uniform"]))
    return "\n".join(lines)


def run(cfg: CrossModalConfig) -> dict[str, Any]:
    """Train every variant for every seed, print the tables, write the JSON and pictures."""
    exp = Experiment("cross_modal_digits", cfg)
    splits, note = load_all(cfg)
    if note:
        print(note, flush=True)
    variants = [v for v in cfg.variants if v != "zero_shot" or "audio" in splits]
    if len(variants) < len(cfg.variants):
        print("skipping variant 'zero_shot': it needs the audio modality", flush=True)
    if not variants:
        raise ValueError(f"no variant of {cfg.variants} can run on {tuple(splits)}")
    sizes = {m: (len(s.train_y), len(s.test_y)) for m, s in splits.items()}
    print(
        "data (train/test): " + ", ".join(f"{m} {a}/{b}" for m, (a, b) in sizes.items()),
        flush=True,
    )
    pictures: dict[str, dict[str, str]] = {}
    params = None
    for variant in variants:
        for seed in range(cfg.seeds):
            r, model = train_one(variant, seed, cfg, splits)
            params = count_params(model)
            if seed == 0:
                group = r["fusion_groups"][0]
                pictures[variant] = save_pictures(
                    model,
                    splits,
                    tuple(group.split("+")),
                    r["modality_attention"][group],
                    exp.out_dir / variant,
                    f"{variant}",
                )
            shown = ", ".join(f"{d} {100 * v:.1f}" for d, v in r["recall@1"].items())
            exp.add(
                r,
                f"{variant} seed {seed}: R@1 % {shown}; loss {r['first_loss']:.3f} -> "
                f"{r['last_loss']:.3f}, {r['wall_s']:.1f} s",
            )
    rows = summarize(exp.runs)
    first = {r["variant"]: r for r in exp.runs if r["seed"] == 0}
    attention = "\n".join(
        format_attention(tab, f"{v} seed 0, {g}")
        for v, r in first.items()
        for g, tab in r["modality_attention"].items()
    )
    print(attention, flush=True)
    goals = {}
    if "audio" in splits:
        for d, target in GOALS.items():
            best = [r["recall@1"][d]["mean"] for r in rows if d in r["recall@1"]]
            goals[d] = {
                "goal": target,
                "mean_by_variant": best,
                "met": all(b >= target for b in best),
            }
    return exp.finish(
        format_recall_table(rows),
        modalities=list(splits),
        note=note,
        data={
            "audio": "FSDD official split (takes 5-49 train, 0-4 test)"
            if "audio" in splits
            else None,
            "image": "sklearn load_digits, stratified 80/20 (random_state=0)",
            "text": {"train_phrases": train_templates(), "test_phrases": list(TEST_PHRASES)},
            "sizes_train_test": sizes,
        },
        metric="class-level recall@1 on held-out items (top-ranked gallery item has the "
        "query's digit); chance 10 %",
        params=params,
        goals=goals,
        summary=rows,
        pictures=pictures,
        attention_table=attention,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run(parse_config(CrossModalConfig, argv, __doc__, PRESETS))


if __name__ == "__main__":
    main()

"""Spoken digits: an attention classifier over log-mel frames (Free Spoken Digit Dataset).

3000 recordings at 8 kHz (6 speakers x 10 digits x 50 takes, :mod:`examples.fsdd`). The model:

- :class:`modalities.AudioFrameAdapter`: waveform -> log-mel spectrogram (``n_mels`` bins,
  32 ms windows every 10 ms) -> every ``frames_per_node`` consecutive frames become one node
  (a linear projection of the frames) with a sin-cos time position; the frames past each
  recording's end are padding (``NodeSet.mask``);
- optionally (``--centre``), each recording's mean node feature is subtracted from its nodes
  (as cepstral mean normalisation: a fixed speaker or channel colouring of the spectrum is a
  constant offset of the log-mel frames, so of the projected nodes);
- optionally (``--speaker-norm meanvar|mean``), speaker-level CMVN of the log-mel frames
  before the hook: per mel bin, each speaker's mean and deviation over all the real frames
  of all its recordings, unlabelled (:func:`speaker_statistics`): a training speaker's from
  its training recordings, a held-out speaker's from its own test recordings. That is
  transductive (the 500 test recordings of the new speaker are heard, without labels,
  before any is classified), as speaker adaptation in speech recognition is;
- optionally, the adapter's log-mel hook (``transform``, all off by default): VTLP
  (``--vtlp``, :class:`modalities.VTLP`, training only: a random warp of each recording's
  frequency axis, as another vocal tract length would give), cepstral smoothing
  (``--cepstra K``: keep the first K cepstral coefficients of each frame, so the formant
  envelope stays and the pitch harmonics go), per-utterance normalisation
  (``--norm mean|meanvar|global``, :class:`modalities.UtteranceNorm`) and SpecAugment
  (``--freq-masks``, ``--time-masks``, :class:`modalities.SpecAugment`, training only);
- :class:`graphattn.GraphTransformer` on the complete graph over the real nodes (the
  padding is the key padding mask), masked mean pool over the real nodes, linear head;
- optionally, at test: an ensemble of ``--ensemble K`` models (seeds ``s + 1000 k``), their
  probabilities averaged over the frequency warps ``1 - w, 1, 1 + w`` (``--tta-warp w``),
  and, for a speaker never heard in training, the warp of the whole speaker chosen from
  ``[1 - a, 1 + a]`` by the lowest mean prediction entropy over its recordings
  (``--adapt-warp a``: vocal tract length normalisation without labels, transductive as
  ``--speaker-norm`` is; :func:`ensemble_proba`).

Training: AdamW, linear warm-up then cosine decay, label smoothing, and augmentation of the
waveform (random gain, random delay of the onset, a little noise; optionally a random speed,
``--speed``), of the log-mel frames (optionally a random tempo, ``--tempo``) and of the nodes
(one random span of nodes per recording is masked out, SpecAugment-style time masking);
optionally mixup of the log-mel frames (``--mixup``).

Two evaluations:

- the official split (takes 0-4 of every speaker and digit are the test set, 300 recordings;
  the other 2700 train), over several seeds; goal >= 97 % test accuracy;
- speaker hold-out: train on the recordings of five speakers, test on all 500 recordings of
  the sixth, who is never heard in training (one run per held-out speaker). To choose
  settings without touching the speakers reported, ``--drop`` leaves speakers out of every
  run: ``--seeds 0 --holdout jackson --drop george`` trains on four speakers and validates
  on jackson; ``--official-val`` validates on takes 5-9 instead of testing on takes 0-4.

Measured (``examples/results/spoken_digits_hook*.json``): ``--norm global --cepstra 13``,
chosen so, raises the held-out mean from 77.8 to 81.3 % and the official split from
99.22 ± 0.51 to 99.78 ± 0.19 %. ``--speaker-norm meanvar --cepstra 13 --vtlp 0.05``, chosen
so as well (``examples/results/spoken_digits_speaker*.json``), raises the held-out mean to
87.4 % (goal 90 % missed) but lowers the official split to 98.78 ± 0.38 %. With
``--ensemble 3 --tta-warp 0.05 --adapt-warp 0.1`` added (``--vtln``, chosen so too;
``examples/results/spoken_digits_vtln*.json``, 1 thread): held-out mean **90.23 %** (george
84.4, jackson 92.2, lucas 93.0, nicolas 83.4, theo 95.0, yweweler 93.4; 666 s) and official
split **99.11 ± 0.19 %** (356 s), both goals met by a small margin (a few recordings);
with ``--ensemble 5`` (``spoken_digits_vtln5*.json``): 90.50 % and 99.22 ± 0.19 % (1130 s and
563 s). The defaults stay as they were, so that the first results
(``examples/results/spoken_digits.json``) are still what ``python -m examples.spoken_digits``
gives.

Writes ``examples/results/spoken_digits.json`` (:mod:`examples.harness`) and, in
``--out-dir``, per-run metrics
(``examples.training.Trainer``), the attention rollout over the frames of one test recording
under its log-mel spectrogram (``attention_frames.png``), the last layer's attention map
(``attention_last_layer.png``) and the official-split confusion matrix
(``confusion_matrix.png``), all of the seed-0 official-split model.

Run: ``python -m examples.spoken_digits [--seeds 3] [--holdout theo ...] [--vtln] [--quick]``
(every field of :class:`SpokenDigitsConfig` is a flag: ``--help``)

Axis legend: ``B`` batch, ``T`` samples, ``M`` mel bins, ``F`` frames, ``N`` nodes, ``D``
node feature size, ``K`` classes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from examples.fsdd import SAMPLE_RATE, Recording, load_fsdd, pad_waveforms
from examples.harness import (
    Experiment,
    count_params,
    format_table,
    parse_config,
    pm,
    summarize,
    warmup_cosine,
)
from examples.training import BatchLoader, TrainConfig, Trainer, atomic_write, seed_everything
from graphattn import AttentionWeights, GraphTransformer
from graphattn.explain import attention_rollout
from graphattn.plot import plot_attention_heatmap
from modalities import VTLP, AudioFrameAdapter, SpecAugment, UtteranceNorm, masked_mean

RESULTS = Path(__file__).resolve().parent / "results" / "spoken_digits.json"
Speaker = Literal["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
SPEAKERS: tuple[Speaker, ...] = get_args(Speaker)
NUM_CLASSES = 10


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


@dataclass
class SpokenDigitsConfig:
    """One experiment (every seed and every hold-out); the defaults are the full run."""

    seeds: int = 3  # official-split runs with seeds 0..seeds-1
    holdout: tuple[Speaker, ...] = SPEAKERS  # one speaker-hold-out run (seed 0) per name
    epochs: int = 20  # passes over the training recordings (~1.5-2 min a run on 1 thread)
    batch_size: int = 64  # 43 steps per epoch on the official split
    lr: float = 2e-3  # AdamW peak learning rate
    weight_decay: float = 0.05  # AdamW decoupled weight decay
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to 0
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    dim: int = 64  # node feature size D
    layers: int = 3  # graph transformer layers
    heads: int = 4  # attention heads (16 features each)
    dropout: float = 0.1  # transformer dropout
    n_mels: int = 40  # mel bins M (the usual choice for 8 kHz speech)
    n_fft: int = 256  # 32 ms analysis window at 8 kHz
    hop_length: int = 80  # 10 ms between frames
    frames_per_node: int = 4  # frames stacked into one node: 40 ms a node, ~22 nodes a clip
    max_samples: int = 8000  # cut recordings at 1 s (longer than 99 % of them)
    max_delay_ms: float = 100.0  # augmentation: the onset is delayed by up to this much
    gain_db: float = 6.0  # augmentation: random gain in [-g, +g] dB
    noise: float = 0.003  # augmentation: white noise of std up to this (full scale 1)
    centre: bool = False  # subtract each recording's mean node feature (as cepstral mean
    # normalisation); measured: official split 99.3 -> 97.7 %, held-out mean 78.1 -> 76.3 %
    # (only theo gains, 82.6 -> 92.4 %), so off by default
    time_mask: float = 0.2  # augmentation: mask one random span of up to this fraction of nodes
    speed: float = 0.0  # augmentation: play each recording at a random speed in [1 - s, 1 + s]
    # (pitch, formants and tempo move together: a shorter or longer vocal tract)
    tempo: float = 0.0  # augmentation: play each recording's log-mel frames at a random
    # tempo in [1 / (1 + t), 1 + t], log-uniform (pitch kept): other speaking rates
    norm: Literal["none", "mean", "meanvar", "global"] = "none"  # per-utterance normalisation
    # of the log-mel frames over the real frames (modalities.UtteranceNorm): per mel bin the
    # mean, or the mean and variance; global: one mean and variance (level; spectrum kept)
    cepstra: int = 0  # keep this many cepstral coefficients of each log-mel frame (0: all):
    # the envelope (formants) stays, the pitch harmonics go
    speaker_norm: Literal["none", "mean", "meanvar"] = "none"  # speaker-level CMVN of the
    # log-mel frames, before the hook: per mel bin, the mean (and deviation) over every real
    # frame of every recording of the speaker (unlabelled), from a training speaker's
    # training recordings, from a held-out speaker's own test recordings (transductive)
    vtlp: float = 0.0  # VTLP (training only, modalities.VTLP): warp each recording's
    # frequency axis by a random factor in [1 - v, 1 + v] (Jaitly and Hinton use 0.1)
    freq_masks: int = 0  # SpecAugment (training only): frequency masks per recording
    freq_width: int = 8  # SpecAugment: widest frequency mask, mel bins
    time_masks: int = 0  # SpecAugment (training only): time masks per recording
    time_width: int = 8  # SpecAugment: widest time mask, frames (10 ms each)
    mixup: float = 0.0  # mixup (training only) of the log-mel frames after the hook: each
    # recording mixed with another of the batch, weight lam ~ Beta(a, a) folded to >= 0.5,
    # the loss mixed alike; a = mixup, 0: off
    ensemble: int = 1  # models trained per run (seeds s, s + 1000, s + 2000, ...), their
    # softmax outputs averaged at test; 1: a single model
    tta_warp: float = 0.0  # test-time augmentation: average the softmax over the frequency
    # warps 1 - w, 1 and 1 + w of the log-mel frames (VTLP's warp, after speaker_norm); 0: off
    adapt_warp: float = 0.0  # test-time vocal tract length normalisation of new speakers
    # (unsupervised, transductive like speaker_norm): warp every test speaker without
    # training recordings by the factor in [1 - a, 1 + a] (steps of 0.025) whose predictions
    # (ensemble, tta_warp around it) have the lowest mean entropy over its test recordings
    # (ensemble_proba); 0: off
    limit_per_class: int | None = None  # takes per (speaker, digit) and side (smoke tests)
    official_val: bool = False  # official split: train on takes 10-49, evaluate on takes 5-9
    # (to choose settings without the test takes 0-4)
    drop: tuple[Speaker, ...] = ()  # speakers left out of every run (to choose settings on a
    # validation speaker without ever training or testing on the speakers reported)
    data_dir: str | None = None  # holds fsdd/recordings (see resolve_data_dir)
    out_dir: str = "runs/spoken_digits"  # per-run metrics and the pictures
    results: str | None = str(RESULTS)  # the summary JSON (None: in out_dir)
    threads: int | None = None  # torch.set_num_threads (None: leave as is)
    progress: bool = True  # tqdm bar per run

    def __post_init__(self) -> None:
        for name, low in (("seeds", 0), ("epochs", 1), ("batch_size", 1), ("dim", 1)):
            _check_int(name, getattr(self, name), low)
        for name in ("layers", "heads", "n_mels", "n_fft", "hop_length", "frames_per_node"):
            _check_int(name, getattr(self, name), 1)
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.frames_per_node > 1 and self.dim % 4:
            raise ValueError(
                f"dim must be divisible by 4 when frames_per_node > 1 (2-D sin-cos positions), "
                f"got {self.dim}"
            )
        if not 0.0 <= self.time_mask < 1.0:
            raise ValueError(f"time_mask must lie in [0, 1), got {self.time_mask}")
        if not 0.0 <= self.speed < 0.5:
            raise ValueError(f"speed must lie in [0, 0.5), got {self.speed}")
        if not 0.0 <= self.tempo <= 1.0:
            raise ValueError(f"tempo must lie in [0, 1], got {self.tempo}")
        if self.cepstra > self.n_mels:
            raise ValueError(f"cepstra ({self.cepstra}) must be <= n_mels ({self.n_mels})")
        for name in ("freq_masks", "freq_width", "time_masks", "time_width", "cepstra"):
            _check_int(name, getattr(self, name), 0)
        _check_int("ensemble", self.ensemble, 1)
        if not 0.0 <= self.mixup:
            raise ValueError(f"mixup must be >= 0, got {self.mixup}")
        if not 0.0 <= self.tta_warp < 0.5:
            raise ValueError(f"tta_warp must lie in [0, 0.5), got {self.tta_warp}")
        if not 0.0 <= self.adapt_warp < 0.5:
            raise ValueError(f"adapt_warp must lie in [0, 0.5), got {self.adapt_warp}")
        if not 0.0 <= self.vtlp < 0.5:
            raise ValueError(f"vtlp must lie in [0, 0.5), got {self.vtlp}")
        if self.speaker_norm not in ("none", "mean", "meanvar"):
            raise ValueError(
                f"speaker_norm must be 'none', 'mean' or 'meanvar', got {self.speaker_norm!r}"
            )
        if self.norm not in ("none", "mean", "meanvar", "global"):
            raise ValueError(
                f"norm must be 'none', 'mean', 'meanvar' or 'global', got {self.norm!r}"
            )
        unknown = [s for s in (*self.holdout, *self.drop) if s not in SPEAKERS]
        if unknown:
            raise ValueError(f"speakers {unknown} are not in FSDD; known: {SPEAKERS}")
        both = sorted(set(self.holdout) & set(self.drop))
        if both:
            raise ValueError(f"speakers {both} are both held out and dropped (holdout, drop)")
        if len(set(self.drop)) > len(SPEAKERS) - 2:
            raise ValueError(f"drop leaves fewer than 2 speakers: {self.drop}")


#: the settings chosen for new speakers (on jackson with george dropped, and on takes 5-9):
#: held-out mean 90.23 %, official split 99.11 +- 0.19 % (examples/results/spoken_digits_vtln*)
VTLN = {
    "speaker_norm": "meanvar",
    "cepstra": 13,
    "vtlp": 0.05,
    "ensemble": 3,
    "tta_warp": 0.05,
    "adapt_warp": 0.1,
    "out_dir": "runs/spoken_digits_vtln",
}
PRESETS = {
    "quick": ("a check, not a result", {"seeds": 1, "epochs": 2, "holdout": ("theo",)}),
    "vtln": (
        "new speakers: speaker CMVN, VTLP, 3-model ensemble, test-time warps; ~3x the time",
        VTLN,
    ),
}


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class AudioSet:
    """Padded waveforms, their lengths, labels and speakers.

    Shapes:
        - waves: ``(S, T)`` float32, zero after each length; lengths, labels: ``(S,)`` long;
          speakers: ``(S,)`` long, indices into :data:`SPEAKERS`
    """

    waves: Tensor
    lengths: Tensor
    labels: Tensor
    speakers: Tensor

    def __len__(self) -> int:
        return len(self.labels)


def to_audio_set(recordings: Sequence[Recording], max_samples: int) -> AudioSet:
    """Stack recordings (cut at ``max_samples``) into an :class:`AudioSet`."""
    waves, lengths = pad_waveforms(recordings, max_samples=max_samples)  # (S, T), (S,)
    labels = torch.tensor([r.digit for r in recordings], dtype=torch.long)  # (S,)
    speakers = torch.tensor([SPEAKERS.index(r.speaker) for r in recordings])  # (S,)
    return AudioSet(waves, lengths, labels, speakers)


def change_speed(waves: Tensor, lengths: Tensor, factor: Tensor) -> tuple[Tensor, Tensor]:
    """Play every recording ``factor`` times as fast (linear interpolation): a factor above 1
    shortens it and raises its pitch and formants, as a shorter vocal tract would (speed
    perturbation, Ko et al. 2015).

    Shapes:
        - waves: ``(B, T)``; lengths, factor: ``(B,)``; returns ``(B, T')`` and the new
          lengths ``(B,)`` = ``ceil(lengths / factor)``, zero after each.
    """
    b, t = waves.shape
    new_lengths = torch.ceil(lengths / factor).long().clamp(min=1)  # (B,)
    width = int(new_lengths.max())
    pos = torch.arange(width)[None, :] * factor[:, None]  # (B, T') where to read, in samples
    left = pos.floor().long()  # (B, T')
    frac = pos - left  # (B, T')
    last = (lengths - 1).clamp(min=0)[:, None]  # (B, 1): the last real sample
    a = torch.gather(waves, 1, left.clamp(max=t - 1).minimum(last))  # (B, T')
    c = torch.gather(waves, 1, (left + 1).clamp(max=t - 1).minimum(last))  # (B, T')
    inside = torch.arange(width)[None, :] < new_lengths[:, None]  # (B, T')
    return (a + frac * (c - a)) * inside, new_lengths


def stretch_frames(
    spec: Tensor, mask: Tensor, rate: Tensor, min_frames: int = 1
) -> tuple[Tensor, Tensor]:
    """Play every recording's log-mel frames ``rate`` times as fast (linear interpolation
    between frames): a faster or slower speaker, with the pitch and formants kept.

    Shapes:
        - spec: ``(B, M, F)``; mask: ``(B, F)`` bool, True = real; rate: ``(B,)``; returns
          ``(B, M, F')`` and its mask ``(B, F')``, ``ceil(real / rate)`` real frames each
          (at least ``min(real, min_frames)``), zero after them.
    """
    real = mask.sum(1)  # (B,)
    new = torch.ceil(real / rate).long().maximum(real.clamp(max=min_frames))  # (B,)
    width = int(new.max())
    pos = torch.arange(width, dtype=spec.dtype)[None, :] * rate[:, None]  # (B, F') in frames
    last = (real - 1).clamp(min=0)[:, None]  # (B, 1)
    left = pos.floor().long().minimum(last)  # (B, F')
    right = (left + 1).minimum(last)  # (B, F')
    frac = (pos - left).clamp(0, 1)[:, None, :]  # (B, 1, F')
    m = spec.shape[1]
    a = torch.gather(spec, 2, left[:, None, :].expand(-1, m, -1))  # (B, M, F')
    c = torch.gather(spec, 2, right[:, None, :].expand(-1, m, -1))  # (B, M, F')
    new_mask = torch.arange(width)[None, :] < new[:, None]  # (B, F')
    return torch.where(new_mask[:, None, :], a + frac * (c - a), spec.new_zeros(())), new_mask


def augment(waves: Tensor, lengths: Tensor, cfg: SpokenDigitsConfig) -> tuple[Tensor, Tensor]:
    """Random speed, gain, onset delay and white noise of every recording (training only).

    Shapes:
        - waves: ``(B, T)``; lengths: ``(B,)``; returns ``(B, T')`` and ``(B,)``, where ``T'``
          is the longest new length (the speed changes it, the delay adds up to
          ``max_delay_ms``).
    """
    if cfg.speed > 0:
        factor = 1.0 + cfg.speed * (2 * torch.rand(len(waves)) - 1)  # (B,)
        waves, lengths = change_speed(waves, lengths, factor)  # (B, T'), (B,)
    b, t = waves.shape
    gain = 10.0 ** (cfg.gain_db * (2 * torch.rand(b, 1) - 1) / 20)  # (B, 1)
    waves = waves * gain  # (B, T)
    max_delay = int(cfg.max_delay_ms * SAMPLE_RATE / 1000)
    delay = torch.randint(0, max_delay + 1, (b,))  # (B,)
    new_lengths = lengths + delay  # (B,)
    width = int(new_lengths.max())
    src = torch.arange(width)[None, :] - delay[:, None]  # (B, T') index into the old wave
    real = (src >= 0) & (src < lengths[:, None])  # (B, T')
    out = torch.gather(waves, 1, src.clamp(0, t - 1)) * real  # (B, T')
    noise_std = cfg.noise * torch.rand(b, 1)  # (B, 1)
    inside = torch.arange(width)[None, :] < new_lengths[:, None]  # (B, T')
    out = out + noise_std * torch.randn(b, width) * inside  # (B, T')
    return out, new_lengths


def trim_batch(waves: Tensor, lengths: Tensor) -> Tensor:
    """Drop the columns past the longest recording of the batch.

    Shapes:
        - waves: ``(B, T)``; lengths: ``(B,)``; returns ``(B, max(lengths))``.
    """
    return waves[:, : int(lengths.max())]


def random_span_mask(mask: Tensor, fraction: float) -> Tensor:
    """Hide one random span of up to ``fraction`` of every sample's real nodes (SpecAugment
    time masking on nodes); at least one real node is always kept.

    Shapes:
        - mask: ``(B, N)`` bool, True = real node; returns the same shape.
    """
    if fraction <= 0:
        return mask
    b, n = mask.shape
    real = mask.sum(1)  # (B,)
    width = (torch.rand(b) * fraction * real).long().clamp(max=(real - 1).clamp(min=0))  # (B,)
    start = (torch.rand(b) * (real - width + 1)).long()  # (B,)
    pos = torch.arange(n)[None, :]  # (1, N)
    hidden = (pos >= start[:, None]) & (pos < (start + width)[:, None])  # (B, N)
    return mask & ~hidden


# ----------------------------------------------------------------------------- model
class CepstralSmoothing(nn.Module):
    """Keep the first ``keep`` cepstral coefficients of every log-mel frame (its DCT-II) and
    transform back: the spectral envelope (formants) stays, the fine ripple of the pitch
    harmonics goes (liftering, as MFCCs do, without changing the frame's size).

    Shapes:
        - spec: ``(B, M, F)``; mask: ``(B, F)``; returns ``(B, M, F)``.
    """

    def __init__(self, n_mels: int, keep: int) -> None:
        super().__init__()
        m = torch.arange(n_mels, dtype=torch.float64)
        dct = torch.cos(math.pi / n_mels * (m[:, None] + 0.5) * m[None, :])  # (M, K) DCT-II
        dct = dct * torch.full((n_mels,), math.sqrt(2 / n_mels)).index_fill(
            0, torch.tensor([0]), math.sqrt(1 / n_mels)
        )  # orthonormal columns
        low = dct[:, :keep]  # (M, k)
        self.register_buffer("smooth", (low @ low.T).float(), persistent=False)  # (M, M)
        self.keep = keep

    def forward(self, spec: Tensor, mask: Tensor) -> Tensor:
        return torch.einsum("mn,bnf->bmf", self.smooth, spec)  # (B, M, F)

    def extra_repr(self) -> str:
        return f"n_mels={self.smooth.shape[0]}, keep={self.keep}"


def spec_transforms(cfg: SpokenDigitsConfig) -> list[nn.Module]:
    """The log-mel hook of the adapter: :class:`modalities.VTLP` (``vtlp``, training only),
    :class:`CepstralSmoothing` (``cepstra``), :class:`modalities.UtteranceNorm` (``norm``),
    then :class:`modalities.SpecAugment` (training only; its masks are set to 0, the
    utterance's mean once normalised)."""
    out: list[nn.Module] = []
    if cfg.vtlp:
        out.append(VTLP(SAMPLE_RATE, cfg.n_mels, max_warp=cfg.vtlp))
    if cfg.cepstra:
        out.append(CepstralSmoothing(cfg.n_mels, cfg.cepstra))
    if cfg.norm != "none":
        out.append(
            UtteranceNorm(variance=cfg.norm != "mean", per_bin=cfg.norm in ("mean", "meanvar"))
        )
    if cfg.freq_masks or cfg.time_masks:
        out.append(
            SpecAugment(
                cfg.freq_width,
                cfg.time_width,
                freq_masks=cfg.freq_masks,
                time_masks=cfg.time_masks,
            )
        )
    return out


@torch.no_grad()
def speaker_statistics(
    adapter: AudioFrameAdapter, train: AudioSet, test: AudioSet, batch: int = 250
) -> Tensor:
    """Every speaker's log-mel mean and standard deviation per mel bin, over all the real
    frames of its recordings (no labels used): a speaker's training recordings when it has
    any, else its test recordings (a held-out speaker: transductive). Speakers in neither
    keep mean 0 and deviation 1. The frames are the adapter's untransformed log-mel.

    Shapes:
        - returns ``(2, len(SPEAKERS), M)``: ``[0]`` the means, ``[1]`` the deviations.
    """
    m = adapter.n_mels
    stats = []
    for data in (train, test):
        total = torch.zeros(len(SPEAKERS), m, dtype=torch.float64)  # (speakers, M)
        square = torch.zeros(len(SPEAKERS), m, dtype=torch.float64)  # (speakers, M)
        count = torch.zeros(len(SPEAKERS), dtype=torch.float64)  # (speakers,) real frames
        for i in range(0, len(data), batch):
            lengths = data.lengths[i : i + batch]  # (b,)
            waves = trim_batch(data.waves[i : i + batch], lengths)  # (b, T)
            spec, frames = adapter.log_mel(waves, lengths)  # (b, M, F), (b, F)
            x = torch.where(frames[:, None, :], spec, spec.new_zeros(())).double()  # (b, M, F)
            who = data.speakers[i : i + batch]  # (b,)
            total.index_add_(0, who, x.sum(2))
            square.index_add_(0, who, x.square().sum(2))
            count.index_add_(0, who, frames.sum(1).double())
        stats.append((total, square, count))
    (t0, q0, n0), (t1, q1, n1) = stats
    own = (n0 > 0)[:, None]  # (speakers, 1): the speaker has training recordings
    total, square = torch.where(own, t0, t1), torch.where(own, q0, q1)  # (speakers, M)
    count = torch.where(own, n0[:, None], n1[:, None])  # (speakers, 1)
    seen = count > 0  # (speakers, 1)
    mean = total / count.clamp(min=1)  # (speakers, M)
    std = (square / count.clamp(min=1) - mean.square()).clamp(min=1e-5).sqrt()  # (speakers, M)
    mean = torch.where(seen, mean, torch.zeros(()))  # (speakers, M)
    std = torch.where(seen, std, torch.ones(()))  # (speakers, M)
    return torch.stack([mean, std]).float()  # (2, speakers, M)


class SpokenDigitNet(nn.Module):
    """Log-mel frames as nodes -> graph transformer (complete graph, key padding) -> masked
    mean pool -> linear head.

    With ``speaker_norm``, each recording's log-mel frames are first normalised with its
    speaker's statistics (``speaker_stats``, set by :meth:`set_speaker_stats` from
    :func:`speaker_statistics`), then go through the adapter's hook.

    Args:
        cfg: sizes of the front end and the transformer (see :class:`SpokenDigitsConfig`).

    Shapes:
        - waves: ``(B, T)`` at 8 kHz; lengths, speakers: ``(B,)``; returns logits ``(B, K)``.
    """

    def __init__(self, cfg: SpokenDigitsConfig) -> None:
        super().__init__()
        fpn = cfg.frames_per_node
        self.adapter = AudioFrameAdapter(
            SAMPLE_RATE,
            cfg.dim,
            n_mels=cfg.n_mels,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            patch=None if fpn == 1 else (cfg.n_mels, fpn),  # all mel bins x fpn frames
            transform=spec_transforms(cfg),
        )
        self.encoder = GraphTransformer(
            cfg.layers,
            cfg.dim,
            cfg.heads,
            dim_feedforward=2 * cfg.dim,
            dropout=cfg.dropout,
            activation="gelu",
        )
        self.head = nn.Linear(cfg.dim, NUM_CLASSES)
        self.time_mask = cfg.time_mask
        self.tempo = cfg.tempo
        self.centre = cfg.centre
        self.speaker_norm = cfg.speaker_norm
        self.warper = VTLP(SAMPLE_RATE, cfg.n_mels, max_warp=0.0)  # test-time warps (tta_warp)
        stats = torch.stack([torch.zeros(len(SPEAKERS), cfg.n_mels)] * 2)  # (2, speakers, M)
        self.register_buffer("speaker_stats", stats.index_fill(0, torch.tensor([1]), 1.0))

    def set_speaker_stats(self, stats: Tensor) -> None:
        """Use these per-speaker log-mel means and deviations (:func:`speaker_statistics`).

        Shapes:
            - stats: ``(2, len(SPEAKERS), M)``.
        """
        if stats.shape != self.speaker_stats.shape:
            raise ValueError(
                f"stats must have shape {tuple(self.speaker_stats.shape)}, got {tuple(stats.shape)}"
            )
        self.speaker_stats.copy_(stats)

    def _nodes(
        self,
        waves: Tensor,
        lengths: Tensor,
        speakers: Tensor | None = None,
        warp: float = 1.0,
        mix: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Frame-node features ``(B, N, D)`` and the mask of real nodes ``(B, N)`` (with
        the training-time augmentations; ``warp`` != 1: the frequency axis warped by that
        factor after the speaker normalisation, :meth:`modalities.VTLP.warp`; ``mix``:
        ``(perm, lam)``, mixup of the log-mel frames after the hook, recording ``i`` becomes
        ``lam[i] * x[i] + (1 - lam[i]) * x[perm[i]]``, its real frames the union)."""
        spec, frames = self.adapter.log_mel(waves, lengths)  # (B, M, F), (B, F)
        if self.speaker_norm != "none":  # speaker-level CMVN, before the hook
            if speakers is None:
                raise ValueError(f"speakers must be given with speaker_norm={self.speaker_norm!r}")
            spec = spec - self.speaker_stats[0, speakers][:, :, None]  # (B, M, F)
            if self.speaker_norm == "meanvar":
                spec = spec / self.speaker_stats[1, speakers][:, :, None]  # (B, M, F)
            spec = torch.where(frames[:, None, :], spec, spec.new_zeros(()))  # (B, M, F)
        if warp != 1.0:
            spec = self.warper.warp(spec, frames, spec.new_full((len(spec),), warp))  # (B, M, F)
        if self.training and self.tempo > 0:  # frames stretched
            rate = (1.0 + self.tempo) ** (2 * torch.rand(len(waves)) - 1)  # (B,) log-uniform
            spec, frames = stretch_frames(spec, frames, rate, self.adapter.frames_per_node)
        spec = self.adapter.apply_transforms(spec, frames)  # (B, M, F')
        if mix is not None:
            perm, lam = mix  # (B,), (B,)
            lam = lam.to(spec)[:, None, None]  # (B, 1, 1)
            spec = lam * spec + (1 - lam) * spec[perm]  # (B, M, F')
            frames = frames | frames[perm]  # (B, F')
        nodes = self.adapter.to_nodes(spec, frames)  # features (B, N, D), mask (B, N)
        mask = nodes.mask  # (B, N)
        x = nodes.features  # (B, N, D)
        if self.centre:
            x = x - masked_mean(x, mask)[:, None, :]  # (B, N, D)
        if self.training:
            mask = random_span_mask(mask, self.time_mask)  # (B, N)
        return x, mask

    def forward(
        self,
        waves: Tensor,
        lengths: Tensor,
        speakers: Tensor | None = None,
        warp: float = 1.0,
        mix: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Logits (``speakers``: indices into :data:`SPEAKERS`, needed with
        ``speaker_norm``; ``warp``: a frequency warp of the log-mel frames, for test-time
        augmentation; ``mix``: mixup, see :meth:`_nodes`).

        Shapes:
            - waves: ``(B, T)``; lengths, speakers: ``(B,)``; returns ``(B, K)``.
        """
        x, mask = self._nodes(waves, lengths, speakers, warp, mix)
        out = self.encoder(x, key_padding_mask=~mask)  # (B, N, D)
        return self.head(masked_mean(out, mask))  # (B, K)

    def forward_with_weights(
        self, waves: Tensor, lengths: Tensor, speakers: Tensor | None = None
    ) -> tuple[Tensor, list[AttentionWeights]]:
        """Logits and every layer's attention weights.

        Shapes:
            - logits ``(B, K)``; attentions: ``L`` x ``(B, H, N, N)``.
        """
        x, mask = self._nodes(waves, lengths, speakers)
        res = self.encoder.forward_with_weights(x, key_padding_mask=~mask)
        return self.head(masked_mean(res.out, mask)), res.attentions


# ----------------------------------------------------------------------------- training
@torch.no_grad()
def predict_proba(
    model: nn.Module, data: AudioSet, batch: int = 100, warps: Sequence[float] = (1.0,)
) -> Tensor:
    """Class probabilities ``(S, K)`` in eval mode (the model's mode is restored), averaged
    over the frequency ``warps`` (test-time augmentation; ``(1.0,)``: none)."""
    was = model.training
    model.eval()
    probs = []
    for i in range(0, len(data), batch):
        lengths = data.lengths[i : i + batch]  # (b,)
        waves = trim_batch(data.waves[i : i + batch], lengths)  # (b, T)
        speakers = data.speakers[i : i + batch]  # (b,)
        p = sum(model(waves, lengths, speakers, w).softmax(-1) for w in warps)  # (b, K)
        probs.append(p / len(warps))  # (b, K)
    model.train(was)
    return torch.cat(probs)  # (S, K)


def eval_warps(cfg: SpokenDigitsConfig, centre: float = 1.0) -> tuple[float, ...]:
    """The frequency warps averaged at test (``tta_warp``), around ``centre``."""
    t = cfg.tta_warp
    return (centre,) if not t else (centre * (1.0 - t), centre, centre * (1.0 + t))


def adapt_grid(cfg: SpokenDigitsConfig, step: float = 0.025) -> list[float]:
    """The candidate test-time warps of a new speaker (``adapt_warp``; ``[1.0]``: off)."""
    n = round(cfg.adapt_warp / step)
    return [1.0 + step * i for i in range(-n, n + 1)]


@torch.no_grad()
def ensemble_proba(
    models: Sequence[nn.Module],
    data: AudioSet,
    cfg: SpokenDigitsConfig,
    known: Sequence[int] = (),
) -> tuple[Tensor, dict[str, float]]:
    """The models' averaged probabilities ``(S, K)``, over the test-time warps
    (:func:`eval_warps`); with ``adapt_warp``, each test speaker not in ``known`` (indices
    into :data:`SPEAKERS`: the training speakers) has its frames warped by its own factor
    from :func:`adapt_grid`, the one of lowest mean prediction entropy over its recordings
    (no labels used). Returns them and the factor chosen per new speaker (``{}`` without
    ``adapt_warp``).

    Shapes:
        - data: ``S`` recordings; returns ``(S, K)``.
    """
    grid = adapt_grid(cfg) if cfg.adapt_warp else [1.0]
    if 1.0 not in grid:
        grid.append(1.0)
    probs = [  # per candidate warp: (S, K)
        sum(predict_proba(m, data, warps=eval_warps(cfg, g)) for m in models) / len(models)
        for g in grid
    ]
    if len(grid) == 1:
        return probs[0], {}
    entropy = torch.stack([-(p * p.clamp(min=1e-12).log()).sum(-1) for p in probs])  # (G, S)
    out = probs[grid.index(1.0)].clone()  # (S, K)
    chosen = {}
    for s in data.speakers.unique().tolist():
        if s in known:
            continue
        rows = data.speakers == s  # (S,)
        best = int(entropy[:, rows].mean(1).argmin())
        out[rows] = probs[best][rows]
        chosen[SPEAKERS[s]] = grid[best]
    return out, chosen


def predict(
    model: nn.Module, data: AudioSet, batch: int = 100, warps: Sequence[float] = (1.0,)
) -> Tensor:
    """Predicted digits ``(S,)`` in eval mode (the model's mode is restored)."""
    return predict_proba(model, data, batch, warps).argmax(-1)  # (S,)


def confusion(preds: Tensor, labels: Tensor) -> list[list[int]]:
    """``K x K`` counts: row = true digit, column = predicted digit."""
    table = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    table.index_put_((labels, preds), torch.ones_like(labels), accumulate=True)
    return table.tolist()


def train_model(
    name: str, seed: int, cfg: SpokenDigitsConfig, train: AudioSet, test: AudioSet
) -> tuple[SpokenDigitNet, Any]:
    """Train one model (seed ``seed``, metrics in ``out_dir/name``); returns it and the
    trainer's result (losses, steps, timing; ``test_acc`` of the model alone)."""
    seed_everything(seed)
    model = SpokenDigitNet(cfg)
    if cfg.speaker_norm != "none":
        model.set_speaker_stats(speaker_statistics(model.adapter, train, test))
    loader = BatchLoader(
        train.waves,
        train.lengths,
        train.labels,
        train.speakers,
        batch_size=cfg.batch_size,
        seed=seed,
    )
    steps = max(1, cfg.epochs * len(loader))
    warm = max(1, min(int(cfg.warmup_epochs * len(loader)), steps // 5))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(warm, steps))

    def step_fn(
        model: nn.Module, batch: tuple[Tensor, Tensor, Tensor, Tensor]
    ) -> dict[str, Tensor]:
        waves, lengths, labels, speakers = batch  # (B, T), (B,), (B,), (B,)
        waves, lengths = augment(trim_batch(waves, lengths), lengths, cfg)  # (B, T')
        if cfg.mixup <= 0:
            logits = model(waves, lengths, speakers)  # (B, K)
            loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
            return {"loss": loss, "acc": (logits.argmax(-1) == labels).float().mean()}
        beta = torch.distributions.Beta(cfg.mixup, cfg.mixup)
        lam = beta.sample((len(labels),))  # (B,)
        lam = torch.maximum(lam, 1 - lam)  # (B,) the recording itself weighs most
        perm = torch.randperm(len(labels))  # (B,)
        logits = model(waves, lengths, speakers, mix=(perm, lam))  # (B, K)
        ls = cfg.label_smoothing
        own = F.cross_entropy(logits, labels, label_smoothing=ls, reduction="none")  # (B,)
        other = F.cross_entropy(logits, labels[perm], label_smoothing=ls, reduction="none")
        loss = (lam * own + (1 - lam) * other).mean()
        return {"loss": loss, "acc": (logits.argmax(-1) == labels).float().mean()}

    def eval_fn(model: nn.Module) -> dict[str, float]:
        return {"test_acc": float((predict(model, test) == test.labels).float().mean())}

    config = TrainConfig(
        max_steps=steps,
        eval_every=0,  # once, at the end: the reported number is the last epoch's
        log_every=max(1, min(len(loader), steps // 10)),
        grad_clip=1.0,
        out_dir=Path(cfg.out_dir) / name,
        resume=False,
        progress=cfg.progress,
    )
    result = Trainer(model, opt, step_fn, loader, config, scheduler=sched, eval_fn=eval_fn).fit()
    return model, result


def train_one(
    name: str, seed: int, cfg: SpokenDigitsConfig, train: AudioSet, test: AudioSet
) -> tuple[dict[str, Any], SpokenDigitNet]:
    """Train one model, or ``cfg.ensemble`` models (seeds ``seed + 1000 k``, the first as
    a single run would be) whose probabilities are averaged, over the test-time warps
    (``cfg.tta_warp``, ``cfg.adapt_warp``: :func:`ensemble_proba`) too; returns the test
    accuracy, confusion matrix, losses (of the first model) and training time (of all), and
    the first model.

    Beside ``test_acc`` (ensemble and warps), the record keeps every model's accuracy
    alone without test-time warps (``member_acc``) and, with ``ensemble`` > 1 or
    ``tta_warp``, the ensemble's without them (``plain_acc``).
    """
    members: list[float] = []
    models, results = [], []
    for k in range(cfg.ensemble):
        member = name if k == 0 else f"{name}/member{k}"
        model, result = train_model(member, seed + 1000 * k, cfg, train, test)
        models.append(model)
        results.append(result)
        members.append(result.eval["test_acc"])
    model, result = models[0], results[0]
    wall = sum(r.elapsed_s for r in results)
    known = train.speakers.unique().tolist()
    probs, chosen = ensemble_proba(models, test, cfg, known)  # (S, K)
    losses = result.values("loss")
    preds = probs.argmax(-1)  # (S,)
    record = {
        "run": name,
        "seed": seed,
        "train_size": len(train),
        "test_size": len(test),
        "test_acc": float((preds == test.labels).float().mean()),
        "confusion": confusion(preds, test.labels),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "steps": result.step,
        "wall_s": wall,
    }
    if cfg.ensemble > 1 or cfg.tta_warp or cfg.adapt_warp:
        plain = sum(predict_proba(m, test) for m in models)  # (S, K)
        record["member_acc"] = members
        record["plain_acc"] = float((plain.argmax(-1) == test.labels).float().mean())
    if chosen:
        record["test_warps"] = chosen
    return record, model


# ----------------------------------------------------------------------------- pictures
def pick_recording(recordings: Sequence[Recording], min_samples: int = 4000) -> Recording:
    """The first recording at least ``min_samples`` long (0.5 s), else the longest."""
    for rec in recordings:
        if len(rec.waveform) >= min_samples:
            return rec
    return max(recordings, key=lambda r: len(r.waveform))


def save_attention(
    model: SpokenDigitNet, rec: Recording, cfg: SpokenDigitsConfig, out: Path
) -> dict[str, str]:
    """Pictures of what the model attends to in one recording.

    ``attention_frames.png``: the log-mel spectrogram, and under it, per node, the attention
    rollout (:func:`graphattn.explain.attention_rollout`, averaged over the target nodes, as
    the mean pool reads every node) and the last layer's attention received (mean over heads
    and targets). ``attention_last_layer.png``: the last layer's node-by-node attention map
    (:func:`graphattn.plot.plot_attention_heatmap`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    waves, lengths = pad_waveforms([rec], max_samples=cfg.max_samples)  # (1, T), (1,)
    speakers = torch.tensor([SPEAKERS.index(rec.speaker)])  # (1,)
    with torch.no_grad():
        logits, attentions = model.forward_with_weights(waves, lengths, speakers)
        rollout = attention_rollout(attentions)  # (1, N, N)
        spec, _ = model.adapter.log_mel(waves, lengths)  # (1, M, F)
        times = model.adapter(waves, lengths).positions[0]  # (N,) node centres, seconds
    relevance = rollout[0].mean(0)  # (N,) what the pooled output draws from each node
    last = attentions[-1].to_dense()[0].mean(0)  # (N, N) last layer, mean over heads
    received = last.mean(0)  # (N,)
    pred = int(logits.argmax(-1))
    n = relevance.numel()
    hop_s = cfg.hop_length / SAMPLE_RATE
    node_s = cfg.frames_per_node * hop_s
    fig, (ax_spec, ax_att) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    frames = spec[0].numpy()  # (M, F)
    start = (cfg.n_fft / 2 - cfg.hop_length / 2) / SAMPLE_RATE  # left edge of frame 0's pixel
    ax_spec.imshow(
        frames,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(start, start + frames.shape[1] * hop_s, 0, frames.shape[0]),  # frame centres
    )
    ax_spec.set_ylabel("mel bin")
    ax_spec.set_title(
        f"{rec.path.name}: log-mel frames, {n} nodes of {1000 * node_s:.0f} ms "
        f"(true {rec.digit}, predicted {pred})",
        fontsize=10,
    )
    t = times.numpy()
    ax_att.bar(t, relevance.numpy(), width=0.9 * node_s, label="attention rollout", alpha=0.7)
    ax_att.plot(t, received.numpy(), "k.-", label="last layer, received (mean)")
    ax_att.set_xlabel("time (s)")
    ax_att.set_ylabel("weight")
    ax_att.legend(fontsize=8)
    fig.tight_layout()
    paths = {"attention_frames": out / "attention_frames.png"}
    with atomic_write(paths["attention_frames"], "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    paths["attention_last_layer"] = plot_attention_heatmap(
        last,
        out / "attention_last_layer.png",
        tokens=[f"{x:.2f}" for x in t],
        title=f"{rec.path.name}: last-layer attention (mean over heads); labels: node time (s)",
    )
    return {k: str(v) for k, v in paths.items()}


def save_confusion(table: list[list[int]], path: Path, title: str) -> Path:
    """Confusion matrix picture: rows true digit, columns predicted digit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = torch.tensor(table)  # (K, K)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(counts.numpy(), cmap="Blues")
    hi = int(counts.max())
    for i in range(NUM_CLASSES):
        for j in range(NUM_CLASSES):
            c = int(counts[i, j])
            if c:
                colour = "white" if c > hi / 2 else "black"
                ax.text(j, i, str(c), ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(NUM_CLASSES))
    ax.set_yticks(range(NUM_CLASSES))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- run
def run(cfg: SpokenDigitsConfig) -> dict[str, Any]:
    """Train on the official split for every seed and once per held-out speaker; print the
    table, write the JSON and the pictures."""
    exp = Experiment("spoken_digits", cfg)
    kept = [s for s in SPEAKERS if s not in cfg.drop]
    data = load_fsdd(cfg.data_dir, limit_per_class=cfg.limit_per_class, speakers=kept)
    train_recs, test_recs = data.official_split()
    if cfg.official_val:  # takes 5-9 validate, 10-49 train: the test takes 0-4 stay unseen
        test_recs = [r for r in train_recs if r.index < 10]
        train_recs = [r for r in train_recs if r.index >= 10]
    train = to_audio_set(train_recs, cfg.max_samples)
    test = to_audio_set(test_recs, cfg.max_samples)
    params = count_params(SpokenDigitNet(cfg))
    first = None
    for seed in range(cfg.seeds):
        r, model = train_one(f"official/seed{seed}", seed, cfg, train, test)
        first = first or (model, r)
        exp.add(
            {"split": "official", **r},
            f"official seed {seed}: test acc {100 * r['test_acc']:.2f} %, loss "
            f"{r['first_loss']:.3f} -> {r['last_loss']:.3f}, {r['wall_s']:.1f} s",
        )
    for speaker in cfg.holdout:
        others, held = data.speaker_split(speaker)
        r, _ = train_one(
            f"holdout/{speaker}",
            0,
            cfg,
            to_audio_set(others, cfg.max_samples),
            to_audio_set(held, cfg.max_samples),
        )
        exp.add(
            {"split": "holdout", "speaker": speaker, **r},
            f"held-out {speaker}: test acc {100 * r['test_acc']:.2f} % ({r['test_size']} "
            f"recordings), loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}, "
            f"{r['wall_s']:.1f} s",
        )
    official_runs = [r for r in exp.runs if r["split"] == "official"]
    official = summarize(official_runs, "split")[0] if official_runs else {"seeds": 0}
    official.update(train=len(train), test=len(test))
    holdout = [r for r in exp.runs if r["split"] == "holdout"]
    holdout_mean = statistics.fmean(r["test_acc"] for r in holdout) if holdout else None
    rows = []
    if official["seeds"]:
        rows.append(
            [
                f"official split, {official['seeds']} seeds",
                len(train),
                len(test),
                pm(official["mean"], official["std"]),
                f"{official['wall_s']:.1f}",
            ]
        )
    for r in holdout:
        rows.append(
            [
                f"held-out speaker {r['speaker']}",
                r["train_size"],
                r["test_size"],
                f"{100 * r['test_acc']:.2f} %",
                f"{r['wall_s']:.1f}",
            ]
        )
    if holdout_mean is not None:
        rows.append(["held-out speakers, mean", "", "", f"{100 * holdout_mean:.2f} %", ""])
    table = format_table(["evaluation", "train", "test", "test acc", "wall s"], rows)
    pictures: dict[str, str] = {}
    if first is not None:
        model, r0 = first
        pictures.update(save_attention(model, pick_recording(test_recs), cfg, exp.out_dir))
        pictures["confusion"] = str(
            save_confusion(
                r0["confusion"],
                exp.out_dir / "confusion_matrix.png",
                f"official split, seed 0: {100 * r0['test_acc']:.1f} % of {len(test)} correct",
            )
        )
    return exp.finish(
        table,
        data=f"FSDD ({len(data)} recordings, 8 kHz): official split takes 5-49 train / "
        f"0-4 test = {len(train)} / {len(test)}; speaker hold-out trains on 5 speakers "
        "and tests on every recording of the sixth",
        goal="official split test accuracy >= 97 %",
        params=params,
        official=official,
        holdout_mean_acc=holdout_mean,
        pictures=pictures,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run(parse_config(SpokenDigitsConfig, argv, __doc__, PRESETS))


if __name__ == "__main__":
    main()

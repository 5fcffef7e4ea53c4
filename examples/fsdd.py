"""The Free Spoken Digit Dataset (FSDD) for the audio examples.

3000 recordings at 8 kHz, named ``{digit}_{speaker}_{index}.wav``: 6 speakers x 10 digits x
50 takes. The official split puts takes 0-4 of every speaker and digit in the test set (300
recordings) and takes 5-49 in the training set (2700).

Used by ``examples.spoken_digits`` and ``examples.cross_modal_digits``; the folder comes from
:func:`examples.training.ensure_dataset` (``--data-dir``, ``$GRAPHATTN_DATA``,
``../shared/data``, the user cache; ``download=True`` fetches it from GitHub).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from examples.training import ensure_dataset
from modalities import load_wav

__all__ = ["SAMPLE_RATE", "Recording", "FSDD", "load_fsdd", "pad_waveforms"]

SAMPLE_RATE = 8000  # every FSDD recording is 8 kHz mono
_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


@dataclass(frozen=True)
class Recording:
    """One recording: its waveform ``(T,)`` float32 in [-1, 1) and what it says."""

    waveform: Tensor  # (T,)
    digit: int  # 0..9
    speaker: str  # e.g. "jackson"
    index: int  # take number 0..49; 0-4 are the official test set
    path: Path


@dataclass(frozen=True)
class FSDD:
    """All recordings of a folder, with the official split and speaker hold-outs."""

    recordings: tuple[Recording, ...]

    def __len__(self) -> int:
        return len(self.recordings)

    @property
    def speakers(self) -> list[str]:
        """Sorted speaker names."""
        return sorted({r.speaker for r in self.recordings})

    def official_split(self) -> tuple[list[Recording], list[Recording]]:
        """``(train, test)``: takes 5-49 train, takes 0-4 test (the dataset's README)."""
        train = [r for r in self.recordings if r.index >= 5]
        test = [r for r in self.recordings if r.index < 5]
        return train, test

    def speaker_split(self, speaker: str) -> tuple[list[Recording], list[Recording]]:
        """``(others, held_out)``: every recording of ``speaker`` is held out."""
        if speaker not in self.speakers:
            raise ValueError(f"speaker={speaker!r} is not in the data set; known: {self.speakers}")
        others = [r for r in self.recordings if r.speaker != speaker]
        held = [r for r in self.recordings if r.speaker == speaker]
        return others, held


def load_fsdd(
    data_dir: str | Path | None = None,
    *,
    download: bool = False,
    limit_per_class: int | None = None,
    speakers: Sequence[str] | None = None,
) -> FSDD:
    """Read every FSDD recording into memory (about 30 MB as float32).

    Args:
        data_dir: the data folder holding ``fsdd/recordings`` (``None``: resolved as in
            :func:`examples.training.resolve_data_dir`).
        download: fetch the data set when it is missing (needs internet).
        limit_per_class: keep at most this many train and this many test takes per
            (speaker, digit), the lowest take numbers of each side (smoke tests).
        speakers: keep only these speakers.

    Returns:
        An :class:`FSDD`, recordings sorted by (speaker, digit, index).

    Raises:
        FileNotFoundError: the folder is missing and ``download`` is False.
        ValueError: a file does not follow the ``{digit}_{speaker}_{index}.wav`` naming, is
            not 8 kHz, or the selection is empty.
    """
    if limit_per_class is not None and limit_per_class < 1:
        raise ValueError(f"limit_per_class must be >= 1 or None, got {limit_per_class}")
    root = ensure_dataset("fsdd", data_dir, download=download) / "recordings"
    wanted = None if speakers is None else set(speakers)
    items: list[tuple[str, int, int, Path]] = []
    for path in root.glob("*.wav"):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"unexpected file name {path.name!r} in {root}")
        digit, speaker, index = int(match[1]), match[2], int(match[3])
        if wanted is not None and speaker not in wanted:
            continue
        if limit_per_class is not None:
            test_side = index < 5
            rank = index if test_side else index - 5
            if rank >= limit_per_class:
                continue
        items.append((speaker, digit, index, path))
    if not items:
        raise ValueError(f"no recordings selected under {root} (speakers={speakers})")
    items.sort()
    recordings = []
    for speaker, digit, index, path in items:
        waveform, rate = load_wav(path)  # (C, T)
        if rate != SAMPLE_RATE:
            raise ValueError(f"{path} has sample rate {rate}, expected {SAMPLE_RATE}")
        recordings.append(Recording(waveform.mean(0), digit, speaker, index, path))
    return FSDD(tuple(recordings))


def pad_waveforms(
    recordings: Sequence[Recording], max_samples: int | None = None
) -> tuple[Tensor, Tensor]:
    """Stack waveforms into a zero-padded batch.

    Args:
        recordings: the recordings to batch.
        max_samples: cut every waveform to at most this many samples (``None``: the longest).

    Returns:
        ``(waveforms, lengths)``: ``(B, T)`` float32 and ``(B,)`` long sample counts.
    """
    if not recordings:
        raise ValueError("recordings is empty")
    lengths = torch.tensor([len(r.waveform) for r in recordings], dtype=torch.long)  # (B,)
    if max_samples is not None:
        lengths = lengths.clamp(max=max_samples)
    out = torch.zeros(len(recordings), int(lengths.max()))  # (B, T)
    for i, r in enumerate(recordings):
        out[i, : lengths[i]] = r.waveform[: lengths[i]]
    return out, lengths

"""``examples.fsdd``: the FSDD reader and its official and speaker splits, on the real files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from examples.fsdd import SAMPLE_RATE, load_fsdd, pad_waveforms

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.skipif(
    not (DATA / "fsdd" / "recordings").is_dir(), reason=f"FSDD not found under {DATA}"
)


def test_official_split_takes_0_to_4_as_test() -> None:
    data = load_fsdd(DATA, limit_per_class=2)
    assert len(data) == 6 * 10 * 4  # 6 speakers x 10 digits x (2 train + 2 test takes)
    train, test = data.official_split()
    assert {r.index for r in test} == {0, 1} and {r.index for r in train} == {5, 6}
    assert all(r.waveform.dtype == torch.float32 and r.waveform.dim() == 1 for r in data.recordings)
    assert SAMPLE_RATE == 8000


def test_speaker_split_and_padding() -> None:
    data = load_fsdd(DATA, limit_per_class=1, speakers=["jackson", "theo"])
    others, held = data.speaker_split("theo")
    assert {r.speaker for r in held} == {"theo"} and {r.speaker for r in others} == {"jackson"}
    with pytest.raises(ValueError, match="speaker='nobody'"):
        data.speaker_split("nobody")
    waves, lengths = pad_waveforms(held[:3], max_samples=2000)
    assert waves.shape == (3, int(lengths.max())) and int(lengths.max()) <= 2000
    for i, r in enumerate(held[:3]):
        n = int(lengths[i])
        assert torch.equal(waves[i, :n], r.waveform[:n]) and not waves[i, n:].any()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="limit_per_class"):
        load_fsdd(DATA, limit_per_class=0)
    with pytest.raises(ValueError, match="no recordings"):
        load_fsdd(DATA, speakers=["nobody"])
    with pytest.raises(FileNotFoundError, match="fsdd"):
        load_fsdd(DATA / "missing")

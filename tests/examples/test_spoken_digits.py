"""Smoke test of ``examples.spoken_digits``: a few steps on a slice of the real FSDD."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("matplotlib")

from examples.spoken_digits import (  # noqa: E402
    SpokenDigitsConfig,
    augment,
    random_span_mask,
    run,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.skipif(
    not (DATA / "fsdd" / "recordings").is_dir(), reason=f"FSDD not found under {DATA}"
)


@pytest.mark.usefixtures("one_thread")
def test_spoken_digits_trains_and_writes(tmp_path: Path) -> None:
    cfg = SpokenDigitsConfig(
        seeds=1,
        holdout=("theo",),
        epochs=6,
        dim=32,
        layers=2,
        batch_size=32,
        limit_per_class=1,  # 1 train + 1 test take per (speaker, digit): 60 + 60 recordings
        data_dir=str(DATA),
        out_dir=str(tmp_path / "runs"),
        results=str(tmp_path / "spoken_digits.json"),
        progress=False,
        threads=1,  # small tensors: one thread is fastest
    )
    result = run(cfg)
    assert result["official"]["train"] == 60 and result["official"]["test"] == 60
    for r in result["runs"]:
        assert r["last_loss"] < r["first_loss"], r
        assert 0.0 <= r["test_acc"] <= 1.0
        assert sum(map(sum, r["confusion"])) == r["test_size"]
    (held,) = [r for r in result["runs"] if r["split"] == "holdout"]
    assert held["speaker"] == "theo" and held["test_size"] == 20 and held["train_size"] == 100
    saved = json.loads((tmp_path / "spoken_digits.json").read_text())
    assert saved["official"]["seeds"] == 1
    for name in ("attention_frames", "attention_last_layer", "confusion_matrix"):
        png = tmp_path / "runs" / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 0


def test_augment_keeps_lengths_consistent() -> None:
    torch.manual_seed(0)
    waves = torch.zeros(3, 1000)
    lengths = torch.tensor([1000, 600, 300])
    for i, n in enumerate(lengths.tolist()):
        waves[i, :n] = 0.5
    cfg = SpokenDigitsConfig(max_delay_ms=10.0, noise=0.0, gain_db=0.0)
    out, new = augment(waves, lengths, cfg)
    delay = new - lengths  # (3,)
    assert out.shape == (3, int(new.max())) and bool((delay >= 0).all())
    assert bool((delay <= 80).all())  # 10 ms at 8 kHz
    for i in range(3):
        d, n = int(delay[i]), int(lengths[i])
        assert torch.equal(out[i, d : d + n], waves[i, :n])
        assert not out[i, :d].any() and not out[i, d + n :].any()


def test_random_span_mask_keeps_a_real_node() -> None:
    torch.manual_seed(0)
    mask = torch.zeros(64, 10, dtype=torch.bool)
    mask[:, :5] = True
    mask[0, :1] = True
    hidden = random_span_mask(mask, 0.9)
    assert bool((hidden <= mask).all())  # never unmasks padding
    assert bool((hidden.sum(1) >= 1).all())
    assert torch.equal(random_span_mask(mask, 0.0), mask)

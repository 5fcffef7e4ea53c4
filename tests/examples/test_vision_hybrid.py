"""Smoke test of ``examples.vision_hybrid``: a few steps on a slice of the real digits."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from examples.vision_hybrid import VisionConfig, run  # noqa: E402


@pytest.mark.usefixtures("one_thread")
def test_vision_hybrid_trains_and_writes(tmp_path):
    cfg = VisionConfig(
        seeds=1,
        epochs=6,
        batch_size=32,
        train_limit=128,
        test_limit=64,
        out_dir=str(tmp_path / "runs"),
        results=str(tmp_path / "vision_hybrid.json"),
        progress=False,
        threads=1,  # small tensors: one thread is fastest
    )
    result = run(cfg)
    assert [r["model"] for r in result["summary"]] == ["hybrid", "cnn", "vit"]
    for r in result["runs"]:
        assert r["last_loss"] < r["first_loss"], r
        assert 0.0 <= r["test_acc"] <= 1.0
    saved = json.loads((tmp_path / "vision_hybrid.json").read_text())
    assert saved["summary"][0]["seeds"] == 1
    png = tmp_path / "runs" / "attention_rollout.png"
    assert png.is_file() and png.stat().st_size > 0

"""Smoke test of ``examples.why_attention``: tiny lengths, a few steps, a small cost sweep."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("matplotlib")

from examples.why_attention import WhyAttentionConfig, run  # noqa: E402


@pytest.mark.usefixtures("one_thread")
def test_why_attention_trains_measures_and_writes(tmp_path):
    cfg = WhyAttentionConfig(
        lengths=(8, 16),
        epochs=4,
        epoch_sequences=128,  # 4 steps per epoch: 16 steps per run
        test_sequences=128,
        cost_min_n=64,
        cost_max_n=256,
        point_budget_s=0.5,
        memory="inprocess",  # a fresh process per point costs seconds of imports
        softmax_nodes=64,
        gap_step=0.05,
        out_dir=str(tmp_path / "runs"),
        results=str(tmp_path / "why_attention.json"),
        progress=False,
        threads=1,
    )
    result = run(cfg)
    recall = result["recall"]
    assert abs(recall["param_ratio_gru_over_attention"] - 1) < 0.1
    for r in recall["runs"]:
        assert 0.0 <= r["test_acc"] <= 1.0 and r["median_epoch_s"] > 0
        if r["model"] == "attention":
            assert r["last_loss"] < r["first_loss"], r
    for length, soft in recall["trained_attention_softness"].items():
        assert soft["min_edge_weight"] > 0, length  # soft attention: no edge gets exactly 0
    for name, v in result["cost"]["variants"].items():
        assert [p["n"] for p in v["points"]] == [64, 128, 256], name
        assert v["time_slope"] is not None and math.isfinite(v["time_slope"]), name
        assert v["memory_slope"] is not None and math.isfinite(v["memory_slope"]), name
    fp32 = [s for s in result["softmax"]["sweep"] if s["dtype"] == "float32"]
    for s in fp32:  # exp underflows past the smallest subnormal: g ~ 104 in float32
        assert s["first_zero_gap"] == pytest.approx(s["predicted_zero_gap"], abs=0.1)
    saved = json.loads((tmp_path / "why_attention.json").read_text())
    assert saved["table"] == result["table"]
    for name in ("recall_accuracy", "epoch_time", "quadratic_cost", "softmax_underflow"):
        png = tmp_path / "runs" / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 0, name

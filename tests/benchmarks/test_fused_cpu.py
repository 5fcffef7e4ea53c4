"""Smoke test of ``benchmarks.bench_fused_cpu``: the quick run writes every row."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_fused_cpu
from graphattn.backends.fused import fused_extension


def test_quick_run_writes_rows_against_the_bound(tmp_path) -> None:
    ext, why = fused_extension()
    if ext is None:
        pytest.skip(f"the fused C++ kernel is not available here: {why}")
    out = tmp_path / "fused.json"
    bench_fused_cpu.main(["--quick", "--scores", "dot", "gat", "--out", str(out)])
    res = json.loads(out.read_text())
    rows = res["rows"]
    # uniform and power-law graphs x 2 scores x (fwd, fwd+bwd) x (fused, edges)
    assert len(rows) == 16
    assert all(r["x_bound"] > 0 and r["bound_ms"] > 0 for r in rows)
    assert all(r["x_uniform"] > 0 for r in rows if r["graph"] == "power-law")
    assert all(r["fused_4k_ms"] > 0 for r in rows if r["backend"] == "fused")
    assert "huge_page_threshold_bytes" in res
    assert len(res["small_rows"]) == 2 * 2 * 2  # 2 sizes x 2 scores x 2 dropout rates
    assert res["copy_bandwidth_bytes_s"] > 0

"""Smoke test of ``benchmarks.bench_node_limits``: the quick run measures every limit and
writes every row with its bound."""

from __future__ import annotations

import json
import math

from benchmarks import bench_node_limits


def test_quick_run_writes_every_path_against_its_limit(tmp_path) -> None:
    out = tmp_path / "limits.json"
    bench_node_limits.main(["--quick", "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["layers"] == 8 and res["num_nodes"] == 400
    assert all(v > 0 and math.isfinite(v) for v in res["limits"].values())
    paths = [r["path"] for r in res["rows"]]
    assert paths == [
        "gcnii step", "8 x gemm", "8 x spmm", "9 x mask_dropout", "9 x F.dropout",
        "spd lookup", "shortest_path_distance", "  to the diameter", "random_walk_pe",
    ]  # fmt: skip
    rows = {r["path"]: r for r in res["rows"]}
    for r in res["rows"]:
        assert r["median_ms"] > 0 and r["bound_ms"] > 0
        assert r["x_bound"] == r["median_ms"] / r["bound_ms"]
    parts = ("8 x gemm", "8 x spmm", "9 x mask_dropout")
    assert math.isclose(rows["gcnii step"]["bound_ms"], sum(rows[p]["bound_ms"] for p in parts))
    assert 1 <= rows["shortest_path_distance"]["products"] <= 5
    assert rows["  to the diameter"]["products"] >= rows["shortest_path_distance"]["products"]

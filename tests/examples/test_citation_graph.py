"""Smoke test of ``examples.citation_graph``: a few epochs on the real Cora."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch_geometric")
pytest.importorskip("scipy")  # Planetoid reads the raw files with scipy

from examples.citation_graph import CitationConfig, run  # noqa: E402
from graphattn.training import ensure_dataset  # noqa: E402


def _cora_dir():
    try:
        return ensure_dataset("cora")
    except FileNotFoundError as err:
        pytest.skip(f"Cora not found (tests never download): {err}")


@pytest.mark.usefixtures("one_thread")
def test_citation_graph_trains_and_writes(tmp_path):
    data_dir = _cora_dir().parent
    cfg = CitationConfig(
        seeds=1,
        complete_seeds=1,
        max_epochs=10,
        complete_max_epochs=1,
        data_dir=str(data_dir),
        cache_dir=str(tmp_path / "cache"),
        results_path=str(tmp_path / "citation_graph.json"),
        threads=1,  # small graph: one thread is fastest
    )
    result = run(cfg)
    gat, complete = result["runs"]
    assert gat["variant"] == "gat" and complete["variant"] == "complete"
    assert gat["last_loss"] < gat["first_loss"], gat
    assert complete["steps"] == 1
    saved = json.loads((tmp_path / "citation_graph.json").read_text())
    assert [r["variant"] for r in saved["summary"]] == ["gat", "complete"]
    assert (tmp_path / "cache" / "planetoid" / "Cora" / "processed").is_dir()

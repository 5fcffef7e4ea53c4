"""Smoke test of ``examples.citation_graph``: a few epochs on the real Cora."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("torch_geometric")
pytest.importorskip("scipy")  # Planetoid reads the raw files with scipy

from examples.citation_graph import (  # noqa: E402
    PRESETS,
    VARIANTS,
    CitationConfig,
    main,
    run,
    sparse_dropout,
)
from examples.harness import parse_config  # noqa: E402
from examples.training import ensure_dataset  # noqa: E402


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
        max_epochs=8,
        complete_max_epochs=1,
        data_dir=str(data_dir),
        out_dir=str(tmp_path / "cache"),
        results=str(tmp_path / "citation_graph.json"),
        threads=1,  # small graph: one thread is fastest
    )
    result = run(cfg)
    runs = {r["variant"]: r for r in result["runs"]}
    assert [r["variant"] for r in result["runs"]] == list(VARIANTS)
    assert VARIANTS == ("dot", "gat", "gatv2", "complete")
    for v in ("dot", "gat", "gatv2"):
        r = runs[v]
        assert r["steps"] == 8, r
        assert r["last_loss"] < r["first_loss"], r
        assert r["epoch_ms"] > 0, r
    assert runs["gat"]["params"] == 92_373  # PyG's GAT on Cora
    assert runs["complete"]["steps"] == 1
    saved = json.loads((tmp_path / "citation_graph.json").read_text())
    assert saved["complete"] is True
    assert [r["variant"] for r in saved["summary"]] == list(VARIANTS)
    assert "epoch ms" in saved["table"].splitlines()[0]
    assert (tmp_path / "cache" / "planetoid" / "Cora" / "processed").is_dir()


@pytest.mark.usefixtures("one_thread")
def test_citation_graph_subset_keeps_only_its_variants(tmp_path):
    """A run of some variants (any order) writes rows for those only, in VARIANTS' order."""
    data_dir = _cora_dir().parent
    results = tmp_path / "citation_graph.json"
    main(
        [
            "--variants", "gatv2", "gat", "gatv2",
            "--seeds", "1",
            "--threads", "1",
            "--data-dir", str(data_dir),
            "--out-dir", str(tmp_path / "cache"),
            "--results", str(results),
            "--quick",
        ]
    )  # fmt: skip
    saved = json.loads(results.read_text())
    assert [r["variant"] for r in saved["runs"]] == ["gatv2", "gat"]
    assert [r["variant"] for r in saved["summary"]] == ["gat", "gatv2"]
    assert saved["runs"][0]["steps"] == 20  # --quick
    assert "dot" not in saved["table"] and "complete" not in saved["table"]


def test_command_line_defaults_and_quick():
    cfg = parse_config(CitationConfig, [], None, PRESETS)
    assert cfg.variants == VARIANTS and cfg.seeds == 10 and cfg.complete_seeds == 1
    quick = parse_config(CitationConfig, ["--quick", "--variants", "gat"], None, PRESETS)
    assert (quick.seeds, quick.max_epochs, quick.variants) == (1, 20, ("gat",))
    assert quick.results is None  # a check writes into out_dir, never examples/results


def test_sparse_dropout_matches_dense_dropout_on_the_nonzeros():
    x = torch.zeros(6, 5)
    x[0, 1], x[2, 3], x[5, 0], x[5, 4] = 1.0, 2.0, 3.0, 4.0
    csr = x.to_sparse_csr()
    assert sparse_dropout(csr, 0.5, training=False) is csr
    torch.manual_seed(0)
    out = sparse_dropout(csr, 0.5, training=True)
    assert out.layout == torch.sparse_csr
    dense = out.to_dense()
    assert torch.equal(dense[x == 0], torch.zeros(int((x == 0).sum())))
    kept = dense[x != 0]
    assert torch.all((kept == 0) | (kept == 2 * x[x != 0]))
    # the same random stream as F.dropout on the stored values
    torch.manual_seed(0)
    assert torch.equal(out.values(), F.dropout(csr.values(), 0.5, True))

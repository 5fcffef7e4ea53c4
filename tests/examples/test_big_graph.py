"""examples.big_graph: random node partitions with local + linear global attention, in one
process and under torchrun with 2 processes (DDP keeps the replicas identical)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from examples import big_graph

REPO = Path(__file__).resolve().parents[2]


def test_one_process_learns_the_blocks():
    cfg = big_graph.Config(nodes=4000, parts=4, epochs=4, threads=1)
    res = big_graph.run(cfg)
    losses = [e["loss"] for e in res["epochs"]]
    assert losses[-1] < losses[0]
    assert res["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert res["edges"] == 4000 * 16


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo")
def test_torchrun_two_processes_train_on_partitions_in_step(tmp_path, torchrun):
    torchrun(
        "examples.big_graph",
        *("--nodes", "4000", "--parts", "4", "--epochs", "2", "--threads", "1"),
        *("--results", str(tmp_path / "rank{rank}.json")),
    )
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert all(r["world_size"] == 2 for r in results)
    # the same weights on both ranks after every step (DDP averages the gradients)
    assert results[0]["param_checksum"] == results[1]["param_checksum"]
    assert results[0]["test_accuracy"] == results[1]["test_accuracy"] > 0.3

"""Random node partitions: every node in exactly one part, exactly the edges inside a part,
renumbered consistently, redrawn per epoch, split across ranks."""

from __future__ import annotations

import pytest
import torch

from graphattn import NodePartitions


def _graph(n=200, e=1500, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (2, e), generator=gen), n


def test_parts_cover_the_nodes_and_keep_exactly_the_inner_edges():
    ei, n = _graph()
    parts = list(NodePartitions(ei, n, num_parts=7, seed=3))
    assert len(parts) == 7
    nodes = torch.cat([b.nodes for b in parts])
    assert torch.equal(nodes.sort().values, torch.arange(n))
    sizes = [len(b.nodes) for b in parts]
    assert max(sizes) - min(sizes) <= 1
    part_of = torch.empty(n, dtype=torch.long)
    for b in parts:
        part_of[b.nodes] = b.part
    expected = {tuple(x) for x in ei.t().tolist() if part_of[x[0]] == part_of[x[1]]}
    expected_count = sum(1 for x in ei.t().tolist() if part_of[x[0]] == part_of[x[1]])
    got = []
    for b in parts:
        assert b.edge_index.max() < len(b.nodes) if b.edge_index.numel() else True
        got += [tuple(x) for x in b.nodes[b.edge_index].t().tolist()]  # back to global ids
    assert len(got) == expected_count and set(got) == expected


def test_each_epoch_draws_a_new_partition_and_ranks_split_it():
    ei, n = _graph()
    parts = NodePartitions(ei, n, num_parts=4, seed=0)
    first = [b.nodes for b in parts]
    parts.set_epoch(1)
    assert not torch.equal(first[0], next(iter(parts)).nodes)
    ranks = [NodePartitions(ei, n, num_parts=4, seed=0, rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(1)
    seen = [b.part for r in ranks for b in r]
    assert sorted(seen) == [0, 1, 2, 3] and len(ranks[0]) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_parts": 0}, "num_parts must be a positive int, got 0"),
        ({"num_parts": 500}, r"num_parts \(500\) must not exceed num_nodes \(200\)"),
        ({"num_parts": 3, "world_size": 2}, "multiple of world_size"),
        ({"num_parts": 4, "world_size": 2, "rank": 2}, r"rank must lie in \[0, world_size=2\)"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    ei, n = _graph()
    with pytest.raises(ValueError, match=match):
        NodePartitions(ei, n, **kwargs)

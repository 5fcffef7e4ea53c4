"""Mini-batches of sampled neighbourhoods, as PyG users train big graphs.

PyG's ``NeighborLoader`` needs pyg-lib or torch-sparse; graphattn never depends on either
(its own :class:`graphattn.NodePartitions` is pure torch). Where one is installed, the
layers must give PyG's numbers on the loader's batches; the same check runs everywhere on
a k-hop subgraph cut with ``torch_geometric.utils.k_hop_subgraph`` (pure torch), which is
the kind of batch the loader yields: a relabelled subgraph whose first nodes are the seeds.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import GATConv as PyGGATConv
from torch_geometric.nn import TransformerConv as PyGTransformerConv
from torch_geometric.utils import k_hop_subgraph

from graphattn import from_pyg

N, F_IN, CLASSES = 300, 16, 3
_SAMPLER = any(importlib.util.find_spec(m) is not None for m in ("pyg_lib", "torch_sparse"))
needs_sampler = pytest.mark.skipif(
    not _SAMPLER,
    reason="PyG's NeighborLoader needs pyg-lib or torch-sparse, and neither is installed "
    "(the k-hop subgraph tests cover the same batches without them)",
)


@pytest.fixture
def data() -> Data:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, F_IN, generator=g)
    edge_index = torch.randint(0, N, (2, 8 * N), generator=g)
    y = torch.randint(0, CLASSES, (N,), generator=g)
    return Data(x=x, edge_index=edge_index, y=y)


def _pyg_layers() -> list[nn.Module]:
    torch.manual_seed(0)
    return [PyGGATConv(F_IN, 8, heads=2), PyGTransformerConv(F_IN, 8, heads=2)]


def _seed_batch(data: Data, seeds: torch.Tensor, hops: int) -> Data:
    """A NeighborLoader-like batch: the ``hops``-hop in-neighbourhood of ``seeds``, relabelled,
    seeds first (``batch_size`` of them)."""
    subset, edge_index, mapping, _ = k_hop_subgraph(
        seeds, hops, data.edge_index, relabel_nodes=True, num_nodes=data.num_nodes
    )
    rest = torch.ones(subset.numel(), dtype=torch.bool)
    rest[mapping] = False
    order = torch.cat([mapping, rest.nonzero()[:, 0]])  # new position -> subgraph id
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())  # subgraph id -> new position
    return Data(
        x=data.x[subset[order]],
        edge_index=rank[edge_index],
        y=data.y[subset[order]],
        batch_size=seeds.numel(),
    )


@pytest.mark.parametrize("index", range(2))
def test_layers_give_pygs_numbers_on_a_k_hop_batch(data, index):
    pyg = _pyg_layers()[index].eval()
    ours = from_pyg(pyg).eval()
    batch = _seed_batch(data, torch.arange(0, 40, 3), hops=2)
    bs = batch.batch_size
    ref = pyg(batch.x, batch.edge_index)[:bs]
    torch.testing.assert_close(ours(batch.x, batch.edge_index)[:bs], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours(batch)[:bs], ref, rtol=1e-5, atol=1e-6)  # PyG's Data call


@needs_sampler
@pytest.mark.parametrize("index", range(2))
def test_layers_give_pygs_numbers_on_neighbor_loader_batches(data, index):
    from torch_geometric.loader import NeighborLoader

    pyg = _pyg_layers()[index].eval()
    ours = from_pyg(pyg).eval()
    loader = NeighborLoader(data, num_neighbors=[8, 8], batch_size=32, shuffle=False)
    for batch in loader:
        bs = batch.batch_size
        ref = pyg(batch.x, batch.edge_index)[:bs]
        out = ours(batch.x, batch.edge_index)[:bs]
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@needs_sampler
def test_a_two_layer_gat_trains_on_neighbor_loader_batches(data):
    from torch_geometric.loader import NeighborLoader

    from graphattn import GATConv

    torch.manual_seed(0)
    layers = nn.ModuleList([GATConv(F_IN, 8, heads=4), GATConv(32, CLASSES, heads=1)])
    opt = torch.optim.Adam(layers.parameters(), lr=0.01)
    loader = NeighborLoader(data, num_neighbors=[10, 10], batch_size=64, shuffle=True)
    losses = []
    for _ in range(15):
        for batch in loader:
            h = F.elu(layers[0](batch.x, batch.edge_index))
            logits = layers[1](h, batch.edge_index)[: batch.batch_size]
            loss = F.cross_entropy(logits, batch.y[: batch.batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5  # it learns (random labels: memorises)

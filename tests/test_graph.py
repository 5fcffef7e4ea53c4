"""Graph kinds: edge counts, PyG edge-list convention, padding, devices, validation."""

from __future__ import annotations

import pytest
import torch
from conftest import edge_counts
from torch_geometric.data import Batch, Data

from graphattn import EdgeListGraph, Graph


def _complete_pyg(n: int) -> Data:
    idx = torch.arange(n)
    src = idx.repeat(n)
    dst = idx.repeat_interleave(n)
    return Data(edge_index=torch.stack([src, dst]), num_nodes=n)


GRAPHS = {
    "complete": lambda: Graph.complete(5),
    "complete_bipartite": lambda: Graph.complete(3, 6),
    "complete_empty_src": lambda: Graph.complete(3, 0),
    "causal": lambda: Graph.causal(6),
    "window_sym": lambda: Graph.window(7, 2),
    "window_causal": lambda: Graph.window(7, 2, causal=True),
    "window_wide": lambda: Graph.window(4, 10),
    "window_zero": lambda: Graph.window(5, 0),
    "grid": lambda: Graph.grid(3, 4),
    "grid_r2": lambda: Graph.grid(4, 3, radius=2),
    "edge_list": lambda: Graph.from_edge_index(torch.tensor([[0, 2, 1, 3], [1, 1, 0, 3]])),
    "edge_list_bipartite": lambda: Graph.from_edge_index(
        torch.tensor([[0, 4, 2], [1, 0, 1]]), num_dst=2, num_src=5
    ),
    "edge_list_empty": lambda: Graph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 3),
    "pyg_data": lambda: Graph.from_pyg(
        Data(edge_index=torch.tensor([[0, 1, 2, 2], [1, 2, 0, 3]]), num_nodes=5)
    ),
    "pyg_batch": lambda: Graph.from_pyg(
        Batch.from_data_list([_complete_pyg(2), _complete_pyg(3), _complete_pyg(1)])
    ),
}


def _expected_mask(name: str, g: Graph) -> torch.Tensor:
    """Each kind's mask built from its definition, independently of the library."""
    nd, ns = g.num_dst, g.num_src
    i = torch.arange(nd)[:, None]
    j = torch.arange(ns)[None, :]
    if name.startswith("complete"):
        return torch.ones(nd, ns, dtype=torch.bool)
    if name == "causal":
        return j <= i
    if name.startswith("window"):
        r = g.radius
        return ((i - j) >= 0) & ((i - j) <= r) if g.causal else (i - j).abs() <= r
    if name.startswith("grid"):
        w = g.width
        return ((i // w - j // w).abs() <= g.radius) & ((i % w - j % w).abs() <= g.radius)
    ei = g.edge_index()
    return edge_counts(ei, nd, ns) > 0


@pytest.mark.parametrize("name", list(GRAPHS))
def test_num_edges_matches_mask_and_edge_index(name):
    g = GRAPHS[name]()
    ei = g.edge_index()
    assert ei.dtype == torch.long and ei.shape == (2, g.num_edges)
    assert int(g.materialize().sum()) == g.num_edges  # these kinds have no duplicates
    assert g.materialize().shape == (g.num_dst, g.num_src)
    assert g.in_degree().sum() == g.num_edges


@pytest.mark.parametrize("name", list(GRAPHS))
def test_edge_index_is_pyg_convention(name):
    """Row 0 holds sources (columns of the mask), row 1 targets (rows of the mask)."""
    g = GRAPHS[name]()
    mask = g.materialize()
    assert torch.equal(mask, _expected_mask(name, g))
    src, dst = g.edge_index()
    rebuilt = torch.zeros(g.num_dst, g.num_src, dtype=torch.bool)
    rebuilt[dst, src] = True
    assert torch.equal(rebuilt, mask)
    assert torch.equal(edge_counts(g.edge_index(), g.num_dst, g.num_src), mask.long())


def test_edge_index_direction_is_not_transposed():
    """Causal: target 2 receives from 0, 1, 2, so edge (src=0, dst=2) exists, not (2, 0)."""
    edges = set(map(tuple, Graph.causal(3).edge_index().t().tolist()))
    assert (0, 2) in edges and (2, 0) not in edges


def test_edge_structure_sorted_by_target():
    ei = torch.tensor([[0, 1, 2, 0, 3], [3, 0, 3, 1, 0]])
    g = Graph.from_edge_index(ei, 4)
    st = g.edge_structure()
    assert torch.equal(st.ptr, torch.tensor([0, 2, 3, 3, 5]))
    assert torch.equal(st.src, ei[0][st.perm]) and torch.equal(st.dst, ei[1][st.perm])
    assert st.num_dst == g.num_dst and st.num_src == g.num_src
    assert torch.equal(g.in_degree(), torch.tensor([2, 1, 0, 2]))


def test_duplicates_counted_in_num_edges():
    ei = torch.tensor([[0, 0, 1], [1, 1, 1]])
    g = Graph.from_edge_index(ei, 2)
    assert g.num_edges == 3 and g.edge_index().shape == (2, 3)
    assert int(g.materialize().sum()) == 2
    assert g.has_duplicates() and not g.is_complete
    assert torch.equal(g.edge_counts(), torch.tensor([[0, 0], [2, 1]]))


@pytest.mark.parametrize(
    ("ei", "num_dst", "num_src", "expected"),
    [
        (torch.tensor([[0, 4], [1, 0]]), None, None, (5, 5)),
        (torch.tensor([[0, 4], [1, 0]]), 3, 6, (3, 6)),
        (torch.tensor([[0, 1], [1, 0]]), 4, None, (4, 4)),
        (torch.zeros(2, 0, dtype=torch.long), None, None, (0, 0)),
    ],
)
def test_from_edge_index_sizes(ei, num_dst, num_src, expected):
    g = Graph.from_edge_index(ei, num_dst, num_src)
    assert (g.num_dst, g.num_src) == expected


def test_from_pyg_batch_sizes():
    batch = Batch.from_data_list([_complete_pyg(2), _complete_pyg(3)])
    g = Graph.from_pyg(batch)
    assert isinstance(g, EdgeListGraph)
    assert (g.num_dst, g.num_src, g.num_edges) == (5, 5, 13)


def test_from_pyg_without_edge_index():
    with pytest.raises(ValueError, match="edge_index"):
        Graph.from_pyg(object())


# ---------------------------------------------------------------------- padding


@pytest.mark.parametrize("name", ["complete", "causal", "window_sym", "grid", "edge_list"])
def test_pad_lengths_equals_key_padding_mask(name):
    g = GRAPHS[name]()
    n = g.num_src
    lengths = [n, 2, 0]
    kpm = torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]  # (B, Ns)
    by_len = g.pad(lengths=lengths).materialize()
    by_mask = g.pad(key_padding_mask=kpm).materialize()
    assert by_len.shape == (3, g.num_dst, n)
    assert torch.equal(by_len, by_mask)
    assert torch.equal(by_len, g.materialize()[None] & ~kpm[:, None, :])
    assert not by_len[2].any()
    assert g.key_padding_mask is None  # pad() returns a copy
    assert g.pad(lengths=lengths).unpadded().key_padding_mask is None


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"lengths": [1, 6]}, ValueError, r"num_src=5.*\[1, 6\]"),
        ({"lengths": [-1]}, ValueError, r"\[-1\]"),
        ({"lengths": [[1, 2]]}, ValueError, r"lengths.*\(1, 2\)"),
        ({"lengths": [1.5]}, ValueError, r"lengths.*float"),
        ({}, ValueError, "exactly one"),
        (
            {"lengths": [1], "key_padding_mask": torch.zeros(1, 5, dtype=torch.bool)},
            ValueError,
            "exactly one",
        ),
        ({"key_padding_mask": torch.zeros(1, 5)}, TypeError, r"key_padding_mask.*float"),
        ({"key_padding_mask": torch.zeros(1, 4, dtype=torch.bool)}, ValueError, r"\(1, 4\)"),
    ],
)
def test_pad_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Graph.complete(5).pad(**kwargs)


# ---------------------------------------------------------------------- devices


@pytest.mark.parametrize("name", list(GRAPHS))
def test_to_cpu(name):
    g = GRAPHS[name]().pad(lengths=[1, 0]) if GRAPHS[name]().num_src else GRAPHS[name]()
    moved = g.to("cpu")
    assert moved.device == torch.device("cpu")
    assert torch.equal(moved.materialize(), g.materialize())
    assert torch.equal(moved.edge_index(), g.edge_index())


def test_to_other_device_moves_tensors():
    g = Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]])).pad(lengths=[1])
    moved = g.to("meta")
    assert moved.device.type == "meta"
    assert moved.edge_index().device.type == "meta"
    assert moved.key_padding_mask.device.type == "meta"
    assert g.edge_index().device.type == "cpu"  # the original is untouched


# ---------------------------------------------------------------------- complete blocks


def test_complete_blocks_recognises_pyg_batch_of_complete_graphs():
    batch = Batch.from_data_list([_complete_pyg(3), _complete_pyg(1), _complete_pyg(2)])
    g = Graph.from_pyg(batch)
    assert torch.equal(g.complete_blocks(), torch.tensor([0, 3, 4, 6]))
    assert not g.is_complete


def test_complete_blocks_shuffled_edge_order(gen):
    g0 = Graph.from_pyg(Batch.from_data_list([_complete_pyg(2), _complete_pyg(3)]))
    perm = torch.randperm(g0.num_edges, generator=gen)
    g = Graph.from_edge_index(g0.edge_index()[:, perm], 5)
    assert torch.equal(g.complete_blocks(), torch.tensor([0, 2, 5]))


def test_complete_blocks_single_complete_graph():
    g = Graph.from_edge_index(Graph.complete(4).edge_index())
    assert g.is_complete
    assert torch.equal(g.complete_blocks(), torch.tensor([0, 4]))


def _blocks_minus_edge() -> EdgeListGraph:
    ei = Graph.from_pyg(Batch.from_data_list([_complete_pyg(3), _complete_pyg(2)])).edge_index()
    return Graph.from_edge_index(ei[:, 1:], 5)


def _blocks_with_duplicate() -> EdgeListGraph:
    ei = Graph.from_pyg(Batch.from_data_list([_complete_pyg(3), _complete_pyg(2)])).edge_index()
    # drop edge 0 and duplicate edge 1: same count, same per-node ranges, one edge twice
    return Graph.from_edge_index(torch.cat([ei[:, 1:], ei[:, 1:2]], 1), 5)


@pytest.mark.parametrize(
    "make",
    [
        _blocks_minus_edge,
        _blocks_with_duplicate,
        lambda: Graph.from_edge_index(Graph.window(6, 1).edge_index()),
        lambda: Graph.from_edge_index(Graph.causal(4).edge_index()),
        lambda: Graph.from_edge_index(torch.tensor([[1, 0], [0, 1]])),  # no self-loops
        lambda: Graph.from_edge_index(Graph.complete(2, 3).edge_index(), 2, 3),
        lambda: Graph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 3),
    ],
    ids=["missing_edge", "duplicate", "window", "causal", "no_self_loops", "bipartite", "empty"],
)
def test_complete_blocks_rejects(make):
    assert make().complete_blocks() is None


# ---------------------------------------------------------------------- validation


def test_edge_index_float_dtype():
    with pytest.raises(TypeError, match=r"edge_index.*dtype.*float32"):
        Graph.from_edge_index(torch.zeros(2, 3))


def test_edge_index_not_a_tensor():
    with pytest.raises(TypeError, match=r"edge_index.*list"):
        Graph.from_edge_index([[0, 1], [1, 0]])


@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 2, 2)])
def test_edge_index_bad_shape(shape):
    with pytest.raises(
        ValueError, match=rf"edge_index.*{tuple(shape)!r}".replace("(", r"\(").replace(")", r"\)")
    ):
        Graph.from_edge_index(torch.zeros(shape, dtype=torch.long))


@pytest.mark.parametrize(
    ("ei", "num_dst", "num_src", "match"),
    [
        (torch.tensor([[0, 7], [1, 0]]), 3, 4, r"edge_index\[0\].*index 7.*num_src=4"),
        (torch.tensor([[0, 1], [5, 0]]), 3, 4, r"edge_index\[1\].*index 5.*num_dst=3"),
        (torch.tensor([[0, 4], [1, 0]]), 4, None, r"index 4.*num_src=4"),
    ],
)
def test_edge_index_out_of_range(ei, num_dst, num_src, match):
    with pytest.raises(IndexError, match=match):
        Graph.from_edge_index(ei, num_dst, num_src)


@pytest.mark.parametrize("ei", [torch.tensor([[0, -1], [1, 0]]), torch.tensor([[0, 1], [-3, 0]])])
def test_edge_index_negative(ei):
    with pytest.raises(IndexError, match=r"negative index -\d"):
        Graph.from_edge_index(ei)


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: Graph.complete(-1), ValueError, r"num_dst.*-1"),
        (lambda: Graph.complete(2.0), TypeError, r"num_dst.*float"),
        (lambda: Graph.window(4, -2), ValueError, r"radius.*-2"),
        (lambda: Graph.grid(2, True), TypeError, r"width.*bool"),
    ],
)
def test_size_validation(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_repr_shows_sizes():
    r = repr(Graph.window(5, 1).pad(lengths=[2, 3]))
    assert "WindowGraph" in r and "num_dst=5" in r and "radius=1" in r and "padded_batch=2" in r


@pytest.mark.parametrize("n", [1, 5, 40])
@pytest.mark.parametrize("radius", [0, 3, 60])
@pytest.mark.parametrize("causal", [False, True])
def test_window_edge_index_without_dense_mask(n: int, radius: int, causal: bool) -> None:
    g = Graph.window(n, radius, causal=causal)
    ei = g.edge_index()
    assert "mask" not in g._cache  # built in O(N * radius), not from an N x N mask
    expected = g.materialize_structure().nonzero().t().flip(0)  # by target, then source
    assert torch.equal(ei, expected) and ei.shape[1] == g.num_edges


def test_devices_compare_as_tensors_report_them():
    """``graph=None`` builds the complete graph on the inputs' device, and a device without
    an index is read as tensors read it (``"cuda"`` is ``cuda:0``), so that a graph moved with
    ``.to("cuda")`` equals its inputs' device (found on a GPU: it did not)."""
    from graphattn.graph import as_graph, canonical_device

    assert canonical_device(None) == torch.device("cpu")
    assert canonical_device("cpu") == torch.device("cpu")
    meta = torch.device("meta")
    assert as_graph(None, 2, 3, meta).device == meta
    assert as_graph(None, 2, 3).device == torch.device("cpu")
    if torch.cuda.is_available():
        assert canonical_device("cuda") == torch.zeros(1, device="cuda").device

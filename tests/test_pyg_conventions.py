"""PyG's conventions in GraphAttention and the conv layers: ``in_channels`` (int, pair, lazy
``-1``), ``(x_src, x_dst)`` pairs, ``Data`` / ``Batch`` objects and sparse ``adj_t`` graphs,
each against the explicit call it stands for and against PyG's own layers; the refusals."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from torch import Tensor

pyg_nn = pytest.importorskip("torch_geometric.nn")
pyg_data = pytest.importorskip("torch_geometric.data")

import graphattn  # noqa: E402
from graphattn import Graph, GraphAttention, graph_attention  # noqa: E402

F64 = torch.float64
C, H = 8, 2
CONVS = ["GATConv", "GATv2Conv", "TransformerConv"]


def _edges(gen: torch.Generator, ns: int, nd: int, e: int = 16) -> Tensor:
    """Random edges ``(2, E)`` with a duplicate and a self-loop."""
    ei = torch.stack(
        [torch.randint(0, ns, (e,), generator=gen), torch.randint(0, nd, (e,), generator=gen)]
    )
    return torch.cat([ei, ei[:, :1], torch.tensor([[1], [1]])], dim=1)


def _adj_t(edge_index: Tensor, nd: int, ns: int) -> Tensor:
    """PyG's ``adj_t``: an uncoalesced COO ``(Nd, Ns)`` with one stored entry per edge, in
    the order of ``edge_index`` (row = target, column = source)."""
    values = torch.ones(edge_index.shape[1], dtype=F64)
    return torch.sparse_coo_tensor(edge_index.flip(0), values, (nd, ns), check_invariants=True)


def _layouts(adj_t: Tensor) -> dict[str, Tensor]:
    """The same matrix in every layout :meth:`Graph.from_sparse` reads."""
    coo = adj_t.coalesce()  # merges a duplicated edge
    return {
        "coo": adj_t,
        "coo_coalesced": coo,
        "csr": coo.to_sparse_csr(),
        "csc": coo.to_sparse_csc(),
    }


def _stored_edges(adj: Tensor) -> Tensor:
    """``edge_index`` ``(2, nnz)`` of the stored entries of ``adj_t`` in stored order, found
    without graphattn: row-major for CSR, column-major for CSC, as stored for COO."""
    if adj.layout == torch.sparse_csc:
        return adj.to_dense().t().nonzero().t()  # (source, target) by source
    if adj.layout == torch.sparse_csr:
        return adj.to_dense().nonzero().t().flip(0)  # by target
    return adj._indices().flip(0)


def _pyg_and_ours(name: str, *args, **kwargs):
    torch.manual_seed(0)
    pyg = getattr(pyg_nn, name)(*args, **kwargs).double().eval()
    return pyg, graphattn.from_pyg(pyg)


def _attention(seed: int = 0, **kwargs) -> GraphAttention:
    torch.manual_seed(seed)
    ga = GraphAttention(C, H, dtype=F64, **kwargs)
    with torch.no_grad():  # non-zero biases, so that they count
        ga.in_proj_bias.normal_(0, 0.1)
    return ga


def _x(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=F64)


# ---------------------------------------------------------------------- in_channels


def test_in_channels_equal_to_embed_dim_is_todays_layout(gen):
    """``in_channels=C`` builds what the default builds: same parameters, same numbers."""
    ref = _attention()
    ga = GraphAttention(C, H, in_channels=C, dtype=F64)
    ga.load_state_dict(ref.state_dict(), strict=True)
    x, ei = _x(gen, 7, C), _edges(gen, 7, 7)
    torch.testing.assert_close(ga(x, ei), ref(x, ei), rtol=0, atol=0)


def test_in_channels_int_packs_what_a_pair_keeps_apart(gen):
    """``in_channels=F`` (one ``in_proj_weight`` ``(3C, F)``) computes what ``(F, F)``
    (``q/k/v_proj_weight``) computes with the same weights."""
    packed = _attention(in_channels=5)
    pair = GraphAttention(C, H, in_channels=(5, 5), dtype=F64)
    assert packed.in_proj_weight.shape == (3 * C, 5) and pair.in_proj_weight is None
    with torch.no_grad():
        wq, wk, wv = packed.in_proj_weight.chunk(3)
        for w, ref in zip(
            (pair.q_proj_weight, pair.k_proj_weight, pair.v_proj_weight), (wq, wk, wv), strict=True
        ):
            w.copy_(ref)
        pair.in_proj_bias.copy_(packed.in_proj_bias)
        pair.out_proj.load_state_dict(packed.out_proj.state_dict())
    x, ei = _x(gen, 7, 5), _edges(gen, 7, 7)
    torch.testing.assert_close(pair(x, ei), packed(x, ei), rtol=0, atol=1e-12)
    assert "in_channels=5" in repr(packed) and "in_channels=(5, 5)" in repr(pair)


@pytest.mark.parametrize("sizes", [(5, 5, 7, 7), (6, 3, 9, 4)], ids=["square", "bipartite"])
def test_in_channels_match_transformer_conv(sizes, gen):
    """A TransformerConv whose inputs are not ``heads * out_channels`` wide converts to a
    GraphAttention with ``in_channels=(F_src, F_dst)``: PyG's numbers, with PyG's
    ``(x_src, x_dst)`` pair as ``x``."""
    f_src, f_dst, ns, nd = sizes
    torch.manual_seed(0)
    conv = pyg_nn.TransformerConv((f_src, f_dst), C // H, heads=H, root_weight=False).double()
    ga = GraphAttention.from_transformer_conv(conv)
    assert ga.in_channels == (f_src, f_dst) and (ga.kdim, ga.qdim) == (f_src, f_dst)
    xs, xd, ei = _x(gen, ns, f_src), _x(gen, nd, f_dst), _edges(gen, ns, nd)
    torch.testing.assert_close(ga((xs, xd), ei), conv((xs, xd), ei), rtol=0, atol=1e-12)


@pytest.mark.parametrize("in_channels", [-1, (-1, -1), (6, -1)], ids=str)
def test_lazy_in_channels_match_the_eager_module(in_channels, gen):
    """``-1`` shapes a projection from its first input (Xavier-uniform, as the eager module
    initialises); afterwards it is the eager module: state dicts load both ways."""
    square = isinstance(in_channels, int)  # self-attention on 9 nodes, else 9 -> 7 nodes
    f_src, f_dst, nd = (6, 6, 9) if square else (6, 4, 7)
    eager_in = 6 if square else (f_src, f_dst)
    xs, xd = _x(gen, 9, f_src), _x(gen, nd, f_dst)
    x = xs if square else (xs, xd)
    graph = Graph.from_edge_index(_edges(gen, 9, nd), nd, 9)
    lazy = GraphAttention(C, H, in_channels=in_channels, dtype=F64)
    assert -1 in (lazy.qdim, lazy.kdim)
    unshaped = lazy.state_dict()  # unshaped parameters are saved as they are
    GraphAttention(C, H, in_channels=in_channels).load_state_dict(unshaped, strict=True)
    out = lazy(x, graph)
    assert (lazy.kdim, lazy.vdim, lazy.qdim) == (f_src, f_src, f_dst)
    for name, p in lazy.named_parameters():
        if name.endswith("proj_weight"):  # Xavier-uniform, as reset_parameters
            bound = math.sqrt(6.0 / sum(p.shape))
            assert (p.abs() <= bound).all() and p.abs().max() > bound / 2, name
    eager = GraphAttention(C, H, in_channels=eager_in, dtype=F64)
    eager.load_state_dict(lazy.state_dict(), strict=True)
    torch.testing.assert_close(eager(x, graph), out, rtol=0, atol=0)
    relazy = GraphAttention(C, H, in_channels=in_channels, dtype=F64)
    relazy.load_state_dict(eager.state_dict(), strict=True)  # shaped by the checkpoint
    torch.testing.assert_close(relazy(x, graph), out, rtol=0, atol=0)
    grads = torch.autograd.grad(lazy(x, graph).sum(), list(lazy.parameters()))
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_lazy_projection_refuses_a_wrong_checkpoint_and_later_widths(gen):
    lazy = GraphAttention(C, H, in_channels=-1)
    wrong = GraphAttention(2 * C, H, in_channels=5).state_dict()
    with pytest.raises(RuntimeError, match="in_proj_weight"):
        lazy.load_state_dict(wrong)
    lazy = GraphAttention(C, H, in_channels=-1)
    lazy(torch.randn(4, 5))
    with pytest.raises(ValueError, match="x has feature size 6 but in_channels is 5"):
        lazy(torch.randn(4, 6))


@pytest.mark.parametrize(
    ("in_channels", "error", "message"),
    [
        (0, ValueError, r"in_channels must be a positive int or -1 \(lazy.*got 0"),
        (-2, ValueError, r"in_channels must be a positive int or -1 .*got -2"),
        (2.5, TypeError, r"in_channels must be an int, got float \(2.5\)"),
        (True, TypeError, r"in_channels must be an int, got bool"),
        ("8", TypeError, r"in_channels must be an int, got str"),
        ((4, 0), ValueError, r"in_channels\[1\] must be a positive int or -1 .*got 0"),
        (
            (4, 5, 6),
            ValueError,
            r"in_channels must be an int or a \(src, dst\) pair, got \(4, 5, 6\)",
        ),
    ],
    ids=str,
)
def test_bad_in_channels_are_refused(in_channels, error, message):
    with pytest.raises(error, match=message):
        GraphAttention(C, H, in_channels=in_channels)


def test_in_channels_errors_name_the_argument(gen):
    with pytest.raises(ValueError, match=r"in_channels .* or kdim/vdim .*not both.*kdim=4"):
        GraphAttention(C, H, in_channels=6, kdim=4)
    ga = GraphAttention(C, H, in_channels=(6, 4))
    with pytest.raises(
        ValueError, match=r"x has feature size 6 but in_channels\[1\] \(targets\) is 4"
    ):
        ga(torch.randn(5, 6), x_src=torch.randn(3, 6))
    with pytest.raises(
        ValueError, match=r"x_src has feature size 4 but in_channels\[0\] \(sources\) is 6"
    ):
        ga(torch.randn(5, 4), x_src=torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"self-attention needs one input width.*\(6, 4\)"):
        ga(torch.randn(5, 4))
    with pytest.raises(ValueError, match="x has feature size 6 but embed_dim is 8"):
        GraphAttention(C, H)(torch.randn(5, 6))  # today's message without in_channels


def test_compiled_in_channels_match_eager(gen):
    """No graph break from ``in_channels`` or PyG's pair (cross-attention on the complete
    graph, as ``test_attention``'s compile test)."""
    torch._dynamo.reset()
    ga = _attention(in_channels=(6, 4), backend="dense").eval()
    xs, xd = _x(gen, 2, 9, 6), _x(gen, 2, 7, 4)
    compiled = torch.compile(ga, fullgraph=True)  # fullgraph: fails on a graph break
    torch.testing.assert_close(compiled((xs, xd)), ga((xs, xd)), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- (x_src, x_dst) pairs


@pytest.mark.parametrize("pair", [tuple, list])
@pytest.mark.parametrize("batched", [False, True])
def test_attention_takes_pygs_pair_as_x(pair, batched, gen):
    """``attn((x_src, x_dst), graph)`` is ``attn(x_dst, graph, x_src=x_src)``, with
    ``x_value=`` for separate values."""
    ga = _attention(in_channels=(6, 4))
    lead = (3,) if batched else ()
    xs, xd, v = _x(gen, *lead, 9, 6), _x(gen, *lead, 7, 4), _x(gen, *lead, 9, 6)
    ei = _edges(gen, 9, 7)
    torch.testing.assert_close(ga(pair((xs, xd)), ei), ga(xd, ei, x_src=xs), rtol=0, atol=0)
    torch.testing.assert_close(
        ga(pair((xs, xd)), ei, x_value=v), ga(xd, ei, x_src=xs, x_value=v), rtol=0, atol=0
    )


def test_ambiguous_pairs_are_refused_naming_x_value(gen):
    ga = GraphAttention(C, H)
    x, src = torch.randn(4, C), torch.randn(6, C)
    with pytest.raises(TypeError, match=r"x_src= was given too.*x_value="):
        ga((src, x), x_src=src)
    with pytest.raises(
        TypeError, match=r"x_src must be a tensor.*ambiguous.*x=\(x_src, x_dst\).*x_value="
    ):
        ga(x, x_src=(src, src))
    with pytest.raises(
        TypeError, match=r"x must be a tensor or PyG's \(x_src, x_dst\) pair, got a tuple of 3"
    ):
        ga((src, x, x))


@pytest.mark.parametrize("name", CONVS)
def test_conv_pairs_with_a_sparse_adj_t_match_pyg(name, gen):
    """Bipartite ``(x_src, x_dst)`` with a sparse ``adj_t`` ``(Nd, Ns)``, as PyG's layer."""
    kwargs = {} if name == "TransformerConv" else {"add_self_loops": False}
    pyg, ours = _pyg_and_ours(name, (6, 4), 3, heads=H, **kwargs)
    xs, xd, ei = _x(gen, 9, 6), _x(gen, 7, 4), _edges(gen, 9, 7)
    adj_t = _adj_t(ei, 7, 9).coalesce().to_sparse_csr()
    out = ours((xs, xd), adj_t)
    torch.testing.assert_close(out, pyg((xs, xd), adj_t), rtol=0, atol=1e-12)
    torch.testing.assert_close(out, ours((xs, xd), _stored_edges(adj_t)), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- Data and Batch


def _data(gen: torch.Generator, n: int = 7, edge_dim: int | None = 3):
    ei = _edges(gen, n, n)
    ea = None if edge_dim is None else _x(gen, ei.shape[1], edge_dim)
    return pyg_data.Data(x=_x(gen, n, 5), edge_index=ei, edge_attr=ea)


@pytest.mark.parametrize("name", CONVS)
@pytest.mark.parametrize("batch", [False, True], ids=["data", "batch"])
def test_conv_takes_data_as_pyg_does(name, batch, gen):
    """``conv(data)`` is ``conv(data.x, data.edge_index, data.edge_attr)``: ours and PyG's."""
    pyg, ours = _pyg_and_ours(name, 5, 3, heads=H, edge_dim=3)
    data = _data(gen)
    if batch:
        data = pyg_data.Batch.from_data_list([data, _data(gen, n=4)])
    ref = pyg(data.x, data.edge_index, data.edge_attr)
    torch.testing.assert_close(ours(data), ours(data.x, data.edge_index, data.edge_attr))
    torch.testing.assert_close(ours(data), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours(data.x, data, data.edge_attr), ref, rtol=0, atol=1e-12)


def test_conv_without_edge_dim_ignores_data_edge_attr(gen):
    pyg, ours = _pyg_and_ours("GATConv", 5, 3, heads=H)
    data = _data(gen)
    torch.testing.assert_close(ours(data), pyg(data.x, data.edge_index), rtol=0, atol=1e-12)


@pytest.mark.parametrize("batch", [False, True], ids=["data", "batch"])
def test_attention_takes_data(batch, gen):
    """``attn(data)`` reads ``x``, ``edge_index`` and (with ``edge_dim``) ``edge_attr``;
    ``attn(x, data)`` only the graph; an explicit ``edge_attr`` wins."""
    ga = _attention(in_channels=5, edge_dim=3)
    data = _data(gen)
    if batch:
        data = pyg_data.Batch.from_data_list([data, _data(gen, n=4)])
    ref = ga(data.x, data.edge_index, edge_attr=data.edge_attr)
    torch.testing.assert_close(ga(data), ref, rtol=0, atol=0)
    torch.testing.assert_close(ga(data.x, data, edge_attr=data.edge_attr), ref, rtol=0, atol=0)
    other = _x(gen, *data.edge_attr.shape)
    torch.testing.assert_close(
        ga(data, edge_attr=other), ga(data.x, data.edge_index, edge_attr=other), rtol=0, atol=0
    )
    plain = _attention(in_channels=5)
    torch.testing.assert_close(plain(data), plain(data.x, data.edge_index), rtol=0, atol=0)


def test_data_with_adj_t(gen):
    """A ``Data`` holding ``adj_t`` (as ``T.ToSparseTensor`` leaves it) instead of
    ``edge_index``."""
    data = _data(gen, edge_dim=None)
    adj_t = _adj_t(data.edge_index, 7, 7).coalesce().to_sparse_csr()
    sparse = pyg_data.Data(x=data.x, adj_t=adj_t)
    ga = _attention(in_channels=5)
    torch.testing.assert_close(ga(sparse), ga(data.x, adj_t), rtol=0, atol=0)
    torch.testing.assert_close(ga(data.x, sparse), ga(data.x, adj_t), rtol=0, atol=0)
    pyg, ours = _pyg_and_ours("GATConv", 5, 3, heads=H)
    torch.testing.assert_close(ours(sparse), pyg(data.x, adj_t), rtol=0, atol=1e-12)


def test_data_refusals(gen):
    data = _data(gen)
    ga, conv = GraphAttention(C, H, in_channels=5), graphattn.GATConv(5, 3, dtype=F64)
    with pytest.raises(TypeError, match=r"x is a PyG Data.*edge_index= was given too"):
        conv(data, data.edge_index)
    with pytest.raises(TypeError, match=r"x is a PyG Data.*graph= was given too"):
        ga(data, data.edge_index)
    with pytest.raises(ValueError, match=r"data \(Data\) has no node features x"):
        conv(pyg_data.Data(edge_index=data.edge_index, num_nodes=7))
    with pytest.raises(ValueError, match=r"data \(Data\) has neither edge_index nor adj_t"):
        ga(pyg_data.Data(x=data.x))
    with pytest.raises(TypeError, match=r"edge_index is missing: call conv\(x, edge_index\)"):
        conv(data.x)
    with pytest.raises(TypeError, match=r"edge_index must be a graphattn.Graph, .* got str"):
        conv(data.x, "edges")
    with pytest.raises(TypeError, match=r"graph must be a graphattn.Graph, .* got dict"):
        ga(data.x.float(), {"edge_index": data.edge_index})
    with pytest.raises(ValueError, match="this layer was built with edge_dim; pass edge_attr"):
        graphattn.GATConv(5, 3, edge_dim=3, dtype=F64)(
            pyg_data.Data(x=data.x, edge_index=data.edge_index)
        )


# ---------------------------------------------------------------------- sparse adj_t


def test_from_sparse_reads_adj_t_rows_as_targets():
    adj_t = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0], [1, 0, 0]]).to_sparse_csr()
    g = Graph.from_sparse(adj_t)
    assert (g.num_dst, g.num_src) == (4, 3)
    assert torch.equal(g.edge_index(), torch.tensor([[1, 2, 2, 0], [0, 0, 1, 3]]))
    assert torch.equal(g.materialize(), adj_t.to_dense().bool())


@pytest.mark.parametrize("layout", ["coo", "coo_coalesced", "csr", "csc"])
def test_attention_on_a_sparse_adj_t_is_the_edge_list_call(layout, gen):
    """``attn(x, adj_t)`` is ``attn(x, edge_index)`` of its stored entries in stored order:
    edge features and returned weights follow that order (a duplicated COO entry counts
    twice, as in PyG)."""
    ei = _edges(gen, 9, 7)
    adj = _layouts(_adj_t(ei, 7, 9))[layout]
    stored = _stored_edges(adj)
    assert layout != "coo" or torch.equal(stored, ei)
    ga = _attention(edge_dim=3)
    xs, xd, ea = _x(gen, 9, C), _x(gen, 7, C), _x(gen, stored.shape[1], 3)
    res = ga.forward_with_weights(xd, adj, x_src=xs, edge_attr=ea)
    ref = ga.forward_with_weights(xd, stored, x_src=xs, edge_attr=ea)
    torch.testing.assert_close(res.out, ref.out, rtol=0, atol=0)
    torch.testing.assert_close(res.attention.values, ref.attention.values, rtol=0, atol=0)
    q, k, v = _x(gen, H, 7, 4), _x(gen, H, 9, 4), _x(gen, H, 9, 4)
    torch.testing.assert_close(graph_attention(q, k, v, adj), graph_attention(q, k, v, stored))


@pytest.mark.parametrize("name", CONVS)
@pytest.mark.parametrize("layout", ["coo_coalesced", "csr"])
def test_conv_on_a_sparse_adj_t_matches_pyg(name, layout, gen):
    """PyG's layer on the same ``adj_t``, self-loops included; the weights come back as
    ``(edge_index, alpha)`` (PyG returns the matrix): the same weight on every edge."""
    pyg, ours = _pyg_and_ours(name, 5, 3, heads=H)
    x, ei = _x(gen, 7, 5), _edges(gen, 7, 7)
    adj = _layouts(_adj_t(ei, 7, 7))[layout]
    out, (edges, alpha) = ours(x, adj, return_attention_weights=True)
    ref, (ref_matrix, ref_alpha) = pyg(x, adj, return_attention_weights=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(out, ours(x, _stored_edges(adj)), rtol=0, atol=1e-12)
    dense = torch.zeros(7, 7, H, dtype=F64).index_put_((edges[1], edges[0]), alpha)
    if name == "TransformerConv":  # PyG's matrix drops the heads; alpha is in stored order
        src, dst = _stored_edges(adj)
        ref_dense = torch.zeros(7, 7, H, dtype=F64).index_put_((dst, src), ref_alpha)
    else:  # PyG gives the matrix with the self-loops, alpha as its values
        ref_dense = ref_matrix.to_dense()
    torch.testing.assert_close(dense, ref_dense, rtol=0, atol=1e-12)


def test_transformer_conv_edge_attr_follows_adj_t_order(gen):
    """``edge_attr`` rows follow the stored entries (CSR: by target), as in PyG."""
    pyg, ours = _pyg_and_ours("TransformerConv", 5, 3, heads=H, edge_dim=3)
    x, ei = _x(gen, 7, 5), _edges(gen, 7, 7)
    adj = _adj_t(ei, 7, 7).coalesce().to_sparse_csr()
    ea = _x(gen, adj.values().numel(), 3)
    out = ours(x, adj, ea)
    torch.testing.assert_close(out, pyg(x, adj, ea), rtol=0, atol=1e-12)
    torch.testing.assert_close(out, ours(x, _stored_edges(adj), ea), rtol=0, atol=1e-12)


def test_conv_reuses_the_graph_of_the_same_adj_t(gen):
    conv = graphattn.GATConv(5, 3)
    x, adj = _x(gen, 7, 5).float(), _adj_t(_edges(gen, 7, 7), 7, 7).float().to_sparse_csr()
    conv(x, adj)
    first = conv._graphs._value
    conv(x, adj)
    assert conv._graphs._value is first and conv._graphs._index is adj


def test_sparse_refusals(gen):
    ga = GraphAttention(C, H)
    x, ei = torch.randn(4, C), torch.tensor([[0, 1, 2], [1, 2, 3]])
    adj = torch.sparse_coo_tensor(ei.flip(0), torch.ones(3), (4, 4))
    with pytest.raises(TypeError, match=r"layout .*sparse_coo.*sparse_csr.*got torch.sparse_bsr"):
        ga(x, adj.to_dense().to_sparse_bsr((2, 2)))
    with pytest.raises(TypeError, match=r"got torch.sparse_bsc"):
        graphattn.GATConv(C, 2)(x, adj.to_dense().to_sparse_bsc((2, 2)))
    hybrid = torch.sparse_coo_tensor(ei.flip(0), torch.ones(3, 2), (4, 4, 2))
    with pytest.raises(ValueError, match=r"one \(N_dst, N_src\) matrix .* got shape \(4, 4, 2\)"):
        ga(x, hybrid)
    adj = torch.sparse_coo_tensor(ei, torch.ones(3), (4, 6))  # adj[source, target], not adj_t
    with pytest.raises(
        ValueError, match=r"num_dst=4, num_src=6 .* 6 target and 4 source.*rows = targets"
    ):
        ga(torch.randn(6, C), adj, x_src=torch.randn(4, C))


@pytest.mark.skipif(
    importlib.util.find_spec("torch_sparse") is None,
    reason="torch_sparse is not installed (the SparseTensor path needs it)",
)
@pytest.mark.parametrize("name", CONVS)
def test_torch_sparse_sparse_tensor_matches_pyg(name, gen):
    from torch_sparse import SparseTensor

    pyg, ours = _pyg_and_ours(name, 5, 3, heads=H)
    x, ei = _x(gen, 7, 5), _edges(gen, 7, 7)
    adj_t = SparseTensor.from_edge_index(ei, sparse_sizes=(7, 7)).t()
    row, col, _ = adj_t.coo()
    torch.testing.assert_close(ours(x, adj_t), pyg(x, adj_t), rtol=0, atol=1e-12)
    torch.testing.assert_close(ours(x, adj_t), ours(x, torch.stack([col, row])))
    ga = _attention(in_channels=5)
    torch.testing.assert_close(ga(x, adj_t), ga(x, torch.stack([col, row])), rtol=0, atol=0)


class _SparseTensorLike:
    """What graphattn reads of ``torch_sparse.SparseTensor`` (``coo()``, ``sparse_sizes()``),
    under its module's name: the conversion runs where torch_sparse is not installed."""

    __module__ = "torch_sparse.tensor"

    def __init__(self, row: Tensor, col: Tensor, sizes: tuple[int, int]) -> None:
        self.row, self.col, self.sizes = row, col, sizes

    def coo(self) -> tuple[Tensor, Tensor, None]:
        return self.row, self.col, None

    def sparse_sizes(self) -> tuple[int, int]:
        return self.sizes


_SparseTensorLike.__name__ = "SparseTensor"


def test_sparse_tensor_interface_is_read_without_torch_sparse(gen):
    ei = _edges(gen, 9, 7)
    adj_t = _SparseTensorLike(ei[1], ei[0], (7, 9))
    ga = _attention()
    xs, xd = _x(gen, 9, C), _x(gen, 7, C)
    torch.testing.assert_close(ga(xd, adj_t, x_src=xs), ga(xd, ei, x_src=xs), rtol=0, atol=0)
    pyg, ours = _pyg_and_ours("TransformerConv", (C, C), 3, heads=H)
    torch.testing.assert_close(ours((xs, xd), adj_t), ours((xs, xd), ei), rtol=0, atol=0)

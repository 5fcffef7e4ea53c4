"""``graphattn.from_pyg``: GATConv, GATv2Conv and TransformerConv give PyG's outputs, input
and parameter gradients and attention weights for every option, on graphs with isolated
targets, duplicated edges, existing self-loops and bipartite sizes; refusals; the self-loop
cache; ``torch.compile``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

pyg_nn = pytest.importorskip("torch_geometric.nn")

import graphattn  # noqa: E402
from graphattn import ConvOutput, Graph, add_self_loops  # noqa: E402

F64 = torch.float64


def _graph(gen: torch.Generator, ns: int, nd: int, e: int = 30) -> Tensor:
    """Random edges with a duplicate and an existing self-loop; the last target of ``nd``
    and (when square) the last node as target get no in-edge."""
    src = torch.randint(0, ns, (e,), generator=gen)
    dst = torch.randint(0, max(1, nd - 1), (e,), generator=gen)
    ei = torch.stack([src, dst])
    return torch.cat([ei, ei[:, :1], torch.tensor([[1], [1]])], dim=1)


def _inputs(gen, in_channels, ns=9, nd=None, edge_dim=None):
    nd = ns if nd is None else nd
    bipartite = isinstance(in_channels, tuple)
    f_src, f_dst = in_channels if bipartite else (in_channels, in_channels)
    x_src = torch.randn(ns, f_src, generator=gen, dtype=F64)
    x_dst = torch.randn(nd, f_dst, generator=gen, dtype=F64)
    ei = _graph(gen, ns, nd)
    ea = None if edge_dim is None else torch.randn(ei.shape[1], edge_dim, generator=gen, dtype=F64)
    return x_src, (x_dst if bipartite else None), ei, ea


def _compare(pyg_conv, gen, in_channels, *, ns=9, nd=None, edge_dim=None, backend="auto"):
    pyg_conv = pyg_conv.double().eval()
    ours = graphattn.from_pyg(pyg_conv, backend=backend)
    x_src, x_dst, ei, ea = _inputs(gen, in_channels, ns, nd, edge_dim)

    def run(conv, pyg: bool):
        xs = x_src.clone().requires_grad_()
        xd = None if x_dst is None else x_dst.clone().requires_grad_()
        x = xs if xd is None else (xs, xd)
        if pyg:
            out, (edges, alpha) = conv(x, ei, ea, return_attention_weights=True)
        else:
            res = conv.forward_with_weights(x, ei, ea)
            assert isinstance(res, ConvOutput)
            out, edges, alpha = res.out, res.edge_index, res.attention.values
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
        inputs = [xs] + ([] if xd is None else [xd])
        params = dict(conv.named_parameters())
        grads = torch.autograd.grad(out, inputs + list(params.values()), grad, allow_unused=True)
        pgrads = dict(zip(params, grads[len(inputs) :], strict=True))
        return out, edges, alpha, grads[: len(inputs)], pgrads

    p_out, p_edges, p_alpha, p_xgrads, p_pgrads = run(pyg_conv, True)
    o_out, o_edges, o_alpha, o_xgrads, o_pgrads = run(ours, False)
    torch.testing.assert_close(o_out, p_out, rtol=0, atol=1e-12)
    assert torch.equal(o_edges, p_edges)
    torch.testing.assert_close(o_alpha, p_alpha, rtol=0, atol=1e-12)
    for a, b in zip(o_xgrads, p_xgrads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    for name, g in o_pgrads.items():
        ref = p_pgrads[name]
        if ref is None:  # e.g. PyG's lin_skip when root_weight=False is not ours
            continue
        torch.testing.assert_close(g, ref, rtol=0, atol=1e-12, msg=name)
    return ours


GAT_OPTIONS = [
    {},
    {"heads": 3},
    {"heads": 3, "concat": False},
    {"heads": 2, "negative_slope": 0.05},
    {"heads": 2, "add_self_loops": False},
    {"heads": 2, "bias": False, "residual": True},
    {"heads": 2, "edge_dim": 3},
    {"heads": 2, "edge_dim": 3, "fill_value": "add"},
    {"heads": 2, "edge_dim": 3, "fill_value": "max"},
    {"heads": 2, "edge_dim": 3, "fill_value": "min"},
    {"heads": 2, "edge_dim": 3, "fill_value": "mul"},
    {"heads": 2, "edge_dim": 3, "fill_value": 0.5},
    {"heads": 2, "edge_dim": 3, "fill_value": None},
    {"heads": 2, "edge_dim": 3, "fill_value": torch.tensor([1.0, -2.0, 0.5])},
    {"heads": 2, "dropout": 0.5},  # eval mode: no dropout
]


@pytest.mark.parametrize("opts", GAT_OPTIONS, ids=lambda o: str(o) or "default")
@pytest.mark.parametrize("backend", ["auto", "edges"])
def test_gat_conv(opts, backend, gen):
    torch.manual_seed(0)
    conv = pyg_nn.GATConv(5, 4, **opts)
    _compare(conv, gen, 5, edge_dim=opts.get("edge_dim"), backend=backend)


@pytest.mark.parametrize("opts", [{}, {"residual": True, "edge_dim": 2}, {"concat": False}])
@pytest.mark.parametrize("sizes", [(9, 6), (5, 8)])
def test_gat_conv_bipartite(opts, sizes, gen):
    torch.manual_seed(0)
    if "edge_dim" in opts and sizes[1] > sizes[0]:
        # PyG's "mean" fill fails when a target beyond the self-loop range has in-edges
        opts = {**opts, "fill_value": 0.5}
    conv = pyg_nn.GATConv((5, 3), 4, heads=2, **opts)
    _compare(conv, gen, (5, 3), ns=sizes[0], nd=sizes[1], edge_dim=opts.get("edge_dim"))


GATV2_OPTIONS = [
    {},
    {"heads": 3, "concat": False},
    {"heads": 2, "share_weights": True},
    {"heads": 2, "add_self_loops": False, "negative_slope": 0.3},
    {"heads": 2, "bias": False, "residual": True},
    {"heads": 2, "edge_dim": 3},
    {"heads": 2, "edge_dim": 3, "fill_value": "add"},
    {"heads": 2, "edge_dim": 3, "fill_value": 1.5},
]


@pytest.mark.parametrize("opts", GATV2_OPTIONS, ids=lambda o: str(o) or "default")
def test_gatv2_conv(opts, gen):
    torch.manual_seed(0)
    conv = pyg_nn.GATv2Conv(5, 4, **opts)
    _compare(conv, gen, 5, edge_dim=opts.get("edge_dim"))


@pytest.mark.parametrize("share", [False, True])
def test_gatv2_conv_bipartite(share, gen):
    torch.manual_seed(0)
    channels = (5, 5) if share else (5, 3)
    conv = pyg_nn.GATv2Conv(channels, 4, heads=2, share_weights=share, edge_dim=2)
    _compare(conv, gen, channels, ns=9, nd=6, edge_dim=2)


TRANSFORMER_OPTIONS = [
    {},
    {"heads": 3, "concat": False},
    {"heads": 2, "beta": True},
    {"heads": 2, "root_weight": False},
    {"heads": 2, "bias": False},
    {"heads": 2, "edge_dim": 3},
    {"heads": 2, "edge_dim": 3, "beta": True, "concat": False},
]


@pytest.mark.parametrize("opts", TRANSFORMER_OPTIONS, ids=lambda o: str(o) or "default")
@pytest.mark.parametrize("backend", ["auto", "edges"])
def test_transformer_conv(opts, backend, gen):
    torch.manual_seed(0)
    conv = pyg_nn.TransformerConv(5, 4, **opts)
    _compare(conv, gen, 5, edge_dim=opts.get("edge_dim"), backend=backend)


def test_transformer_conv_bipartite(gen):
    torch.manual_seed(0)
    conv = pyg_nn.TransformerConv((5, 3), 4, heads=2, edge_dim=2, beta=True)
    _compare(conv, gen, (5, 3), ns=7, nd=4, edge_dim=2)


@pytest.mark.parametrize("conv_cls", ["GATConv", "TransformerConv"])
def test_dense_backend_on_complete_graph_matches_pyg(conv_cls, gen):
    """A complete edge list runs on the dense backend (GAT: broadcast scores)."""
    torch.manual_seed(0)
    n = 6
    idx = torch.arange(n)
    ei = torch.stack([idx.repeat(n), idx.repeat_interleave(n)])
    kw = {"add_self_loops": False} if conv_cls == "GATConv" else {}
    conv = getattr(pyg_nn, conv_cls)(5, 4, heads=2, **kw).double().eval()
    ours = graphattn.from_pyg(conv)
    x = torch.randn(n, 5, generator=gen, dtype=F64)
    res = ours.forward_with_weights(x, ei)
    assert res.backend == "dense"
    torch.testing.assert_close(res.out, conv(x, ei), rtol=0, atol=1e-12)
    forced = graphattn.from_pyg(conv, backend="edges")(x, ei)
    torch.testing.assert_close(res.out, forced, rtol=0, atol=1e-12)


def test_training_mode_dropout_and_state_dict(gen):
    torch.manual_seed(0)
    conv = pyg_nn.GATConv(5, 4, heads=2, dropout=0.5)
    ours = graphattn.from_pyg(conv)
    assert ours.training and ours.dropout == 0.5
    x, _, ei, _ = _inputs(gen, 5)
    x = x.float()
    torch.manual_seed(1)
    a = ours(x, ei)
    torch.manual_seed(1)
    b = ours(x, ei)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # same seed, same dropout
    assert not torch.allclose(a, ours.eval()(x, ei))
    fresh = graphattn.GATConv(5, 4, heads=2)
    fresh.load_state_dict(conv.state_dict())  # PyG's parameter names
    torch.testing.assert_close(fresh(x, ei), conv.eval()(x, ei), rtol=0, atol=1e-6)


def test_from_pyg_refusals():
    with pytest.raises(
        TypeError,
        match=r"GATConv, GATv2Conv, TransformerConv, SGFormerAttention or HGTConv.*Linear",
    ):
        graphattn.from_pyg(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"aggr='mean'"):
        graphattn.from_pyg(pyg_nn.GATConv(4, 2, aggr="mean"))
    with pytest.raises(ValueError, match=r"flow='target_to_source'"):
        graphattn.from_pyg(pyg_nn.GATConv(4, 2, flow="target_to_source"))
    with pytest.raises(ValueError, match=r"lazy.*in_channels=-1"):
        graphattn.from_pyg(pyg_nn.GATConv(-1, 2))


def test_layer_errors(gen):
    conv = graphattn.GATConv(5, 4, heads=2)
    x = torch.randn(6, 5, generator=gen)
    ei = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"edge_attr was given but this layer has edge_dim=None"):
        conv(x, ei, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"built with edge_dim; pass edge_attr"):
        graphattn.GATConv(5, 4, edge_dim=3)(x, ei)
    with pytest.raises(ValueError, match=r"edge_attr has 3 rows but edge_index has 2 edges"):
        graphattn.GATConv(5, 4, edge_dim=3)(x, ei, torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"x_src must have shape \(N, F\), got \(2, 6, 5\)"):
        conv(x[None].expand(2, -1, -1), ei)
    with pytest.raises(TypeError, match=r"x_dst must be a tensor, got NoneType"):
        conv((x, None), ei)
    with pytest.raises(ValueError, match=r"in_channels must be a positive int or -1 \(lazy\)"):
        graphattn.GATConv(-2, 4)
    with pytest.raises(ValueError, match=r"fill_value must be"):
        graphattn.GATConv(5, 4, edge_dim=3, fill_value="median")(x, ei, torch.zeros(2, 3))
    with pytest.raises(IndexError, match=r"out of range"):
        conv(x, torch.tensor([[0], [9]]))


def test_self_loop_cache_follows_the_tensor(gen):
    conv = graphattn.GATConv(5, 4, heads=2).double()
    x = torch.randn(6, 5, generator=gen, dtype=F64)
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]])
    first = conv.forward_with_weights(x, ei)
    again = conv.forward_with_weights(x, ei)
    assert again.attention.graph is first.attention.graph  # same tensor: reused
    ei[0, 0] = 4  # in place: the version counter changes, the graph is rebuilt
    changed = conv.forward_with_weights(x, ei)
    assert changed.attention.graph is not first.attention.graph
    assert changed.edge_index[0, 0] == 4
    pyg = pyg_nn.GATConv(5, 4, heads=2).double()
    pyg.load_state_dict(conv.state_dict())
    torch.testing.assert_close(changed.out, pyg(x, ei), rtol=0, atol=1e-12)


def test_graph_input_and_add_self_loops(gen):
    conv = graphattn.GATConv(5, 4, heads=2).double()
    x = torch.randn(6, 5, generator=gen, dtype=F64)
    ei = torch.tensor([[0, 1, 2, 2], [1, 2, 3, 2]])
    by_graph = conv(x, Graph.from_edge_index(ei, 6))
    torch.testing.assert_close(by_graph, conv(x, ei), rtol=0, atol=0)
    loops, attr = add_self_loops(ei, torch.ones(4, 2), 6, fill_value="add")
    assert loops.shape == (2, 3 + 6) and attr[3:].sum(-1).tolist() == [0, 2, 2, 2, 0, 0]


def test_compile_matches_eager(gen):
    conv = graphattn.GATConv(8, 4, heads=2)
    x = torch.randn(20, 8, generator=gen)
    ei = torch.randint(0, 20, (2, 60), generator=gen)
    graph = Graph.from_edge_index(ei, 20)
    eager = conv(x, graph)
    compiled = torch.compile(conv)
    torch.testing.assert_close(compiled(x, graph), eager, rtol=1e-5, atol=1e-6)
    xg = x.clone().requires_grad_()
    compiled(xg, graph).sum().backward()
    xe = x.clone().requires_grad_()
    conv(xe, graph).sum().backward()
    torch.testing.assert_close(xg.grad, xe.grad, rtol=1e-5, atol=1e-6)


def test_sparse_features_reuse_the_transposed_pattern(gen):
    """CSR features: the same numbers and gradients as dense ones; the transposed pattern is
    cached per index tensors and rebuilt when they change in place."""
    from graphattn import _sparse

    dense = (torch.rand(40, 30, generator=gen) < 0.1).double() * 2.0
    x = dense.to_sparse_csr()
    ei = torch.randint(0, 40, (2, 100), generator=gen)
    conv = graphattn.GATConv(30, 4, heads=2).double()
    grad = torch.randn(40, 8, generator=gen, dtype=F64)
    for features in (
        x,
        torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), x.values() * 0.5, x.shape),
    ):
        out = conv(features, ei)
        (g_sparse,) = torch.autograd.grad(out, conv.lin.weight, grad)
        ref = conv(features.to_dense(), ei)
        (g_dense,) = torch.autograd.grad(ref, conv.lin.weight, grad)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(g_sparse, g_dense, rtol=0, atol=1e-12)
    assert len(_sparse._CACHE) >= 1
    col = x.col_indices()
    col[0] = (col[0] + 1) % 30 if col[1] != (col[0] + 1) % 30 else col[0]  # in place
    changed = x.to_dense()
    out = conv(x, ei)
    (g_sparse,) = torch.autograd.grad(out, conv.lin.weight, grad)
    (g_dense,) = torch.autograd.grad(conv(changed, ei), conv.lin.weight, grad)
    torch.testing.assert_close(g_sparse, g_dense, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["GATConv", "GATv2Conv", "TransformerConv"])
def test_return_attention_weights_gives_pygs_tuple(name, gen):
    """PyG's ``(out, (edge_index, alpha))``, the same numbers as PyG's layer."""
    pyg_nn = pytest.importorskip("torch_geometric.nn")
    torch.manual_seed(0)
    pyg = getattr(pyg_nn, name)(8, 4, heads=2).double().eval()
    ours = graphattn.from_pyg(pyg)
    x = torch.randn(6, 8, generator=gen, dtype=F64)
    ei = torch.tensor([[0, 1, 2, 3, 4, 5, 0], [1, 2, 3, 4, 5, 0, 3]])
    out, (edges, alpha) = ours(x, ei, return_attention_weights=True)
    ref_out, (ref_edges, ref_alpha) = pyg(x, ei, return_attention_weights=True)
    torch.testing.assert_close(out, ref_out)
    assert torch.equal(edges, ref_edges)
    torch.testing.assert_close(alpha, ref_alpha)

"""``torch.compile``, ``torch.export`` and ONNX on sparse graphs: the edge backend compiles
without a graph break, a changing graph compiles once, exported window, grid and edge-list
graphs give eager's numbers (and onnxruntime's, when it is installed).

Compiled code runs the edge backend's traced path (plain differentiable ops, see
``graphattn.backends.edges._run_traced``), so compiled and eager outputs agree to float32
rounding (a different summation order), not bit for bit. The tests compile with the
``aot_eager`` or ``eager`` backend: Inductor adds minutes of code generation on this CPU and
nothing the graph capture does not already check; ``make bench-compile`` runs Inductor.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch._dynamo.testing import CompileCounter

import graphattn
from graphattn import Graph, GraphAttention, graph_attention
from graphattn.graph import _compact
from graphattn.scores import GAT

C, H, N = 16, 2, 24
#: compiled or exported vs eager, float32 (a different summation order)
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _graphs(gen: torch.Generator) -> dict[str, Graph]:
    return {
        "window": Graph.window(N, 2),
        "grid": Graph.grid(4, N // 4, 1),
        "edges": Graph.from_edge_index(torch.randint(0, N, (2, 90), generator=gen), N),
    }


# ---------------------------------------------------------------------------- graph breaks
def test_edge_backend_has_no_graph_break(gen):
    ga = GraphAttention(C, H, backend="edges")
    graph = _graphs(gen)["edges"]
    x = torch.randn(2, N, C, generator=gen)
    explained = torch._dynamo.explain(ga)(x, graph)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.parametrize("fill_value", ["mean", "max", "mul", 0.5])
@pytest.mark.parametrize("layer", ["GATConv", "GATv2Conv"])
def test_conv_layers_with_their_own_self_loops_compile_in_one_graph(layer, fill_value, gen):
    """PyG's self-loop handling (drop the input's loops, add one per node, fill their edge
    features) under fullgraph=True: the input's loops are masked by a -inf bias instead of
    removed, which keeps the edge count independent of the data; same outputs and gradients
    as eager, loops in the input included (node 5 has only a loop as in-edge)."""
    cls = getattr(graphattn, layer)
    torch.manual_seed(0)
    conv = cls(C, 4, heads=2, edge_dim=3, fill_value=fill_value)
    ei = torch.randint(0, N, (2, 80), generator=gen)
    ei[:, :4] = torch.tensor([[1, 2, 2, 5], [1, 2, 2, 5]])  # loops, one of them duplicated
    ei[1, ei[1] == 5] = torch.where(ei[0, ei[1] == 5] == 5, 5, 6)  # node 5: only its loop
    x = torch.randn(N, C, generator=gen, requires_grad=True)
    ea = torch.randn(80, 3, generator=gen)
    explained = torch._dynamo.explain(conv)(x, ei, ea)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    ref = conv(x, ei, ea)
    (gx_ref,) = torch.autograd.grad(ref.square().sum(), x)
    out = torch.compile(conv, backend="aot_eager", fullgraph=True)(x, ei, ea)
    (gx,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(gx, gx_ref, rtol=RTOL, atol=ATOL)


def test_gat_conv_with_self_loops_exports_with_a_symbolic_edge_count(gen):
    torch.manual_seed(0)
    conv = graphattn.GATConv(C, 4, heads=2, backend="edges").eval()
    x = torch.randn(N, C, generator=gen)
    ei = torch.randint(0, N, (2, 70), generator=gen)
    ei[:, :3] = 2  # three copies of one loop
    dynamic = ({}, {1: torch.export.Dim("E", min=2, max=1 << 20)})
    program = torch.export.export(conv, (x, ei), dynamic_shapes=dynamic)
    other = torch.randint(0, N, (2, 95), generator=gen)  # another size, other loops
    other[:, :2] = torch.tensor([[4, 9], [4, 9]])
    for edges in (ei, other):
        torch.testing.assert_close(program.module()(x, edges), conv(x, edges))


@pytest.mark.parametrize("score", ["dot", "gat"])
def test_compiled_edges_match_eager_with_padding_bias_and_nan(score, gen):
    """fullgraph=True on the functional form, forward and backward, with the non-finite
    rules: a -inf bias removes an edge, padded sources send nothing (even NaN ones), a NaN
    key reaches only its own targets, a target without in-edges gets zeros."""
    b, d = 2, 8 if score == "dot" else 1
    q = torch.randn(b, H, N, d, generator=gen)
    k = torch.randn(b, H, N, d, generator=gen)
    v = torch.randn(b, H, N, 4, generator=gen)
    ei = torch.randint(0, N - 1, (2, 80), generator=gen)  # target N - 1 has no in-edge
    pad = torch.zeros(b, N, dtype=torch.bool)
    pad[1, :3] = True
    graph = Graph.from_edge_index(ei, N).pad(key_padding_mask=pad)
    bias = torch.randn(b, 80, H, generator=gen)
    bias[:, :5] = -math.inf
    k[1, :, 0] = math.nan  # a padded source: sends nothing
    k[0, :, 7] = math.nan  # a real source: its targets' outputs are NaN, the others finite
    kw = {"score": None if score == "dot" else GAT(), "attn_bias": bias, "backend": "edges"}

    def f(q, k, v):
        return graph_attention(q, k, v, graph, **kw)

    inputs = [t.requires_grad_() for t in (q, k, v)]
    ref = f(*inputs)
    out = torch.compile(f, backend="aot_eager", fullgraph=True)(*inputs)
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL, equal_nan=True)
    assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().any()
    assert (out[:, :, N - 1] == 0).all()
    keep = ~ref.isnan()
    g_ref = torch.autograd.grad(ref[keep].sum(), inputs[2])[0]
    g_out = torch.autograd.grad(out[keep].sum(), inputs[2])[0]
    # the NaN source's own value gradient (NaN weights x zero gradients) is left out
    torch.testing.assert_close(g_out[1], g_ref[1], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(g_out[0, :, 8:], g_ref[0, :, 8:], rtol=RTOL, atol=ATOL)


def test_compiled_edge_index_out_of_range_raises(gen):
    ga = GraphAttention(C, H, backend="edges")
    f = torch.compile(ga, backend="aot_eager", fullgraph=True)
    x = torch.randn(N, C, generator=gen)
    ei = torch.randint(0, N, (2, 30), generator=gen)
    torch.testing.assert_close(f(x, ei), ga(x, ei), rtol=RTOL, atol=ATOL)
    with pytest.raises(RuntimeError, match="edge_index has an index out of range"):
        f(x, ei + N)


# ---------------------------------------------------------------------------- recompiles
@pytest.mark.parametrize("mark", [True, False])
def test_changing_graph_does_not_recompile_every_step(mark, gen):
    """A new edge_index (a different E) each step: one compile when E is marked dynamic;
    one compile and one recompile (Dynamo's automatic dynamic shapes) when it is not."""
    ga = GraphAttention(C, H, backend="edges")
    counter = CompileCounter()
    f = torch.compile(ga, backend=counter, fullgraph=True)
    x = torch.randn(2, N, C, generator=gen)
    for step in range(4):
        ei = torch.randint(0, N, (2, 40 + 7 * step), generator=gen)
        if mark:
            torch._dynamo.mark_dynamic(ei, 1)
        torch.testing.assert_close(f(x, ei), ga(x, ei), rtol=RTOL, atol=ATOL)
    assert counter.frame_count == (1 if mark else 2)


# ---------------------------------------------------------------------------- export, ONNX
class _Net(torch.nn.Module):
    """Attention over a window or grid graph built in forward, or an edge list given."""

    def __init__(self, kind: str, backend: str) -> None:
        super().__init__()
        self.kind = kind
        self.attn = GraphAttention(C, H, backend=backend)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[1]
        if self.kind == "window":
            return self.attn(x, Graph.window(n, 2))
        if self.kind == "grid":
            return self.attn(x, Graph.grid(4, n // 4, 1))
        if self.kind == "causal":
            return self.attn(x, Graph.causal(n))
        return self.attn(x, edge_index)


def _args(kind: str, gen: torch.Generator, e: int = 60) -> tuple[torch.Tensor, ...]:
    x = torch.randn(2, N, C, generator=gen)
    if kind != "edges":
        return (x,)
    return x, torch.randint(0, N, (2, e), generator=gen)


def _dynamic(kind: str, backend: str = "edges"):
    """A symbolic edge count for edge lists on the edge backend (``auto`` picks its backend
    by the graph's density, so an exported ``auto`` program holds for one ``E``)."""
    if kind != "edges" or backend != "edges":
        return None
    return ({}, {1: torch.export.Dim("E", min=2, max=1 << 20)})


@pytest.mark.parametrize("backend", ["edges", "auto"])
@pytest.mark.parametrize("kind", ["window", "grid", "edges", "causal"])
def test_torch_export_matches_eager(kind, backend, gen):
    net = _Net(kind, backend).eval()
    args = _args(kind, gen)
    exported = torch.export.export(net, args, dynamic_shapes=_dynamic(kind, backend))
    torch.testing.assert_close(exported.module()(*args), net(*args), rtol=RTOL, atol=ATOL)
    if _dynamic(kind, backend) is not None:  # another edge list, another E: one program
        other = _args(kind, gen, e=97)
        torch.testing.assert_close(exported.module()(*other), net(*other), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["window", "grid", "edges"])
def test_onnx_matches_eager(kind, gen, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the dev extra")
    pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")
    net = _Net(kind, "edges").eval()
    args = _args(kind, gen)
    program = torch.onnx.export(
        net, args, dynamo=True, dynamic_shapes=_dynamic(kind), verbose=False
    )
    path = tmp_path / f"{kind}.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for call in [args] + ([_args(kind, gen, e=97)] if kind == "edges" else []):
        feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), call, strict=True)}
        (out,) = session.run(None, feeds)
        torch.testing.assert_close(torch.from_numpy(out), net(*call), rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------- graph pieces
def test_compact_is_boolean_indexing(gen):
    x = torch.randint(0, 100, (2, 50), generator=gen)
    valid = torch.rand(50, generator=gen) < 0.4
    assert torch.equal(_compact(x, valid, int(valid.sum())), x[:, valid])


@pytest.mark.parametrize(("h", "w", "r"), [(4, 6, 1), (3, 5, 2), (1, 7, 3), (5, 2, 9)])
def test_grid_edge_index_is_its_mask_in_order(h, w, r):
    graph = Graph.grid(h, w, r)
    expected = graph.materialize_structure().nonzero().t().flip(0)
    assert torch.equal(graph.edge_index(), expected)
    assert graph.edge_index().shape[1] == graph.num_edges


@pytest.mark.parametrize(
    "graph", [Graph.window(9, 2), Graph.window(9, 3, causal=True), Graph.grid(3, 4, 1),
              Graph.causal(7), Graph.complete(5, 3)],
    ids=repr,
)  # fmt: skip
def test_traced_edge_index_is_eager_edge_index(graph):
    """What compiled code builds (static shapes, no nonzero) is eager's edge list."""
    fresh = copy.copy(graph)
    fresh._cache = {}
    traced = torch.compile(lambda: fresh.edge_index() + 0, backend="eager", fullgraph=True)()
    assert torch.equal(traced, graph.edge_index())

"""Every backend on a CUDA device against the float64 CPU edge path on the same inputs
(forward, backward, weights), and the layers and doors users call on CUDA against their
peers there (``nn.MultiheadAttention``, PyG's convolutions). Skipped where no CUDA device
is present; run on a lent GPU with ``pytest tests/test_cuda.py tests/test_fused.py``."""

from __future__ import annotations

import pytest
import torch
from conftest import random_edge_index

from graphattn import (
    BackendNotSupportedError,
    Graph,
    GraphTransformer,
    MultiheadAttention,
    graph_attention,
    graph_attention_with_weights,
    kernels,
    scores,
)
from graphattn.backends import backend_names

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here (these tests need a GPU)"
)

CUDA = "cuda"


def _graphs() -> dict[str, Graph]:
    gen = torch.Generator().manual_seed(0)
    blocks = torch.cat(
        [
            torch.cartesian_prod(torch.arange(a, b), torch.arange(a, b)).T
            for a, b in ((0, 5), (5, 12), (12, 20))
        ],
        1,
    )
    return {
        "complete": Graph.complete(20),
        "causal": Graph.causal(20),
        "window": Graph.window(20, 3),
        "grid": Graph.grid(4, 5),
        "random": Graph.from_edge_index(random_edge_index(20, 20, 90, gen), 20),
        "bipartite": Graph.from_edge_index(random_edge_index(20, 13, 60, gen), 20, 13),
        "blocks": Graph.from_edge_index(blocks, 20),
        "padded": Graph.from_edge_index(random_edge_index(20, 20, 90, gen), 20).pad(
            lengths=[14, 0]
        ),
    }


def _score(kind: str, h: int, d: int):
    if kind == "dot":
        return scores.DotProduct(), d
    if kind == "gat":
        return scores.GAT(0.2), 1
    return scores.GATv2(torch.randn(h, d, dtype=torch.float64)), d


def _run(graph, kind, backend, device, dtype, inputs):
    score, _ = _score(kind, 2, 4)
    if isinstance(score, scores.GATv2):
        score = scores.GATv2(inputs["att"].to(device, dtype).detach().requires_grad_())
    leaves = {
        name: t.to(device, dtype).detach().requires_grad_()
        for name, t in inputs.items()
        if name != "att"
    }
    out = graph_attention(
        leaves["q"],
        leaves["k"],
        leaves["v"],
        graph.to(device),
        score=score,
        attn_bias=leaves["bias"],
        backend=backend,
    )
    out.backward(inputs["grad"].to(device, dtype))
    grads = [leaves[n].grad for n in ("q", "k", "v", "bias")] + list(
        t.grad for t in score.tensors()
    )
    return out.detach().cpu().double(), [g.cpu().double() for g in grads]


@pytest.mark.parametrize("kind", ["dot", "gat", "gatv2"])
@pytest.mark.parametrize("graph_name", list(_graphs()))
def test_every_backend_on_cuda_equals_the_cpu_edge_path(graph_name, kind):
    graph = _graphs()[graph_name]
    gen = torch.Generator().manual_seed(1)
    _, dk = _score(kind, 2, 4)
    b, h = 2, 2
    inputs = {
        "q": torch.randn(b, h, graph.num_dst, dk, generator=gen, dtype=torch.float64),
        "k": torch.randn(b, h, graph.num_src, dk, generator=gen, dtype=torch.float64),
        "v": torch.randn(b, h, graph.num_src, 3, generator=gen, dtype=torch.float64),
        "bias": torch.randn(graph.num_edges, h, generator=gen, dtype=torch.float64),
        "att": torch.randn(h, dk, generator=gen, dtype=torch.float64),
        "grad": torch.randn(b, h, graph.num_dst, 3, generator=gen, dtype=torch.float64),
    }
    ref_out, ref_grads = _run(graph, kind, "edges", "cpu", torch.float64, inputs)
    served = []
    for backend in backend_names():
        for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 2e-4)):
            try:
                out, grads = _run(graph, kind, backend, CUDA, dtype, inputs)
            except BackendNotSupportedError:
                continue
            served.append((backend, dtype))
            torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol, msg=backend)
            for g, r in zip(grads, ref_grads, strict=True):
                torch.testing.assert_close(g, r, rtol=tol, atol=tol, msg=backend)
    names = {b for b, _ in served}
    assert "edges" in names and "fused" in names, served
    if kind == "dot" and graph_name in ("complete", "causal", "window", "grid"):
        assert "dense" in names, served


def test_cuda_weights_and_no_edge_rows():
    graph = Graph.from_edge_index(torch.tensor([[0, 1, 2], [1, 1, 3]]), 5).to(CUDA)
    q = torch.randn(1, 2, 5, 4, device=CUDA)
    for backend in ("edges", "dense"):
        res = graph_attention_with_weights(q, q, q, graph, backend=backend)
        assert torch.isfinite(res.out).all()
        assert (res.out[:, :, [0, 2, 4]] == 0).all()  # no in-edges: a zero message
    out = graph_attention(q, q, q, graph, backend="fused")
    assert (out[:, :, [0, 2, 4]] == 0).all()


def test_multihead_attention_matches_torch_on_cuda():
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(32, 4, batch_first=True).to(CUDA)
    ours = MultiheadAttention(32, 4, batch_first=True).to(CUDA)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 17, 32, device=CUDA)
    mask = torch.zeros(3, 17, dtype=torch.bool, device=CUDA)
    mask[1, 10:] = True
    a, wa = ref(x, x, x, key_padding_mask=mask)
    b, wb = ours(x, x, x, key_padding_mask=mask)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(wb, wa, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["GATConv", "GATv2Conv", "TransformerConv"])
def test_pyg_convs_match_on_cuda(name):
    pyg_nn = pytest.importorskip("torch_geometric.nn")
    import graphattn

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    peer = getattr(pyg_nn, name)(16, 8, heads=4).to(CUDA).eval()
    ours = graphattn.from_pyg(peer).eval()
    x = torch.randn(300, 16, generator=gen).to(CUDA)
    ei = random_edge_index(300, 300, 3000, gen).to(CUDA)
    torch.testing.assert_close(ours(x, ei), peer(x, ei), rtol=1e-4, atol=1e-5)


def test_graph_transformer_trains_on_cuda():
    torch.manual_seed(0)
    model = GraphTransformer(2, 32, 4, dim_feedforward=64, dropout=0.0).to(CUDA)
    graph = Graph.window(64, 4).to(CUDA)
    x = torch.randn(2, 64, 32, device=CUDA)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    losses = []
    for _ in range(5):
        out = model(x, graph)
        out = out if isinstance(out, torch.Tensor) else out.out
        loss = (out - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_linear_attention_on_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 50, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    score = kernels.SGFormer()
    outs = [
        graph_attention(
            *(t.to(device) for t in (q, k, v)),
            Graph.complete(50).to(device),
            score=score,
            backend="linear",
        ).cpu()
        for device in ("cpu", CUDA)
    ]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-9, atol=1e-9)

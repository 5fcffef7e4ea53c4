"""The fused kernels against the pure-torch edge path: forward, backward and every input
(bias, padding, edge features and values, duplicates, isolated targets, bipartite sizes, a
hub with 10^5 in-edges), float64 gradcheck, dropout, half precision, and the refusal and
fallback when the kernel cannot be built.

Each test that takes ``device`` runs once per kernel: ``cpp`` (the C++ kernel on CPU) and
``triton`` (the Triton kernel: on CUDA where a device is present, else in Triton's
interpreter on CPU, which runs the same kernel code one program at a time; skipped where
Triton is not installed).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import random_edge_index
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from graphattn import (
    BackendNotSupportedError,
    Graph,
    auto_policy,
    graph_attention,
    graph_attention_with_weights,
    scores,
)
from graphattn.backends import fused as fused_mod

# Triton's interpreter computes with numpy, which warns on the NaN the tests feed in
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
F64 = torch.float64
_TRITON = "graphattn.backends._fused_triton"


def _interpreted_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve CPU tensors with the Triton kernels run by Triton's interpreter (conftest sets
    ``TRITON_INTERPRET=1`` for sessions without a GPU)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("TRITON_INTERPRET=1 was not set when Triton was imported (see conftest)")
    import triton.runtime.interpreter as interpreter

    if not getattr(interpreter, "_graphattn_patched", False):
        # Triton 3.6's interpreter turns a loaded scalar (a 1-element array) into a loop
        # bound with int(array), which numpy >= 2.5 refuses: read its one element instead.
        patch = interpreter._patch_lang_tensor

        def patched(tensor, scope):
            patch(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda t: int(t.handle.data.reshape(-1)[0]))

        interpreter._patch_lang_tensor = patched
        interpreter._graphattn_patched = True
    from graphattn.backends import _fused_triton

    monkeypatch.setattr(fused_mod, "_kernels", lambda device: (_fused_triton, None))


@pytest.fixture(params=["cpp", "triton"])
def device(request, monkeypatch) -> str:
    """The device whose kernel the test runs (see the module's docstring)."""
    if request.param == "cpp":
        ext, why = fused_mod.fused_extension()
        if ext is None:
            pytest.skip(f"the fused C++ kernel is not available here: {why}")
        return "cpu"
    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed (its kernels run on CUDA, or in its interpreter)")
    if torch.cuda.is_available():
        mod, why = fused_mod.triton_kernels()
        if mod is None:
            pytest.skip(f"the Triton kernel is not available here: {why}")
        return "cuda"
    _interpreted_triton(monkeypatch)
    return "cpu"


@pytest.fixture(scope="module")
def kernel():
    """The C++ kernel alone (tests of what only it serves: dropout, the build's fallback)."""
    ext, why = fused_mod.fused_extension()
    if ext is None:
        pytest.skip(f"the fused C++ kernel is not available here: {why}")
    return ext


def _score(kind: str, h: int, d: int, gen, dtype=F64, device="cpu"):
    if kind == "dot":
        return scores.DotProduct(), d
    if kind == "gat":
        return scores.GAT(0.2), 1
    att = torch.randn(h, d, generator=gen, dtype=dtype).to(device).requires_grad_()
    return scores.GATv2(att), d


def _compare(
    graph,
    kind,
    gen,
    device="cpu",
    *,
    b=2,
    h=3,
    d=4,
    dv=5,
    bias=False,
    ef=False,
    ev=False,
    dtype=F64,
    atol=1e-12,
):
    score, dk = _score(kind, h, d, gen, dtype, device)
    graph = graph.to(device)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device).requires_grad_()

    e = graph.num_edges
    t = {
        "q": rand(b, h, graph.num_dst, dk),
        "k": rand(b, h, graph.num_src, dk),
        "v": rand(b, h, graph.num_src, dv),
        "bias": rand(e, h) if bias else None,  # (E, H): never read as a dense bias
        "edge_features": rand(1, e, h, 1 if kind == "gat" else dk) if ef else None,
        "edge_values": rand(1, e, h, dv) if ev else None,
    }
    leaves = [x for x in t.values() if x is not None] + list(score.tensors())
    results = {}
    for backend in ("edges", "fused"):
        out = graph_attention(
            t["q"],
            t["k"],
            t["v"],
            graph,
            score=score,
            attn_bias=t["bias"],
            edge_features=t["edge_features"],
            edge_values=t["edge_values"],
            backend=backend,
        )
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
        grad = grad.to(device)
        results[backend] = (out, torch.autograd.grad(out, leaves, grad, allow_unused=True))
    (o1, g1), (o2, g2) = results["edges"], results["fused"]
    torch.testing.assert_close(o2, o1, rtol=0, atol=atol)
    for a, b_ in zip(g2, g1, strict=True):
        if b_ is None:
            assert a is None or not a.abs().max() > 0
        else:
            torch.testing.assert_close(a, b_, rtol=0, atol=atol)


GRAPHS = {
    "dups_selfloops_isolated": lambda: Graph.from_edge_index(
        torch.tensor([[0, 0, 2, 4, 1, 3, 1], [1, 1, 2, 0, 0, 1, 2]]), 6
    ),
    "bipartite": lambda: Graph.from_edge_index(
        torch.tensor([[0, 5, 5, 2, 3, 1], [0, 0, 0, 2, 2, 3]]), num_dst=4, num_src=6
    ),
    "random": lambda: Graph.from_edge_index(
        random_edge_index(9, 7, 60, torch.Generator().manual_seed(1)), 9, 7
    ),
    "window": lambda: Graph.window(8, 2),
    "complete": lambda: Graph.complete(5, 4),
}


@pytest.mark.parametrize("graph_name", list(GRAPHS))
@pytest.mark.parametrize("kind", ["dot", "gat", "gatv2"])
def test_equals_the_edge_path(device, kind, graph_name, gen):
    _compare(GRAPHS[graph_name](), kind, gen, device)
    _compare(GRAPHS[graph_name](), kind, gen, device, bias=True, ef=True, ev=True)


@pytest.mark.parametrize("width", [8, 5])  # 8: the fixed-width vector paths on CPU
@pytest.mark.parametrize("kind", ["dot", "gat", "gatv2"])
def test_rows_of_one_projection(device, kind, width, gen):
    """q, k and v as views of one projection's output (a node's query, key and value side by
    side, as GraphAttention makes them): the C++ kernel reads the rows in place, and gives
    the edge path's outputs and gradients."""
    n, h = 40, 8
    dk = 1 if kind == "gat" else width
    score, _ = _score(kind, h, width, gen, torch.float32, device)
    graph = Graph.from_edge_index(random_edge_index(n, n, 300, gen), n).to(device)
    proj = torch.randn(1, n, h * (2 * dk + width), generator=gen).to(device).requires_grad_()
    q, k, v = proj.split([h * dk, h * dk, h * width], -1)  # (1, N, H * .) views
    q, k, v = (x.unflatten(-1, (h, -1)).transpose(1, 2) for x in (q, k, v))  # (1, H, N, .)
    grad = torch.randn(1, h, n, width, generator=gen).to(device)
    res = {}
    for backend in ("edges", "fused"):
        out = graph_attention(q, k, v, graph, score=score, backend=backend)
        res[backend] = (out, torch.autograd.grad(out, proj, grad)[0])
    torch.testing.assert_close(res["fused"][0], res["edges"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res["fused"][1], res["edges"][1], rtol=1e-5, atol=1e-5)
    rows = fused_mod._rows(q.permute(2, 0, 1, 3).reshape(n, h, dk), strided=True)
    assert rows.stride(0) == proj.shape[-1]  # the C++ kernel reads the projection's rows


@pytest.mark.parametrize("kind", ["dot", "gat", "gatv2"])
def test_padding_and_fully_padded_sample(device, kind, gen):
    graph = GRAPHS["random"]().pad(lengths=[4, 0])
    _compare(graph, kind, gen, device, bias=True)
    q = torch.randn(2, 3, 9, 1 if kind == "gat" else 4, generator=gen).to(device)
    v = torch.randn(2, 3, 7, 5, generator=gen).to(device)
    score, _ = _score(kind, 3, 4, gen, torch.float32, device)
    out = graph_attention(q, q[:, :, :7], v, graph.to(device), score=score, backend="fused")
    assert torch.isfinite(out).all() and (out[1] == 0).all()


def test_hub_with_100k_in_edges(device, gen, request):
    """A star: target 0 receives 10^5 edges, the others a few; float32 against the edge path."""
    if request.node.callspec.params["device"] == "triton" and device == "cpu":
        pytest.skip("Triton's interpreter runs 10^5 programs one at a time: too slow here")
    n = 100_001
    hub = torch.stack([torch.arange(1, n), torch.zeros(n - 1, dtype=torch.long)])
    rest = torch.stack(
        [torch.randint(0, n, (3 * n,), generator=gen), torch.randint(1, n, (3 * n,), generator=gen)]
    )
    graph = Graph.from_edge_index(torch.cat([hub, rest], 1), n)
    _compare(graph, "gat", gen, device, b=1, h=2, d=2, dv=3, dtype=torch.float32, atol=2e-5)


@st.composite
def problems(draw):
    nd, ns = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    e = draw(st.integers(0, 30))
    src = draw(st.lists(st.integers(0, ns - 1), min_size=e, max_size=e))
    dst = draw(st.lists(st.integers(0, nd - 1), min_size=e, max_size=e))
    return {
        "ei": torch.tensor([src, dst], dtype=torch.long).view(2, -1),
        "nd": nd,
        "ns": ns,
        "kind": draw(st.sampled_from(["dot", "gat", "gatv2"])),
        "b": draw(st.integers(1, 2)),
        "h": draw(st.integers(1, 3)),
        "d": draw(st.integers(1, 4)),
        "bias": draw(st.booleans()),
        "ef": draw(st.booleans()),
        "ev": draw(st.booleans()),
        "lengths": draw(st.none() | st.lists(st.integers(0, ns), min_size=2, max_size=2)),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(p=problems())
def test_random_graphs(device, p):
    graph = Graph.from_edge_index(p["ei"], p["nd"], p["ns"])
    if p["lengths"] is not None:
        graph = graph.pad(lengths=p["lengths"][: p["b"]])
    _compare(
        graph,
        p["kind"],
        torch.Generator().manual_seed(p["seed"]),
        device,
        b=p["b"],
        h=p["h"],
        d=p["d"],
        bias=p["bias"],
        ef=p["ef"],
        ev=p["ev"],
    )


@pytest.mark.parametrize("kind", ["dot", "gat", "gatv2"])
def test_gradcheck(device, kind, gen):
    graph = GRAPHS["dups_selfloops_isolated"]().pad(lengths=[4]).to(device)
    score, dk = _score(kind, 2, 2, gen, device=device)
    e = graph.num_edges

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64).to(device).requires_grad_()

    inputs = [
        rand(1, 2, 6, dk),
        rand(1, 2, 6, dk),
        rand(1, 2, 6, 2),
        rand(1, e, 2),
        rand(e, 2, 1 if kind == "gat" else dk),
        rand(e, 2, 2),
        *score.tensors(),
    ]

    def fn(q, k, v, bias, ef, ev, *att):
        sc = scores.GATv2(att[0]) if kind == "gatv2" else score
        return graph_attention(
            q,
            k,
            v,
            graph,
            score=sc,
            attn_bias=bias,
            edge_features=ef,
            edge_values=ev,
            backend="fused",
        )

    assert gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-8)


def test_dropout(kernel, gen):
    graph = GRAPHS["random"]()
    q, k, v = (torch.randn(1, 2, n, 3, generator=gen, dtype=F64) for n in (9, 7, 7))
    plain = graph_attention(q, k, v, graph, backend="fused")
    torch.manual_seed(0)
    a = graph_attention(q, k, v, graph, dropout_p=0.5, backend="fused")
    torch.manual_seed(0)
    b = graph_attention(q, k, v, graph, dropout_p=0.5, backend="fused")
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # the seed comes from torch's generator
    assert not torch.allclose(a, plain)
    many = graph_attention(
        q.expand(4000, -1, -1, -1),
        k.expand(4000, -1, -1, -1),
        v.expand(4000, -1, -1, -1),
        graph,
        dropout_p=0.25,
        backend="fused",
    )
    torch.testing.assert_close(many.mean(0, keepdim=True), plain, rtol=0, atol=0.05)
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

    def fn(q, k, v):
        torch.manual_seed(3)
        return graph_attention(q, k, v, graph, dropout_p=0.4, backend="fused")

    assert gradcheck(fn, (qg, kg, vg), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_runs_in_float32(device, half, gen):
    graph = GRAPHS["random"]().to(device)
    q, k, v = (torch.randn(2, 2, n, 4, generator=gen).to(device) for n in (9, 7, 7))
    ref = graph_attention(q, k, v, graph, backend="fused")
    low = [t.to(half).requires_grad_() for t in (q, k, v)]
    out = graph_attention(*low, graph, backend="fused")
    assert out.dtype == half
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    out.sum().backward()
    assert all(t.grad.dtype == half and torch.isfinite(t.grad).all() for t in low)


def test_refusals(device, gen):
    graph = GRAPHS["random"]().to(device)
    q = torch.randn(1, 2, 9, 3, generator=gen).to(device)
    k = torch.randn(1, 2, 7, 3, generator=gen).to(device)
    with pytest.raises(BackendNotSupportedError, match=r"fused: .*returns no weights"):
        graph_attention_with_weights(q, k, k, graph, backend="fused")
    with pytest.raises(BackendNotSupportedError, match=r"fused: score Custom.*not served"):
        graph_attention(q, k, k, graph, score=lambda a, b, e: (a * b).sum(-1), backend="fused")


def test_auto_prefers_the_kernel_for_big_calls(kernel, gen, monkeypatch):
    graph = Graph.from_edge_index(random_edge_index(200, 200, 400, gen), 200)  # sparse
    q = torch.randn(1, 2, 200, 3, generator=gen)
    monkeypatch.setattr(auto_policy, "fused_min_work", 1)
    assert auto_policy.order(graph, 3, 2)[:2] == ["fused", "edges"]
    res = graph_attention_with_weights(q, q, q, graph)  # weights: the edge path
    assert res.backend == "edges"
    torch.testing.assert_close(
        graph_attention(q, q, q, graph), graph_attention(q, q, q, graph, backend="edges")
    )
    monkeypatch.setattr(auto_policy, "fused_min_work", 10**12)
    assert auto_policy.order(graph, 3, 2)[0] == "edges"


def test_no_compiler_falls_back_with_one_warning(gen, monkeypatch):
    """When the build fails the backend refuses with the reason, auto runs the pure-torch
    edge path, and the warning is given once."""
    import torch.utils.cpp_extension as cpp

    def fail(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(fused_mod, "_STATE", {})
    monkeypatch.setattr(cpp, "load", fail)
    monkeypatch.setattr(auto_policy, "fused_min_work", 1)
    graph = Graph.from_edge_index(random_edge_index(200, 200, 400, gen), 200)  # sparse
    q = k = torch.randn(1, 2, 200, 3, generator=gen)
    with pytest.warns(RuntimeWarning, match=r"could not be built \(Ninja is required"):
        out = graph_attention(q, k, k, graph)
    torch.testing.assert_close(out, graph_attention(q, k, k, graph, backend="edges"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        graph_attention(q, k, k, graph)
    with pytest.raises(BackendNotSupportedError, match=r"fused: the C\+\+ kernel could not be"):
        graph_attention(q, k, k, graph, backend="fused")


_NO_COMPILER_PROBE = """
import warnings
import torch
from graphattn import Graph, graph_attention
from graphattn.backends import BackendNotSupportedError

gen = torch.Generator().manual_seed(0)
graph = Graph.from_edge_index(torch.randint(0, 300, (2, 2000), generator=gen), 300, 300)
q, k, v = (torch.randn(1, 2, 300, 8, generator=gen, requires_grad=True) for _ in range(3))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = graph_attention(q, k, v, graph)  # auto
    graph_attention(q, k, v, graph)
    out.sum().backward()
told = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
assert len(told) == 1 and "could not be built" in told[0], told
torch.testing.assert_close(out, graph_attention(q, k, v, graph, backend="edges"))
try:
    graph_attention(q, k, v, graph, backend="fused")
except BackendNotSupportedError as err:
    assert "could not be built" in str(err), err
else:
    raise AssertionError("fused served a call without its kernel")
print("fell back")
"""


@pytest.mark.skipif(not os.path.exists("/bin/false"), reason="needs /bin/false as a compiler")
def test_a_real_failed_build_falls_back_in_a_fresh_process(tmp_path):
    """Not a mock: a fresh process whose compiler fails (CXX=/bin/false, an empty extension
    directory) warns once, serves auto through the pure-torch edge path with its numbers,
    gradients included, and refuses backend="fused" with the build's reason."""
    env = {k: v for k, v in os.environ.items() if k not in ("GRAPHATTN_FUSED",)}
    env.update(CXX="/bin/false", TORCH_EXTENSIONS_DIR=str(tmp_path / "extensions"))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", _NO_COMPILER_PROBE], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fell back" in done.stdout


def test_each_copy_of_the_kernel_source_builds_under_its_own_name(kernel):
    """The module name is keyed by the source file's path: two checkouts keep two builds
    instead of rebuilding each other's; the loaded kernel carries this copy's name."""
    name = fused_mod._extension_name
    here, there = "/a/graphattn/backends/_fused_cpu.cpp", "/b/graphattn/backends/_fused_cpu.cpp"
    assert name(here) == name(here) != name(there)
    assert name(here).isidentifier() and name(here).startswith("graphattn_fused_cpu_v2_")
    source = os.path.join(os.path.dirname(os.path.abspath(fused_mod.__file__)), "_fused_cpu.cpp")
    assert kernel.__name__ == name(source)


def test_the_kernel_builds_where_a_compiler_is_found():
    """Every test of the kernel skips where it cannot be built, so a compile error in the
    source would read as a row of skips: where a C++ compiler and ninja are found (and the
    kernel is not turned off), the build must succeed."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        pytest.skip(f"no C++ compiler ({compiler!r}) on PATH: the kernel is optional")
    if shutil.which("ninja") is None and importlib.util.find_spec("ninja") is None:
        pytest.skip("no ninja (the [fused] extra) to build with: the kernel is optional")
    if os.environ.get("GRAPHATTN_FUSED", "1") == "0":
        pytest.skip("the kernel is turned off here (GRAPHATTN_FUSED=0)")
    ext, why = fused_mod.fused_extension()
    assert ext is not None, why


def test_a_failed_build_names_the_compiler_error():
    """The fallback's reason quotes the compiler's first error line, not torch's header."""
    err = RuntimeError(
        "Error building extension 'graphattn_fused_cpu_v2_0123456789': [1/2] c++ -MMD ...\n"
        "FAILED: _fused_cpu.o\n"
        "/x/_fused_cpu.cpp:188:48: error: 'GetDefaultCPUAllocator' is not a member of 'c10'\n"
        "/x/_fused_cpu.cpp:190:1: error: expected ';'\n"
    )
    assert fused_mod.build_error(err) == (
        "/x/_fused_cpu.cpp:188:48: error: 'GetDefaultCPUAllocator' is not a member of 'c10'"
    )
    assert fused_mod.build_error(OSError("no such file: ninja")) == "no such file: ninja"
    assert fused_mod.build_error(RuntimeError()) == "RuntimeError"
    assert len(fused_mod.build_error(RuntimeError("x" * 1000))) == 300


def test_disabled_by_environment(gen, monkeypatch):
    monkeypatch.setattr(fused_mod, "_STATE", {})
    monkeypatch.setenv("GRAPHATTN_FUSED", "0")
    q = torch.randn(1, 2, 9, 3, generator=gen)
    k = torch.randn(1, 2, 7, 3, generator=gen)
    with pytest.raises(BackendNotSupportedError, match=r"disabled by GRAPHATTN_FUSED=0"):
        graph_attention(q, k, k, GRAPHS["random"](), backend="fused")


@pytest.mark.parametrize("kind", ["dot", "gat", "gatv2"])
def test_non_finite_inputs_follow_the_edge_path(device, kind, gen):
    """NaN and inf in queries, keys, values and -inf biases give what the edge path gives:
    NaN exactly on the targets the bad inputs reach, zero rows where every edge is removed."""
    graph = GRAPHS["random"]().to(device)
    score, dk = _score(kind, 2, 3, gen, torch.float32, device)
    q = torch.randn(1, 2, 9, dk, generator=gen)
    k = torch.randn(1, 2, 7, dk, generator=gen)
    v = torch.randn(1, 2, 7, 4, generator=gen)
    q[0, 0, 1] = float("nan")
    k[0, 1, 2] = float("nan")
    v[0, 0, 5] = float("inf")
    bias = torch.randn(graph.num_edges, 2, generator=gen)
    bias[::3] = float("-inf")
    q, k, v, bias = (t.to(device) for t in (q, k, v, bias))
    outs = [
        graph_attention(q, k, v, graph, score=score, attn_bias=bias, backend=b)
        for b in ("edges", "fused")
    ]
    torch.testing.assert_close(outs[1], outs[0], equal_nan=True, rtol=1e-5, atol=1e-5)
    assert outs[0].isnan().any() and not outs[0].isnan().all()


def test_triton_refuses_dropout_on_cuda(device, gen):
    if device != "cuda":
        pytest.skip("the dropout refusal is the Triton kernel's on CUDA")
    q = torch.randn(1, 2, 9, 3, generator=gen, device="cpu").to(device)
    k = torch.randn(1, 2, 7, 3, generator=gen, device="cpu").to(device)
    graph = GRAPHS["random"]().to(device)
    with pytest.raises(BackendNotSupportedError, match=r"fused: the Triton kernel serves no"):
        graph_attention(q, k, k, graph, dropout_p=0.1, backend="fused")
    out = graph_attention(q, k, k, graph, dropout_p=0.1)  # auto: the edge path serves it
    assert out.shape == (1, 2, 9, 3)


def test_no_triton_is_a_reason_not_an_error(monkeypatch):
    monkeypatch.setattr(fused_mod, "_STATE", {})
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton raises ImportError
    monkeypatch.delitem(sys.modules, _TRITON, raising=False)
    monkeypatch.delattr(sys.modules["graphattn.backends"], "_fused_triton", raising=False)
    mod, why = fused_mod.triton_kernels()
    assert mod is None and why.startswith("Triton is not installed")
    assert fused_mod._kernels(torch.device("cuda")) == (None, why)


@pytest.fixture
def huge_pages(kernel):
    """The C++ kernel with every row tensor copied into huge pages (threshold 0 bytes)."""
    before = kernel.huge_pages()
    kernel.set_huge_pages(0)
    yield kernel
    kernel.set_huge_pages(before)


@pytest.mark.parametrize("graph_name", list(GRAPHS))
@pytest.mark.parametrize("kind", ["dot", "gat", "gatv2"])
def test_huge_pages_equal_the_edge_path(huge_pages, kind, graph_name, gen):
    """Rows in huge pages (the sources' keys and values, the packed target rows, the
    outputs and gradients) give the edge path's numbers, bipartite included."""
    _compare(GRAPHS[graph_name](), kind, gen, bias=True, ef=True, ev=True)


@pytest.mark.parametrize("kind", ["dot", "gat", "gatv2"])
def test_huge_pages_change_no_bit(kernel, kind, gen):
    """The same call with and without the copies gives bitwise the same outputs and
    gradients, also where only some inputs need a gradient (then q is not copied)."""
    graph = Graph.from_edge_index(random_edge_index(30, 30, 400, gen), 30)
    score, dk = _score(kind, 4, 8, gen, torch.float32)
    base = [torch.randn(1, 4, 30, w, generator=gen) for w in (dk, dk, 8)]
    grad = torch.randn(1, 4, 30, 8, generator=gen)
    before = kernel.huge_pages()
    for wants in ([True, True, True], [True, False, False], [False, False, True]):
        res = []
        for threshold in (-1, 0):
            kernel.set_huge_pages(threshold)
            try:
                leaves = [x.clone().requires_grad_(w) for x, w in zip(base, wants, strict=True)]
                out = graph_attention(*leaves, graph, score=score, backend="fused")
                need = [x for x in leaves if x.requires_grad]
                res.append([out, *torch.autograd.grad(out, need, grad)])
            finally:
                kernel.set_huge_pages(before)
        for a, b in zip(*res, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_huge_pages_gradcheck(huge_pages, gen):
    graph = GRAPHS["bipartite"]()
    q, k, v = (
        torch.randn(1, 2, n, 3, generator=gen, dtype=F64).requires_grad_() for n in (4, 6, 6)
    )

    def fn(q, k, v):
        return graph_attention(q, k, v, graph, backend="fused")

    assert gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-8)


def test_paged_rows(kernel, gen):
    """paged_rows: the rows side by side in one buffer, starting 64 bytes past a 2 MiB page
    (Linux), each padded to whole 64-byte lines, as views; the tensors themselves under the
    threshold; a clear error for rows of different lengths."""
    k, v = torch.randn(50, 2, 3, generator=gen), torch.randn(50, 2, 5, generator=gen)
    before = kernel.huge_pages()
    try:
        kernel.set_huge_pages(-1)
        same = kernel.paged_rows([k, v])
        assert same[0].data_ptr() == k.data_ptr() and same[1].data_ptr() == v.data_ptr()
        kernel.set_huge_pages(k.nbytes + v.nbytes + 1)
        assert kernel.paged_rows([k, v])[0].data_ptr() == k.data_ptr()
        kernel.set_huge_pages(k.nbytes + v.nbytes)
        pk, pv = kernel.paged_rows([k, v])
        with pytest.raises(RuntimeError, match="paged_rows"):
            kernel.paged_rows([k, v[:49]])
        k7 = torch.randn(50, 2, 4, generator=gen)  # rows of 6 + 8 floats: padded to 16
        kernel.set_huge_pages(0)
        p3, p7 = kernel.paged_rows([k, k7])
    finally:
        kernel.set_huge_pages(before)
    torch.testing.assert_close(p7, k7, rtol=0, atol=0)
    assert p3.stride(0) == p7.stride(0) == 16  # every row on its own 64-byte lines
    torch.testing.assert_close(pk, k, rtol=0, atol=0)
    torch.testing.assert_close(pv, v, rtol=0, atol=0)
    assert pk.stride() == (16, 3, 1) and pv.stride() == (16, 5, 1)
    assert pv.data_ptr() - pk.data_ptr() == 6 * 4  # a node's rows side by side
    if sys.platform == "linux":
        assert pk.data_ptr() % (2 << 20) == 64


def test_huge_page_threshold(tmp_path, monkeypatch):
    """GRAPHATTN_HUGE_PAGES and the transparent-huge-page mode decide the threshold."""
    mode = tmp_path / "enabled"
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    mode.write_text("always [madvise] never\n")
    assert fused_mod.huge_page_threshold("", str(mode)) == 16 * 2**20
    assert fused_mod.huge_page_threshold("0", str(mode)) == -1
    assert fused_mod.huge_page_threshold("2.5", str(mode)) == int(2.5 * 2**20)
    with pytest.raises(ValueError, match="GRAPHATTN_HUGE_PAGES.*'lots'"):
        fused_mod.huge_page_threshold("lots", str(mode))
    for text in ("[always] madvise never\n", "always madvise [never]\n"):
        mode.write_text(text)
        assert fused_mod.huge_page_threshold("", str(mode)) == -1
    assert fused_mod.huge_page_threshold("", str(tmp_path / "missing")) == -1
    mode.write_text("always [madvise] never\n")
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")  # torch's allocator advises them itself
    assert fused_mod.huge_page_threshold("", str(mode)) == -1
    assert fused_mod.huge_page_threshold("8", str(mode)) == 8 * 2**20
    monkeypatch.setenv("GRAPHATTN_HUGE_PAGES", "4")
    assert fused_mod.huge_page_threshold(mode_file=str(mode)) == 4 * 2**20


def test_huge_pages_copy_keys_and_values_only(huge_pages, monkeypatch, gen):
    """The forward copies the keys and values into huge pages, with or without a backward;
    the backward packs each target's rows itself (pack_targets) and copies nothing more."""
    copied = []

    class Recorder:
        def __getattr__(self, name):
            return getattr(huge_pages, name)

        def paged_rows(self, parts):
            copied.append(len(parts))
            return huge_pages.paged_rows(parts)

    monkeypatch.setattr(fused_mod, "_kernels", lambda device: (Recorder(), None))
    graph = GRAPHS["random"]()
    q, k, v = (torch.randn(1, 2, n, 3, generator=gen).requires_grad_() for n in (9, 7, 7))
    with torch.no_grad():
        graph_attention(q, k, v, graph, backend="fused")
    assert copied == [2]  # k and v
    copied.clear()
    out = graph_attention(q, k, v, graph, backend="fused")
    out.sum().backward()
    assert copied == [2]
    assert q.grad is not None and k.grad is not None and v.grad is not None


def test_backward_outputs_come_from_huge_page_blocks(huge_pages, gen):
    """Above the threshold the kernel's outputs (out, lse; dq, dk, dv) and the packed target
    rows come from the huge-page blocks: a second step reuses the first step's blocks, so
    the cache holds the same blocks again after it (no fresh pages, no page faults)."""
    if sys.platform != "linux":
        pytest.skip("huge pages are advised on Linux only")
    graph = GRAPHS["random"]()
    q, k, v = (torch.randn(1, 2, n, 8, generator=gen).requires_grad_() for n in (9, 7, 7))
    huge_pages.release_huge_pages()

    def step() -> None:
        out = graph_attention(q, k, v, graph, backend="fused")
        torch.autograd.grad(out.square().sum(), (q, k, v))

    step()
    kept = huge_pages.huge_cache_bytes()
    assert kept > 0
    step()
    assert huge_pages.huge_cache_bytes() == kept


def test_huge_page_blocks_are_reused_then_released(huge_pages, gen):
    """A dead tensor's huge-page block serves the next copy of the same size; the cache
    keeps at most its cap, and release_huge_pages unmaps what it keeps."""
    if sys.platform != "linux":
        pytest.skip("huge pages are advised on Linux only")
    x = torch.randn(1000, 4, 8, generator=gen)
    huge_pages.release_huge_pages()
    first = huge_pages.paged_rows([x])[0]
    where = first.data_ptr()
    del first
    kept = huge_pages.huge_cache_bytes()
    assert kept >= x.nbytes
    again = huge_pages.paged_rows([x])[0]
    assert again.data_ptr() == where and huge_pages.huge_cache_bytes() == 0
    torch.testing.assert_close(again, x, rtol=0, atol=0)
    del again
    assert fused_mod.release_huge_pages() == kept and huge_pages.huge_cache_bytes() == 0
    huge_pages.set_huge_pages(0, 0)  # a cache of 0 bytes keeps nothing
    try:
        huge_pages.paged_rows([x])
        assert huge_pages.huge_cache_bytes() == 0
    finally:
        huge_pages.set_huge_pages(0, fused_mod._huge_cache_bytes())


def test_huge_page_tensors_resize_like_any_tensor(huge_pages, gen):
    """A tensor on a huge-page block resizes as one from ``torch.empty`` does (``resize_``,
    an ``out=`` argument of another shape): its data move to torch's allocator, what was
    there stays, and the block goes back to the cache."""
    if sys.platform != "linux":
        pytest.skip("huge pages are advised on Linux only")
    x = torch.randn(1000, 4, 8, generator=gen)
    huge_pages.release_huge_pages()
    t = huge_pages.paged_rows([x])[0]
    assert t.is_contiguous() and huge_pages.huge_cache_bytes() == 0  # one block, lent
    where = t.data_ptr()
    t.resize_(0)  # torch's idiom for reusing an out= tensor of another shape
    torch.mul(torch.ones(2000, 4, 8), 2.0, out=t)  # twice the rows: the storage grows
    assert t.shape == (2000, 4, 8) and bool((t == 2.0).all())
    assert t.data_ptr() != where and huge_pages.huge_cache_bytes() > 0  # the block is back
    u = huge_pages.paged_rows([x])[0]
    u.resize_(2000, 4, 8)
    torch.testing.assert_close(u[:1000], x, rtol=0, atol=0)  # the old rows kept


@pytest.mark.skipif(
    sys.platform != "linux" or not hasattr(os, "fork"), reason="fork and huge pages: Linux only"
)
def test_fork_while_another_thread_holds_the_huge_page_cache(huge_pages, gen):
    """fork() copies only the calling thread. A thread that holds the huge-page cache's lock
    at that moment (a backward pass frees and takes blocks with the GIL released) would leave
    it locked in the child for ever, and the child's next big tensor would hang. The lock is
    taken across fork, so the child gets a free lock and a whole cache."""
    x = torch.randn(1000, 4, 8, generator=gen)
    huge_pages.release_huge_pages()
    del huge_pages.paged_rows([x])[0]  # one free block in the cache, copied into the child
    holder = threading.Thread(target=huge_pages._hold_huge_cache, args=(500,))
    holder.start()
    time.sleep(0.1)  # the holder has the lock now (it releases the GIL while holding it)
    pid = os.fork()
    if pid == 0:  # the child: one thread, no pytest; report by exit status only
        code = 1
        try:
            torch.set_num_threads(1)
            code = 0 if torch.equal(huge_pages.paged_rows([x])[0], x) else 2
        finally:
            os._exit(code)
    holder.join()
    deadline = time.monotonic() + 60.0
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the huge-page cache's lock")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert huge_pages.huge_cache_bytes() > 0  # the parent's cache is intact


def test_huge_page_cache_from_environment(monkeypatch):
    monkeypatch.delenv("GRAPHATTN_HUGE_PAGE_CACHE", raising=False)
    assert fused_mod._huge_cache_bytes() == 2048 * 2**20
    monkeypatch.setenv("GRAPHATTN_HUGE_PAGE_CACHE", "0")
    assert fused_mod._huge_cache_bytes() == 0
    monkeypatch.setenv("GRAPHATTN_HUGE_PAGE_CACHE", "many")
    with pytest.raises(ValueError, match="GRAPHATTN_HUGE_PAGE_CACHE.*'many'"):
        fused_mod._huge_cache_bytes()

"""Micro-benchmarks of CPU formulations of the per-edge work of the edge backend.

Setting: ``N = 100000`` nodes, in-degree 16 (``E = 1.6M`` edges, random sources), 8 heads,
head dim 8, edges sorted by target, fp32, 2 threads. Forward only unless stated.

(i) scores ``s[e, h] = <q[dst[e], h], k[src[e], h]>``: naive gather-multiply-sum; chunked
    ``index_select`` into reused buffers + ``bmm`` row-dot (as the edge backend does);
    ``torch.sparse.sampled_addmm`` on a block-diagonal CSR pattern (row ``h*N + target``,
    column ``h*N + source``); ``torch.compile`` of the naive expression (``dynamic=True``,
    compile time reported separately).
(ii) aggregation ``out[i, h] = sum_e alpha[e, h] v[src[e], h]``: naive
    ``zeros.index_add_``; chunked ``index_select`` + ``mul_`` + ``index_add_`` into reused
    buffers; block-diagonal CSR SpMM; ``torch.segment_reduce`` on the sorted edges; and the
    segment sums alone (messages into targets, and into sources): ``index_add_``,
    ``segment_reduce``, and a CSR 0/1 incidence matrix times the messages (the edge
    backend's choice).
(iii) segment softmax over the in-edges of each target: ``scatter_reduce`` amax +
    ``scatter_add`` (PyG style), vs ``torch.segment_reduce`` with offsets.
(iv) the full edge backend (``graphattn.backends.edges.edge_attention``, and
    ``graph_attention(backend="edges")``) and the fused C++ kernel
    (``graph_attention(backend="fused")``), forward and forward+backward, against a naive
    autograd formulation.

The chunked variants run with chunk sizes of 2**18 .. 2**21 elements; the full backend with
the library's own chunk size. The edge backend's formulations of the row dot, the segment
sums (0/1 incidence matrix products) and the in-place segment softmax are written out here
(they are private to ``graphattn.backends``), as the rows marked "the edge backend's". Each
row: median of 5 runs after one warm-up (:func:`benchmarks.timing.time_alternating`), and
the largest absolute difference from the naive result.

Run: ``python -m benchmarks.bench_formulations [--quick] [--out PATH] [--skip-compile]``
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from benchmarks._harness import fmt, format_table, run_info, write_json_atomic
from benchmarks.timing import time_alternating
from graphattn import Graph, graph_attention, scores, segment_softmax
from graphattn.backends.edges import edge_attention
from graphattn.backends.fused import fused_extension


def _view(flat: Tensor, n: int, g: int, d: int) -> Tensor:
    """A contiguous ``(n, g, d)`` view of the front of a flat buffer."""
    return flat[: n * g * d].view(n, g, d)


MODULE = "benchmarks.bench_formulations"
THREADS = 2
CHUNKS = [1 << 18, 1 << 19, 1 << 20, 1 << 21]


def median_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Median milliseconds of ``repeats`` calls after one warm-up; also the warm-up's result."""
    res = fn()
    timing = time_alternating({"fn": fn}, repeats=repeats, min_repeats=repeats, warmup=0)
    return timing.median_ms["fn"], timing.times_ms["fn"], res


def rowdot(a: Tensor, b: Tensor, out: Tensor) -> None:
    """``out[n, g] = sum_d a[n, g, d] * b[n, g, d]`` via one batched matmul (the edge
    backend's row dot)."""
    n, g, d = a.shape
    torch.bmm(a.view(n * g, 1, d), b.view(n * g, d, 1), out=out.view(n * g, 1, 1))


def incidence(rows: Tensor, num_rows: int) -> Tensor:
    """The ``(num_rows, E)`` 0/1 CSR matrix with a one at ``(rows[e], e)``: the edge
    backend's sums of per-edge rows into their targets (``rows = dst``) or sources
    (``rows = src``), with int32 indices (sparse kernels convert int64 ones on every call)."""
    e = rows.numel()
    crow = torch.zeros(num_rows + 1, dtype=torch.long)
    torch.cumsum(torch.bincount(rows, minlength=num_rows), 0, out=crow[1:])
    col = torch.sort(rows, stable=True).indices  # (E,) edge positions, row by row
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow.int(), col.int(), torch.ones(e), (num_rows, e))


def incidence_sum(inc: Tensor, x: Tensor) -> Tensor:
    """``inc @ x`` over the flattened features. Shapes: x ``(E, *F)``; returns ``(R, *F)``."""
    return (inc @ x.reshape(x.shape[0], -1)).view(inc.shape[0], *x.shape[1:])


def segment_softmax_inplace(s: Tensor, ptr: Tensor, dst: Tensor, inc: Tensor) -> Tensor:
    """The edge backend's in-place softmax of ``s`` ``(E, G)`` over each target's sorted
    in-edges: segment max, ``sub_``/``exp_`` in place, incidence-matrix sums, ``div_``."""
    m = torch.segment_reduce(s, "max", offsets=ptr, axis=0)  # (N, G)
    m = torch.where(torch.isfinite(m), m, torch.zeros(()))
    s.sub_(m.index_select(0, dst)).exp_()
    z = incidence_sum(inc, s)  # (N, G)
    z = torch.where(z > 0, z, torch.ones(()))
    return s.div_(z.index_select(0, dst))


def _err(out: Tensor | None, ref: Tensor | None) -> float | None:
    if out is None or ref is None:
        return None
    return float((out - ref).abs().max())


def _chunk_edges(chunk_elements: int, h: int, d: int) -> int:
    return max(256, chunk_elements // (h * d))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=2000, for a smoke run")
    parser.add_argument("--out", default=None, help="JSON path (default results/formulations)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-compile", action="store_true", help="skip torch.compile rows")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
    warnings.filterwarnings("ignore", message=".*[Ss]parse.*beta")
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    info = run_info(MODULE, argv, torch.device("cpu"))

    n, deg, h, d = (2000 if args.quick else 100000), 16, 8, 8
    e = n * deg
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(0, n, (e,), generator=gen)  # (E,)
    dst = torch.arange(n).repeat_interleave(deg)  # (E,) sorted by target
    graph = Graph.from_edge_index(torch.stack([src, dst]), n, n)
    st = graph.edge_structure()
    ptr = st.ptr  # (N + 1,)
    to_dst = incidence(dst, n)  # (N, E): targets x sorted edges
    to_src = incidence(src, n)  # (N, E): sources x sorted edges
    q = torch.randn(n, h, d, generator=gen)  # (N, H, D)
    k = torch.randn(n, h, d, generator=gen)  # (N, H, D)
    v = torch.randn(n, h, d, generator=gen)  # (N, H, D)
    raw_scores = torch.randn(e, h, generator=gen)  # (E, H)
    alpha = segment_softmax(raw_scores, dst, n)  # (E, H)
    # block-diagonal CSR pattern over (H*N, H*N): row h*N + target, column h*N + source
    heads = torch.arange(h)
    crow = torch.cat([(ptr[:-1][None] + heads[:, None] * e).reshape(-1), torch.tensor([h * e])])
    col = (src[None] + heads[:, None] * n).reshape(-1)  # (H*E,)
    pattern = torch.sparse_csr_tensor(crow, col, torch.ones(h * e), size=(h * n, h * n))
    print(
        f"torch {info['torch']}, {info['threads']} threads; N={n}, in-degree {deg}, E={e}, "
        f"H={h}, D={d}",
        flush=True,
    )

    rows: list[dict[str, Any]] = []

    def record(section: str, name: str, fn: Callable[[], Any], ref=None, chunk=None, note=""):
        ms, times, out = median_ms(fn, args.repeats)
        row = {
            "section": section,
            "formulation": name,
            "chunk_elements": chunk,
            "median_ms": ms,
            "times_ms": times,
            "max_abs_err": _err(out, ref) if isinstance(out, Tensor) else None,
            "reference": ref is None,
            "note": note,
        }
        rows.append(row)
        print(
            f"  {section:<12} {name:<44} {str(chunk or ''):>8} {ms:9.1f} ms  {note}",
            flush=True,
        )
        return out

    # ------------------------------------------------------------------ (i) scores
    print("(i) scores", flush=True)

    def scores_naive(q: Tensor, k: Tensor, src: Tensor, dst: Tensor) -> Tensor:
        return (q[dst] * k[src]).sum(-1)  # (E, H)

    with torch.no_grad():
        ref_s = record(
            "scores", "naive (q[dst]*k[src]).sum(-1)", lambda: scores_naive(q, k, src, dst)
        )

        def scores_chunked(chunk: int) -> Tensor:
            m = _chunk_edges(chunk, h, d)
            out = q.new_empty(e, h)  # (E, H)
            buf_a, buf_b = q.new_empty(min(m, e) * h * d), q.new_empty(min(m, e) * h * d)
            for a in range(0, e, m):
                b = min(a + m, e)
                kb = torch.index_select(k, 0, src[a:b], out=_view(buf_a, b - a, h, d))
                qb = torch.index_select(q, 0, dst[a:b], out=_view(buf_b, b - a, h, d))
                rowdot(kb, qb, out[a:b])
            return out

        for c in CHUNKS:
            record(
                "scores",
                "chunked index_select + bmm rowdot",
                lambda c=c: scores_chunked(c),
                ref_s,
                c,
            )

        def scores_sampled() -> Tensor:
            qh = q.transpose(0, 1).reshape(h * n, d)  # (H*N, D)
            kh = k.transpose(0, 1).reshape(h * n, d)  # (H*N, D)
            out = torch.sparse.sampled_addmm(pattern, qh, kh.t(), beta=0.0)
            return out.values().view(h, e).t()  # (E, H)

        record("scores", "sparse.sampled_addmm, block-diag CSR", scores_sampled, ref_s)

        if not args.skip_compile:
            torch.compiler.config.force_disable_caches = True  # time a cold compile
            compiled = torch.compile(scores_naive, dynamic=True)
            t0 = time.perf_counter()
            compiled(q, k, src, dst)
            compile_s = time.perf_counter() - t0
            record(
                "scores",
                "torch.compile(naive, dynamic=True)",
                lambda: compiled(q, k, src, dst),
                ref_s,
                note=f"first call (compile) {compile_s:.1f} s",
            )
            rows[-1]["compile_s"] = compile_s

    # ------------------------------------------------------------------ (ii) aggregation
    print("(ii) aggregation", flush=True)
    with torch.no_grad():
        ref_a = record(
            "aggregate",
            "naive zeros.index_add_(dst, alpha*v[src])",
            lambda: torch.zeros(n, h, d).index_add_(0, dst, alpha[..., None] * v[src]),
        )

        def agg_chunked(chunk: int) -> Tensor:
            m = _chunk_edges(chunk, h, d)
            out = v.new_zeros(n, h, d)  # (N, H, D)
            buf = v.new_empty(min(m, e) * h * d)
            for a in range(0, e, m):
                b = min(a + m, e)
                vb = torch.index_select(v, 0, src[a:b], out=_view(buf, b - a, h, d))
                vb.mul_(alpha[a:b, :, None])
                out.index_add_(0, dst[a:b], vb)
            return out

        for c in CHUNKS:
            record(
                "aggregate",
                "chunked index_select + mul_ + index_add_",
                lambda c=c: agg_chunked(c),
                ref_a,
                c,
            )

        def agg_spmm() -> Tensor:
            vals = alpha.t().reshape(-1)  # (H*E,) head-major
            a_csr = torch.sparse_csr_tensor(crow, col, vals, size=(h * n, h * n))
            vh = v.transpose(0, 1).reshape(h * n, d)  # (H*N, D)
            return (a_csr @ vh).view(h, n, d).transpose(0, 1)  # (N, H, D)

        record("aggregate", "CSR SpMM, block-diag (H*N x H*N) @ V", agg_spmm, ref_a)
        record(
            "aggregate",
            "segment_reduce(alpha*v[src], sum, offsets)",
            lambda: torch.segment_reduce(alpha[..., None] * v[src], "sum", offsets=ptr, axis=0),
            ref_a,
        )
        msg = alpha[..., None] * v[src]  # (E, H, D), the per-edge messages
        ref_sum = record(
            "segment sum",
            "index_add_(0, dst, messages) (sorted targets)",
            lambda: torch.zeros(n, h, d).index_add_(0, dst, msg),
        )
        record(
            "segment sum",
            "segment_reduce(messages, sum, offsets)",
            lambda: torch.segment_reduce(msg, "sum", offsets=ptr, axis=0),
            ref_sum,
        )
        record(
            "segment sum",
            "CSR incidence (N x E) @ messages",
            lambda: incidence_sum(to_dst, msg),
            ref_sum,
            note="the edge backend's",
        )
        ref_src = record(
            "source sum",
            "index_add_(0, src, messages) (random sources)",
            lambda: torch.zeros(n, h, d).index_add_(0, src, msg),
        )
        record(
            "source sum",
            "CSR incidence by source (N x E) @ messages",
            lambda: incidence_sum(to_src, msg),
            ref_src,
            note="the edge backend's",
        )

    # ------------------------------------------------------------------ (iii) softmax
    print("(iii) segment softmax", flush=True)
    with torch.no_grad():
        s = raw_scores
        idx = dst[:, None].expand(e, h)  # (E, H)

        def softmax_scatter() -> Tensor:
            m = s.new_full((n, h), -math.inf).scatter_reduce_(0, idx, s, "amax")
            ex = (s - m.index_select(0, dst)).exp()
            z = s.new_zeros(n, h).scatter_add_(0, idx, ex)
            return ex / z.index_select(0, dst)

        def softmax_segment() -> Tensor:
            m = torch.segment_reduce(s, "max", offsets=ptr, axis=0)  # (N, H)
            ex = (s - m.index_select(0, dst)).exp()
            z = torch.segment_reduce(ex, "sum", offsets=ptr, axis=0)  # (N, H)
            return ex / z.index_select(0, dst)

        buf = s.clone()

        def softmax_inplace() -> Tensor:
            buf.copy_(s)
            return segment_softmax_inplace(buf, ptr, dst, to_dst)

        ref_sm = record("softmax", "scatter_reduce amax + scatter_add (PyG)", softmax_scatter)
        record("softmax", "segment_reduce max/sum with offsets", softmax_segment, ref_sm)
        record(
            "softmax",
            "segment max + incidence sums, in place (+copy_)",
            softmax_inplace,
            ref_sm,
            note="the edge backend's",
        )

    # ------------------------------------------------------------------ (iv) full backend
    print("(iv) full edge backend", flush=True)
    scale = 1.0 / math.sqrt(d)
    proj = torch.randn(n, h, d, generator=gen)
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

    def naive_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        sc = (q[dst] * k[src]).sum(-1) * scale  # (E, H)
        m = sc.detach().new_full((n, h), -math.inf).scatter_reduce_(0, idx, sc.detach(), "amax")
        ex = (sc - m.index_select(0, dst)).exp()
        z = ex.new_zeros(n, h).index_add(0, dst, ex)
        a = ex / z.index_select(0, dst)
        return torch.zeros(n, h, d).index_add(0, dst, a[..., None] * v[src])  # (N, H, D)

    def fwd_bwd(fn: Callable[..., Tensor]) -> Callable[[], Tensor]:
        def run() -> Tensor:
            for t in (qg, kg, vg):
                t.grad = None
            out = fn(qg, kg, vg)
            out.backward(proj)
            return qg.grad

        return run

    def graphattn_edges(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return edge_attention(q, k, v, st, score=scores.DotProduct(), heads=h, scale=scale)[0]

    with torch.no_grad():
        ref_f = record("full fwd", "naive autograd formulation", lambda: naive_attention(q, k, v))
    ref_fb = record("full fwd+bwd", "naive autograd formulation (dq)", fwd_bwd(naive_attention))
    with torch.no_grad():
        record(
            "full fwd",
            "graphattn edge_attention",
            lambda: graphattn_edges(q, k, v),
            ref_f,
            note="library chunk size",
        )
    record(
        "full fwd+bwd",
        "graphattn edge_attention (dq)",
        fwd_bwd(graphattn_edges),
        ref_fb,
        note="library chunk size",
    )

    def public_call(backend: str) -> Callable[..., Tensor]:
        def run(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            heads_first = [t.transpose(0, 1) for t in (q, k, v)]  # (H, N, D) views
            out = graph_attention(*heads_first, graph, scale=scale, backend=backend)
            return out.transpose(0, 1)  # (N, H, D)

        return run

    backends = ["edges"] + (["fused"] if fused_extension()[0] is not None else [])
    for backend in backends:
        name = f"graph_attention(backend={backend!r})"
        with torch.no_grad():
            record("full fwd", name, lambda b=backend: public_call(b)(q, k, v), ref_f)
        record("full fwd+bwd", name + " (dq)", fwd_bwd(public_call(backend)), ref_fb)

    headers = ["section", "formulation", "chunk", "median ms", "max err", "note"]
    body = [
        [
            r["section"],
            r["formulation"],
            "" if r["chunk_elements"] is None else f"2**{int(math.log2(r['chunk_elements']))}",
            fmt(r["median_ms"]),
            "ref"
            if r["reference"]
            else fmt(r["max_abs_err"], 1)
            if r["max_abs_err"] is None
            else f"{r['max_abs_err']:.1e}",
            r["note"],
        ]
        for r in rows
    ]
    print()
    print(format_table(headers, body, left=2), flush=True)
    wall = time.perf_counter() - start
    print(f"\ntotal wall time {wall:.1f} s", flush=True)
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "formulations_cpu.json"
    )
    sizes = {"N": n, "in_degree": deg, "E": e, "heads": h, "head_dim": d}
    write_json_atomic(out, {**info, "quick": args.quick, **sizes, "wall_s": wall, "rows": rows})
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()

"""A short tour of graphattn's core, with real comparisons (``make demo``).

1. The complete graph is ``nn.MultiheadAttention``: copy its weights, get its numbers.
2. A sparse graph is PyG's ``TransformerConv``: copy its weights, get its numbers, faster.
3. Attention weights come back per edge and sum to one over each target's in-edges.
4. A complete graph handed over as an edge list is recognised and run by the dense kernel.

Times are medians of calls alternated between the two implementations after one warm-up
each (:func:`benchmarks.timing.time_alternating`, as the benchmarks time them).

Run: ``python -m examples.core_demo``
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.timing import time_alternating
from graphattn import Graph, GraphAttention


def median_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median milliseconds of each function, calls alternated, after one warm-up each."""
    return time_alternating(fns, repeats=repeats, min_repeats=repeats, warmup=1).median_ms


def fwd_bwd(module: nn.Module, *args, **kwargs) -> Callable[[], None]:
    def run() -> None:
        module.zero_grad(set_to_none=True)
        out = module(*args, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()

    return run


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    section("1. complete graph = nn.MultiheadAttention (B=4, N=256, embed 256, 8 heads)")
    mha = nn.MultiheadAttention(256, 8, batch_first=True)
    attn = GraphAttention.from_multihead_attention(mha)
    x = torch.randn(4, 256, 256, requires_grad=True)
    pad = torch.zeros(4, 256, dtype=torch.bool)
    pad[1, 200:] = True  # sample 1 has 200 real tokens
    ref, _ = mha(x, x, x, key_padding_mask=pad, need_weights=False)
    for backend in ("dense", "edges"):
        attn.backend = backend
        out = attn(x, key_padding_mask=pad)
        print(f"  backend={backend:<5}  max |graphattn - MHA| = {(out - ref).abs().max():.2e}")
    attn.backend = "auto"
    t = median_ms({"ga": fwd_bwd(attn, x), "mha": fwd_bwd(mha, x, x, x, need_weights=False)}, 5)
    t_ga, t_mha = t["ga"], t["mha"]
    print(f"  fwd+bwd: graphattn {t_ga:.1f} ms, MHA {t_mha:.1f} ms, ratio {t_ga / t_mha:.2f}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch_geometric.nn import TransformerConv

    section("2. sparse graph = PyG TransformerConv (N=20000, in-degree 16, embed 64, 8 heads)")
    n, k, embed, heads = 20_000, 16, 64, 8
    src = torch.randint(0, n, (n * k,))
    dst = torch.arange(n).repeat_interleave(k)
    edge_index = torch.stack([src, dst])[:, torch.randperm(n * k)]
    conv = TransformerConv(embed, embed // heads, heads=heads, root_weight=False)
    attn = GraphAttention.from_transformer_conv(conv)
    graph = Graph.from_edge_index(edge_index, n, n)
    xs = torch.randn(n, embed, requires_grad=True)
    res = attn.forward_with_weights(xs, graph)
    diff = (res.out - conv(xs, edge_index)).abs().max()
    print(f"  {graph}")
    print(f"  auto picked backend={res.backend!r}; max |graphattn - TransformerConv| = {diff:.2e}")
    t = median_ms({"ga": fwd_bwd(attn, xs, graph), "pyg": fwd_bwd(conv, xs, edge_index)}, 3)
    t_ga, t_pyg = t["ga"], t["pyg"]
    print(
        f"  fwd+bwd: graphattn {t_ga:.0f} ms, TransformerConv {t_pyg:.0f} ms, "
        f"ratio {t_ga / t_pyg:.2f}"
    )

    section("3. attention weights are a learned weighted graph")
    w = res.attention.values  # (E, H), aligned with edge_index
    sums = torch.zeros(n, heads).index_add_(0, edge_index[1], w)
    print(
        f"  weights {tuple(w.shape)} in [{w.min():.3f}, {w.max():.3f}], "
        f"sum over each target's in-edges: {sums.min():.6f} .. {sums.max():.6f}"
    )

    section("4. a complete graph given as an edge list (N=1024, embed 64, 8 heads)")
    n = 1024
    full = Graph.complete(n).edge_index()  # all N*N pairs as an edge list
    conv = TransformerConv(embed, embed // heads, heads=heads, root_weight=False)
    attn = GraphAttention.from_transformer_conv(conv)
    xc = torch.randn(n, embed, requires_grad=True)
    res = attn.forward_with_weights(xc, full)
    diff = (res.out - conv(xc, full)).abs().max()
    print(f"  auto picked backend={res.backend!r} (recognised as complete); max diff = {diff:.2e}")
    t = median_ms({"ga": fwd_bwd(attn, xc, full), "pyg": fwd_bwd(conv, xc, full)}, 3)
    t_ga, t_pyg = t["ga"], t["pyg"]
    print(
        f"  fwd+bwd: graphattn {t_ga:.0f} ms, TransformerConv {t_pyg:.0f} ms, "
        f"ratio {t_ga / t_pyg:.3f}"
    )
    print("\nfull benchmark: make bench (see README)")


if __name__ == "__main__":
    main()

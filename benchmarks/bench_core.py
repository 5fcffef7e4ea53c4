"""Core benchmarks: ``GraphAttention`` against the modules it replaces, forward + backward.

Cases (fp32, 2 CPU threads, loss = <out, fixed random tensor>):

- a: complete graph, ``B=4``, ``N`` in {256, 1024}, embed 512, 8 heads:
  ``GraphAttention.from_multihead_attention(mha)(x)`` (``graph=None``) vs
  ``mha(x, x, x, need_weights=False)`` (``batch_first=True``). Goal: time ratio <= 1.05.
- b: random graph, in-degree exactly 16, shuffled edge order, ``N`` in {20000, 100000},
  embed 64, 8 heads: ``GraphAttention(backend="edges")`` with the weights of
  ``TransformerConv(64, 8, heads=8, root_weight=False)`` vs that conv. Goal: time ratio
  <= 0.67 and peak memory ratio <= 1. Extra rows: ``backend="auto"``, and ``"edges"`` given
  the raw ``edge_index`` every call (edge structure rebuilt per call).
- c: complete graph of ``N=1024`` as an edge list (all ``N*N`` pairs), embed 64, 8 heads:
  ``GraphAttention(backend="auto")`` (must recognise the complete graph and run the dense
  kernel) vs ``TransformerConv``. Goal: time ratio <= 0.2.
- d: a PyG ``Batch`` of 16 complete graphs of 64..128 nodes, embed 64, 8 heads,
  ``GraphAttention(backend="auto")`` given ``batch.edge_index`` vs ``TransformerConv``
  (informative).
- e: ``graphattn.from_pyg(conv)`` against PyG's ``GATConv`` and ``GATv2Conv`` (64 in, 8 heads
  x 8, self-loops added by both), the random graph of case b, ``N`` in {20000, 100000}.
  Goal: time ratio <= 0.5 and peak memory ratio <= 0.3.
- f: one full-batch training step (forward, cross-entropy, backward, Adam) of the two-layer
  GAT of Velickovic et al. on Cora, the same model built from ``graphattn.GATConv`` and from
  PyG's ``GATConv``; the features either dense (``F.dropout`` on 2708 x 1433 values) or a
  sparse CSR tensor with dropout on its stored values (the same distribution). Goal: time
  ratio <= 0.8.
- g: ``GATConv`` on the complete graph of ``N=2048`` given as an edge list (64 in, 8 heads x
  8): graphattn recognises the complete graph and runs the dense blockwise GAT kernel. Goal:
  time ratio <= 0.1.

Bandwidth bound: rows on the edge path also show the time a fused kernel needs at this
machine's copy bandwidth (``dst.copy_(src)`` of 256 MiB into resident memory, read + write
bytes per second, measured at the start of the run): forward, each source's key and value
read once per edge and each target's query read and output written once; forward +
backward, three times that (the backward pass reads keys and values again and writes their
gradients, and reads queries, outputs and output gradients and writes query gradients).
GAT's keys and queries are one scalar per node and head; GATv2's keys are its values.

Run: ``python -m benchmarks.bench_core [--quick] [--out PATH] [--device cpu|cuda]
[--cases PREFIX ...]``.
Peak memory on CPU is measured per (implementation, case) in a fresh process (this module
with the hidden ``--measure-one CASE IMPL`` flag); see ``benchmarks/timing.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from benchmarks._harness import fmt, format_table, run_info, write_json_atomic
from benchmarks.timing import (
    MIB,
    Step,
    measure_peak_cuda,
    measure_peak_rss,
    run_measure_subprocess,
    sync_fn,
    time_alternating,
)
from graphattn import Graph, GraphAttention

MODULE = "benchmarks.bench_core"
THREADS = 2
PEER = "peer"


@dataclass
class Case:
    """One comparison: graphattn variants and one peer on the same inputs and weights.

    Attributes:
        id: short name used on the command line (``--measure-one``) and in the table.
        title: what is computed.
        variants: graphattn implementation key -> description.
        peer: description of the peer implementation.
        goal_time: largest passing graphattn/peer time ratio (``None``: informative).
        goal_mem: largest passing peak-memory ratio (``None``: not a goal).
        build: ``build(device)`` -> implementation key -> :class:`Step` (keys: the
            variants and ``"peer"``).
        info_only: variants reported without a goal.
        bound_bytes: bytes a fused edge kernel must move for forward + backward (edge-path
            rows), for the bandwidth bound.
    """

    id: str
    title: str
    variants: dict[str, str]
    peer: str
    goal_time: float | None
    goal_mem: float | None
    build: Callable[[torch.device], dict[str, Step]]
    info_only: tuple[str, ...] = ()
    bound_bytes: float | None = None  # bytes a fused kernel moves, forward + backward


# ---------------------------------------------------------------------------- inputs
def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_in_degree_graph(n: int, k: int, gen: torch.Generator) -> Tensor:
    """``edge_index`` ``(2, n*k)``: every target gets exactly ``k`` random sources
    (self-loops and duplicates allowed), edge order shuffled."""
    src = torch.randint(0, n, (n * k,), generator=gen)
    dst = torch.arange(n).repeat_interleave(k)
    perm = torch.randperm(n * k, generator=gen)
    return torch.stack([src[perm], dst[perm]])


def complete_edge_index(n: int) -> Tensor:
    """``edge_index`` ``(2, n*n)`` of the complete graph with self-loops."""
    src = torch.arange(n).repeat(n)
    dst = torch.arange(n).repeat_interleave(n)
    return torch.stack([src, dst])


def transformer_conv_pair(embed: int, heads: int, *, backend: str, seed: int):
    """A ``TransformerConv(embed, embed // heads, heads, root_weight=False)`` and a
    ``GraphAttention`` computing the same function (identity output projection)."""
    from torch_geometric.nn import TransformerConv

    torch.manual_seed(seed)
    conv = TransformerConv(embed, embed // heads, heads=heads, root_weight=False)
    ga = GraphAttention.from_transformer_conv(conv, backend=backend)
    return ga, conv


def _params(*modules: nn.Module) -> list[Tensor]:
    return [p for m in modules for p in m.parameters()]


# ---------------------------------------------------------------------------- cases
def case_mha(n: int, batch: int, embed: int, heads: int) -> Case:
    def build(device: torch.device) -> dict[str, Step]:
        gen = _seeded(n)
        torch.manual_seed(0)
        mha = nn.MultiheadAttention(embed, heads, batch_first=True).to(device)
        ga = GraphAttention.from_multihead_attention(mha)
        x = torch.randn(batch, n, embed, generator=gen).to(device).requires_grad_()
        proj = torch.randn(batch, n, embed, generator=gen).to(device)
        return {
            "ga": Step(lambda: ga(x), [*_params(ga), x], proj),
            PEER: Step(lambda: mha(x, x, x, need_weights=False)[0], [*_params(mha), x], proj),
        }

    return Case(
        id=f"a-N{n}",
        title=f"complete graph, B={batch}, N={n}, embed {embed}, {heads} heads",
        variants={"ga": "GraphAttention.from_multihead_attention(mha), graph=None"},
        peer="nn.MultiheadAttention(batch_first=True), need_weights=False",
        goal_time=1.05,
        goal_mem=None,
        build=build,
    )


def case_sparse(n: int, k: int, embed: int, heads: int) -> Case:
    def build(device: torch.device) -> dict[str, Step]:
        gen = _seeded(n)
        edge_index = random_in_degree_graph(n, k, gen).to(device)
        ga, conv = transformer_conv_pair(embed, heads, backend="edges", seed=0)
        ga, conv = ga.to(device), conv.to(device)
        ga_auto = GraphAttention(embed, heads, backend="auto").to(device)
        ga_auto.load_state_dict(ga.state_dict())
        ga_fused = GraphAttention(embed, heads, backend="fused").to(device)
        ga_fused.load_state_dict(ga.state_dict())
        graph = Graph.from_edge_index(edge_index, n, n)  # structure cached on first use
        x = torch.randn(n, embed, generator=gen).to(device).requires_grad_()
        proj = torch.randn(n, embed, generator=gen).to(device)
        return {
            "ga": Step(lambda: ga(x, graph), [*_params(ga), x], proj),
            "ga_auto": Step(lambda: ga_auto(x, graph), [*_params(ga_auto), x], proj),
            "ga_raw": Step(lambda: ga(x, edge_index), [*_params(ga), x], proj),
            "ga_fused": Step(lambda: ga_fused(x, graph), [*_params(ga_fused), x], proj),
            PEER: Step(lambda: conv(x, edge_index), [*_params(conv), x], proj),
        }

    return Case(
        id=f"b-N{n}",
        title=f"random graph, in-degree {k}, N={n}, E={n * k}, embed {embed}, {heads} heads",
        variants={
            "ga": 'GraphAttention(backend="edges"), Graph built once',
            "ga_auto": 'GraphAttention(backend="auto"), Graph built once',
            "ga_raw": 'GraphAttention(backend="edges"), raw edge_index each call',
            "ga_fused": 'GraphAttention(backend="fused"), Graph built once (C++ / Triton)',
        },
        peer=f"TransformerConv({embed}, {embed // heads}, heads={heads}, root_weight=False)",
        goal_time=0.67,
        goal_mem=1.0,
        build=build,
        info_only=("ga_raw", "ga_fused"),
        bound_bytes=fused_bytes(n * k, n, heads, embed // heads, embed // heads, embed // heads),
    )


def case_complete_edges(n: int, embed: int, heads: int) -> Case:
    def build(device: torch.device) -> dict[str, Step]:
        gen = _seeded(n)
        edge_index = complete_edge_index(n).to(device)
        ga, conv = transformer_conv_pair(embed, heads, backend="auto", seed=0)
        ga, conv = ga.to(device), conv.to(device)
        graph = Graph.from_edge_index(edge_index, n, n)
        x = torch.randn(n, embed, generator=gen).to(device).requires_grad_()
        proj = torch.randn(n, embed, generator=gen).to(device)
        return {
            "ga_raw": Step(lambda: ga(x, edge_index), [*_params(ga), x], proj),
            "ga": Step(lambda: ga(x, graph), [*_params(ga), x], proj),
            PEER: Step(lambda: conv(x, edge_index), [*_params(conv), x], proj),
        }

    return Case(
        id=f"c-N{n}",
        title=f"complete graph as edge list, N={n}, E={n * n}, embed {embed}, {heads} heads",
        variants={
            "ga_raw": 'GraphAttention(backend="auto"), raw edge_index each call',
            "ga": 'GraphAttention(backend="auto"), Graph built once',
        },
        peer=f"TransformerConv({embed}, {embed // heads}, heads={heads}, root_weight=False)",
        goal_time=0.2,
        goal_mem=None,
        build=build,
    )


def case_pyg_batch(graphs: int, lo: int, hi: int, embed: int, heads: int) -> Case:
    def build(device: torch.device) -> dict[str, Step]:
        from torch_geometric.data import Batch, Data

        gen = _seeded(graphs)
        sizes = torch.randint(lo, hi + 1, (graphs,), generator=gen).tolist()
        data = [
            Data(x=torch.randn(s, embed, generator=gen), edge_index=complete_edge_index(s))
            for s in sizes
        ]
        batch = Batch.from_data_list(data).to(device)
        edge_index = batch.edge_index
        ga, conv = transformer_conv_pair(embed, heads, backend="auto", seed=0)
        ga, conv = ga.to(device), conv.to(device)
        x = batch.x.clone().requires_grad_()
        proj = torch.randn(x.shape, generator=gen).to(device)
        return {
            "ga_raw": Step(lambda: ga(x, edge_index), [*_params(ga), x], proj),
            PEER: Step(lambda: conv(x, edge_index), [*_params(conv), x], proj),
        }

    return Case(
        id=f"d-G{graphs}",
        title=f"PyG Batch of {graphs} complete graphs of {lo}..{hi} nodes, embed {embed}, "
        f"{heads} heads",
        variants={"ga_raw": 'GraphAttention(backend="auto"), batch.edge_index each call'},
        peer=f"TransformerConv({embed}, {embed // heads}, heads={heads}, root_weight=False)",
        goal_time=None,
        goal_mem=None,
        build=build,
    )


# ---------------------------------------------------------------------------- GAT cases
def fused_bytes(num_edges: int, num_dst: int, heads: int, dk: int, dv: int, dq: int) -> float:
    """Bytes a fused edge kernel moves for forward + backward in fp32 (see the module
    docstring): three times the forward's reads of keys and values per edge and of queries
    and outputs per target."""
    forward = heads * (num_edges * (dk + dv) + num_dst * (dq + dv)) * 4
    return 3.0 * forward


def barabasi_albert_graph(n: int, m: int, gen: torch.Generator) -> Tensor:
    """``edge_index`` of a Barabasi-Albert graph (each new node links to ``m`` earlier nodes
    chosen in proportion to their degree), both directions of every link: mean in-degree
    ``2 m``, a power-law tail (hubs with hundreds to thousands of in-edges)."""
    targets = torch.empty(n * m, dtype=torch.long)
    sources = torch.empty(n * m, dtype=torch.long)
    ends = torch.empty(2 * n * m, dtype=torch.long)  # every link's two ends: degree-weighted
    ends[:m] = torch.arange(m)
    filled, count = m, 0
    for node in range(m, n):
        pick = torch.randint(0, filled, (m,), generator=gen)
        chosen = ends[pick]
        sources[count : count + m] = node
        targets[count : count + m] = chosen
        ends[filled : filled + m] = chosen
        ends[filled + m : filled + 2 * m] = node
        filled += 2 * m
        count += m
    src, dst = sources[:count], targets[:count]
    return torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])


def case_gat(
    kind: str, n: int, k: int, fin: int, heads: int, channels: int, graph: str = "uniform"
) -> Case:
    make = (
        (lambda gen: random_in_degree_graph(n, k, gen))
        if graph == "uniform"
        else (lambda gen: barabasi_albert_graph(n, k // 2, gen))
    )
    edge_index = make(_seeded(n))
    num_edges = int((edge_index[0] != edge_index[1]).sum()) + n  # self-loops replaced
    peer_name = {"gat": "GATConv", "gatv2": "GATv2Conv"}[kind]

    def build(device: torch.device) -> dict[str, Step]:
        import torch_geometric.nn as pyg_nn

        import graphattn

        gen = _seeded(n)
        ei = make(gen).to(device)
        torch.manual_seed(0)
        peer = getattr(pyg_nn, peer_name)(fin, channels, heads=heads).to(device)
        x = torch.randn(n, fin, generator=gen).to(device).requires_grad_()
        proj = torch.randn(n, heads * channels, generator=gen).to(device)
        steps = {}
        for key, backend in (("ga", "auto"), ("ga_edges", "edges"), ("ga_fused", "fused")):
            ours = graphattn.from_pyg(peer, backend=backend)
            steps[key] = Step(lambda m=ours: m(x, ei), [*_params(ours), x], proj)
        steps[PEER] = Step(lambda: peer(x, ei), [*_params(peer), x], proj)
        return steps

    dk = 1 if kind == "gat" else 0  # GATv2's keys are its values
    shape = (
        f"random graph, in-degree {k}"
        if graph == "uniform"
        else f"Barabasi-Albert graph, mean in-degree {k}"
    )
    return Case(
        id=f"{'e' if graph == 'uniform' else 'h'}-{kind}-N{n}",
        title=f"{peer_name}, {shape}, N={n}, {fin} in, {heads} heads x {channels}",
        variants={
            "ga": f"graphattn.from_pyg({peer_name}(...)), backend auto, raw edge_index",
            "ga_edges": 'the same, backend="edges" (pure torch)',
            "ga_fused": 'the same, backend="fused" (C++ kernel on CPU, Triton on CUDA)',
        },
        peer=f"torch_geometric.nn.{peer_name}({fin}, {channels}, heads={heads})",
        goal_time=0.5,
        goal_mem=0.3,
        build=build,
        info_only=("ga_edges", "ga_fused"),
        bound_bytes=fused_bytes(
            num_edges, n, heads, dk, channels, 1 if kind == "gat" else channels
        ),
    )


class TrainStep(Step):
    """A full training step: forward, cross-entropy on the training nodes, backward, and an
    optimizer step."""

    def __init__(self, model: nn.Module, inputs: tuple, data: object) -> None:
        self.model, self.inputs, self.data = model, inputs, data
        self.opt = torch.optim.Adam(model.parameters(), lr=0.005, weight_decay=5e-4)
        super().__init__(forward=self._eval_forward, grads=list(model.parameters()), proj=None)

    def _eval_forward(self) -> Tensor:
        """The output in evaluation mode (no dropout), to compare the two models."""
        self.model.eval()
        try:
            return self.model(*self.inputs)
        finally:
            self.model.train()

    def run(self) -> None:
        import torch.nn.functional as F

        d = self.data
        logits = self.model(*self.inputs)  # (N, K)
        F.cross_entropy(logits[d.train_mask], d.y[d.train_mask]).backward()
        self.opt.step()


class CoraGAT(nn.Module):
    """GAT on Cora (Velickovic et al.): dropout 0.6 on features, hidden units and weights;
    8 heads x 8 with ELU, then one head over the classes. ``conv`` is PyG's or graphattn's
    ``GATConv``; CSR features get dropout on their stored values."""

    def __init__(self, conv: type, in_dim: int, classes: int) -> None:
        super().__init__()
        self.conv1 = conv(in_dim, 8, heads=8, dropout=0.6)
        self.conv2 = conv(64, classes, heads=1, concat=False, dropout=0.6)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        import torch.nn.functional as F

        if x.layout == torch.sparse_csr:
            values = F.dropout(x.values(), 0.6, self.training)
            x = torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), values, x.shape)
        else:
            x = F.dropout(x, 0.6, self.training)
        x = F.dropout(F.elu(self.conv1(x, edge_index)), 0.6, self.training)
        return self.conv2(x, edge_index)  # (N, K)


def load_cora_for_bench() -> object:
    """Cora (row-normalised features, public split) from the local data folder, processed in
    a temporary copy (Planetoid writes beside the raw files)."""
    import shutil
    import tempfile

    from torch_geometric.datasets import Planetoid
    from torch_geometric.transforms import NormalizeFeatures

    from examples.training import ensure_dataset

    raw = ensure_dataset("cora") / "Cora" / "raw"
    root = os.path.join(tempfile.gettempdir(), "graphattn-bench-planetoid")
    dst = os.path.join(root, "Cora", "raw")
    os.makedirs(dst, exist_ok=True)
    for f in raw.iterdir():
        if not os.path.exists(os.path.join(dst, f.name)):
            shutil.copy2(f, os.path.join(dst, f.name))
    return Planetoid(root, "Cora", transform=NormalizeFeatures())[0]


def case_cora(features: str) -> Case:
    def build(device: torch.device) -> dict[str, Step]:
        import torch_geometric.nn as pyg_nn

        import graphattn

        data = load_cora_for_bench().to(device)
        x = data.x.to_sparse_csr() if features == "csr" else data.x
        classes = int(data.y.max()) + 1
        steps = {}
        for key, conv in (("ga", graphattn.GATConv), (PEER, pyg_nn.GATConv)):
            torch.manual_seed(0)
            model = CoraGAT(conv, data.num_features, classes).to(device)
            steps[key] = TrainStep(model, (x, data.edge_index), data)
        return steps

    desc = "dense, F.dropout" if features == "dense" else "sparse CSR, dropout on values"
    return Case(
        id=f"f-cora-{features}",
        title=f"Cora training step (2-layer GAT, 8 heads x 8), features {desc}",
        variants={"ga": "CoraGAT built from graphattn.GATConv"},
        peer="CoraGAT built from torch_geometric.nn.GATConv",
        goal_time=0.8,
        goal_mem=None,
        build=build,
    )


def case_gat_complete(n: int, fin: int, heads: int, channels: int) -> Case:
    def build(device: torch.device) -> dict[str, Step]:
        import torch_geometric.nn as pyg_nn

        import graphattn

        gen = _seeded(n)
        ei = complete_edge_index(n).to(device)
        torch.manual_seed(0)
        peer = pyg_nn.GATConv(fin, channels, heads=heads).to(device)
        ours = graphattn.from_pyg(peer)
        x = torch.randn(n, fin, generator=gen).to(device).requires_grad_()
        proj = torch.randn(n, heads * channels, generator=gen).to(device)
        return {
            "ga": Step(lambda: ours(x, ei), [*_params(ours), x], proj),
            PEER: Step(lambda: peer(x, ei), [*_params(peer), x], proj),
        }

    return Case(
        id=f"g-N{n}",
        title=f"GATConv on the complete graph as edge list, N={n}, E={n * n}, {fin} in, "
        f"{heads} heads x {channels}",
        variants={"ga": "graphattn.from_pyg(GATConv(...)), raw edge_index (dense kernel)"},
        peer=f"torch_geometric.nn.GATConv({fin}, {channels}, heads={heads})",
        goal_time=0.1,
        goal_mem=None,
        build=build,
    )


def make_cases(quick: bool, big: bool = False) -> list[Case]:
    """The cases of a run: tiny ones for ``--quick``; ``--big`` adds N=1M (a GPU's sizes)."""
    if big:
        return [
            case_sparse(1_000_000, 16, 64, 8),
            case_gat("gat", 1_000_000, 16, 64, 8, 8),
        ]
    if quick:
        return [
            case_mha(32, 2, 64, 8),
            case_mha(64, 2, 64, 8),
            case_sparse(2000, 16, 64, 8),
            case_complete_edges(128, 64, 8),
            case_pyg_batch(4, 8, 16, 64, 8),
            case_gat("gat", 2000, 16, 64, 8, 8),
            case_gat("gatv2", 2000, 16, 64, 8, 8),
            case_cora("csr"),
            case_gat_complete(128, 64, 8, 8),
        ]
    return [
        case_mha(256, 4, 512, 8),
        case_mha(1024, 4, 512, 8),
        case_sparse(20000, 16, 64, 8),
        case_sparse(100000, 16, 64, 8),
        case_complete_edges(1024, 64, 8),
        case_pyg_batch(16, 64, 128, 64, 8),
        case_gat("gat", 20000, 16, 64, 8, 8),
        case_gat("gat", 100000, 16, 64, 8, 8),
        case_gat("gatv2", 20000, 16, 64, 8, 8),
        case_gat("gatv2", 100000, 16, 64, 8, 8),
        case_gat("gat", 100000, 16, 64, 8, 8, graph="powerlaw"),
        case_cora("dense"),
        case_cora("csr"),
        case_gat_complete(2048, 64, 8, 8),
    ]


# ---------------------------------------------------------------------------- running
def _max_abs_diff(steps: dict[str, Step]) -> dict[str, float]:
    """Largest output difference of each graphattn variant from the peer (no grad)."""
    with torch.no_grad():
        ref = steps[PEER].forward()
        return {k: float((s.forward() - ref).abs().max()) for k, s in steps.items() if k != PEER}


def _measure_memory(case: Case, impl: str, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda":
        steps = case.build(device)
        res = measure_peak_cuda(steps[impl], device)
        del steps
        gc.collect()
        torch.cuda.empty_cache()
        return res
    extra = (["--quick"] if args.quick else []) + (["--big"] if args.big else [])
    return run_measure_subprocess(
        MODULE, ["--measure-one", case.id, impl, "--device", args.device, *extra]
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def copy_bandwidth(device: torch.device, mib: int = 256) -> float:
    """Bytes per second of ``dst.copy_(src)`` between resident buffers (read + write), the
    median of 5 copies of ``mib`` MiB."""
    n = mib * MIB // 4
    src = torch.randn(n, device=device)
    dst = torch.zeros(n, device=device)  # touched: no page faults in the timed copies
    sync = sync_fn(device)
    times = []
    for _ in range(6):
        sync()
        t0 = time.perf_counter()
        dst.copy_(src)
        sync()
        times.append(time.perf_counter() - t0)
    return 2 * n * 4 / statistics.median(times[1:])


def run_case(case: Case, args: argparse.Namespace, bandwidth: float) -> list[dict]:
    device = torch.device(args.device)
    t0 = time.perf_counter()
    print(f"[{case.id}] {case.title}: building", flush=True)
    steps = case.build(device)
    diffs = _max_abs_diff(steps)
    print(f"[{case.id}] max |graphattn - peer| of the outputs: {diffs}", flush=True)
    timing = time_alternating(
        steps, repeats=args.repeats, budget_s=args.budget, sync=sync_fn(device)
    )
    print(
        f"[{case.id}] timed {timing.repeats} rounds in {timing.wall_s:.1f} s: "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in timing.median_ms.items()),
        flush=True,
    )
    del steps
    gc.collect()
    mem = {}
    for impl in [*case.variants, PEER]:
        mem[impl] = _measure_memory(case, impl, args)
        shown = mem[impl].get("peak_mib")
        shown = f"{shown:.1f} MiB" if shown is not None else mem[impl].get("error")
        print(f"[{case.id}] peak memory {impl}: {shown}", flush=True)
    rows = []
    peer_ms = timing.median_ms[PEER]
    peer_mib = mem[PEER].get("peak_mib")
    for impl, desc in case.variants.items():
        ga_ms, ga_mib = timing.median_ms[impl], mem[impl].get("peak_mib")
        ratio, mem_ratio = ga_ms / peer_ms, _ratio(ga_mib, peer_mib)
        goals, ok = [], True
        if case.goal_time is not None and impl not in case.info_only:
            goals.append(f"t<={case.goal_time:g}")
            ok = ok and ratio <= case.goal_time
        if case.goal_mem is not None and impl not in case.info_only:
            goals.append(f"m<={case.goal_mem:g}")
            ok = ok and mem_ratio is not None and mem_ratio <= case.goal_mem
        bound_ms = None if case.bound_bytes is None else case.bound_bytes / bandwidth * 1e3
        rows.append(
            {
                "case": case.id,
                "title": case.title,
                "impl": impl,
                "graphattn": desc,
                "peer": case.peer,
                "graphattn_ms": ga_ms,
                "peer_ms": peer_ms,
                "ratio": ratio,
                "graphattn_mib": ga_mib,
                "peer_mib": peer_mib,
                "mem_ratio": mem_ratio,
                "goal": " ".join(goals) or "info",
                "pass": (ok if goals else None),
                "max_abs_diff": diffs[impl],
                "bound_bytes": case.bound_bytes,
                "bound_ms": bound_ms,
                "x_bound": _ratio(ga_ms, bound_ms),
                "peer_x_bound": _ratio(peer_ms, bound_ms),
                "repeats": timing.repeats,
                "graphattn_times_ms": timing.times_ms[impl],
                "peer_times_ms": timing.times_ms[PEER],
                "warmup_ms": {impl: timing.warmup_ms[impl], PEER: timing.warmup_ms[PEER]},
                "memory": {impl: mem[impl], PEER: mem[PEER]},
            }
        )
    print(f"[{case.id}] done in {time.perf_counter() - t0:.1f} s", flush=True)
    return rows


def print_table(rows: list[dict], cases: list[Case]) -> str:
    headers = ["case", "impl", "graphattn ms", "peer ms", "ratio", "graphattn MiB", "peer MiB"]
    headers += ["mem ratio", "bound ms", "x bound", "goal", "result"]
    body = [
        [
            r["case"],
            r["impl"],
            fmt(r["graphattn_ms"]),
            fmt(r["peer_ms"]),
            fmt(r["ratio"], 3),
            fmt(r["graphattn_mib"]),
            fmt(r["peer_mib"]),
            fmt(r["mem_ratio"], 3),
            fmt(r["bound_ms"]),
            fmt(r["x_bound"], 1),
            r["goal"],
            {True: "PASS", False: "FAIL", None: "-"}[r["pass"]],
        ]
        for r in rows
    ]
    lines = [format_table(headers, body, left=2), "", "cases (forward+backward, fp32):"]
    for c in cases:
        lines.append(f"  {c.id}: {c.title}; peer = {c.peer}")
        for k, v in c.variants.items():
            lines.append(f"      {k}: {v}")
    return "\n".join(lines)


def measure_one(args: argparse.Namespace) -> None:
    case_id, impl = args.measure_one
    cases = {c.id: c for c in make_cases(args.quick, args.big)}
    if case_id not in cases:
        raise SystemExit(f"unknown case {case_id!r}; known: {sorted(cases)}")
    steps = cases[case_id].build(torch.device(args.device))
    if impl not in steps:
        raise SystemExit(f"unknown implementation {impl!r}; known: {sorted(steps)}")
    step = steps[impl]
    del steps
    print(json.dumps(measure_peak_rss(step)), flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--big", action="store_true", help="only the N=1M cases")
    parser.add_argument("--out", default=None, help="JSON path (default results/core_<dev>)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per case (max)")
    parser.add_argument("--budget", type=float, default=40.0, help="seconds of timing per case")
    parser.add_argument(
        "--cases", nargs="+", default=None, help="run only the cases whose id starts so"
    )
    parser.add_argument("--measure-one", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
    torch.set_num_threads(THREADS)
    if args.measure_one:
        measure_one(args)
        return
    device = torch.device(args.device)
    start = time.perf_counter()
    info = run_info(MODULE, argv, device)
    print(
        f"torch {info['torch']}, {info['threads']} threads, device {device}, "
        f"{'quick' if args.quick else 'full'} run",
        flush=True,
    )
    cases = [
        c
        for c in make_cases(args.quick, args.big)
        if not args.cases or c.id.startswith(tuple(args.cases))
    ]
    bandwidth = copy_bandwidth(device)
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write)", flush=True)
    rows = []
    for case in cases:
        rows.extend(run_case(case, args, bandwidth))
    table = print_table(rows, cases)
    print()
    print(table, flush=True)
    wall = time.perf_counter() - start
    print(f"\ntotal wall time {wall:.1f} s", flush=True)
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", f"core_{device.type}.json"
    )
    record = {**info, "quick": args.quick, "wall_s": wall, "copy_bandwidth_bytes_s": bandwidth}
    write_json_atomic(out, {**record, "rows": rows})
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()

"""Dispatch: which backend runs a call.

``backend="auto"`` asks the registered backends in the order of :class:`AutoPolicy` and runs
the first that can serve the call; a forced backend runs if it can serve, and otherwise
:class:`~graphattn.BackendNotSupportedError` lists every backend's reasons with the call's
shapes, dtypes, device and graph (the model is xFormers' ``ops/fmha/dispatch.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .backends import (
    AttentionCall,
    Backend,
    BackendNotSupportedError,
    backend_names,
    get_backend,
)
from .graph import Graph, PerSampleGraph
from .scores import DotProduct

__all__ = ["AutoPolicy", "auto_policy", "choose_backend", "select_backend"]


@dataclass
class AutoPolicy:
    """The rule behind ``backend="auto"``; change the fields of :data:`auto_policy` to
    override it globally, or pass ``backend=`` per call.

    :meth:`order` ranks the backends; the first one that can serve the call runs:

    0. a kernel score (:mod:`graphattn.kernels`) on a complete graph: ``linear`` (time
       linear in ``N``), then ``edges``;
    1. an unpadded disjoint union of at least two complete graphs given as an edge list (a
       PyG batch of complete graphs): ``blocks``;
    2. complete and causal graphs, and one complete graph given as an edge list: ``dense``
       (the fused kernel, with no mask or a padding mask);
    3. otherwise ``dense`` if the edge density ``E / (Nd * Ns)`` is at least
       :meth:`density_threshold` of the head dim, else ``edges``;

    then every other registered backend. Backends refuse what they cannot serve (the dense
    backend: per-edge values or features, scores without a dense form, masks above
    ``max_mask_elements``), so such calls fall through to ``edges``.

    The threshold ``crossover_density * (1 + crossover_head_dim / D)`` fits the crossover
    measured by ``python -m benchmarks.bench_crossover`` (forward + backward, fp32, 2 CPU
    threads, random graphs, N = 256 .. 4096): the density at which dense wins is nearly
    independent of ``N`` for ``N >= 512`` and lies between 1/32 and 1/16 for ``D = 64`` and
    between 1/16 and 1/8 for ``D = 8`` (the defaults give 0.047 and 0.095), because the dense
    kernel's per-score overhead matters more at small ``D``. ``D`` is the larger of the
    query/key and value head dims (GAT's queries and keys have dim 1; its cost follows the
    values).

    Where the edge list wins, the fused kernel (``fused``: C++ on CPU, Triton on CUDA) goes
    before the pure-torch ``edges`` when the call has at least ``fused_min_work`` (edge,
    group) pairs ``E * B * H`` (default 0: always). Measured on this 2-core CPU with
    ``graph_attention`` forward + backward (random graphs, in-degree 4-16, 8 heads of 8,
    N from 64 to 20000, with and without dropout; two runs of
    ``python -m benchmarks.bench_fused_cpu``), the kernel took 0.28-0.67x the pure-torch
    path's time, small graphs included (Cora's size: 0.34-0.49x dot product, 0.44-0.65x
    GAT); on an H200 the Triton kernel took 0.06-0.16x at N = 10^5 to 10^6 (small graphs on
    CUDA not measured; see the README's benchmarks).

    Attributes:
        crossover_density: the threshold for a large head dim.
        crossover_head_dim: how much a small head dim raises the threshold.
        max_mask_elements: the largest ``Nd * Ns`` mask the dense backend materialises.
        fused_min_work: the fewest (edge, group) pairs for which ``fused`` goes first.
        max_memory_bytes: the most memory a backend may plan to allocate for one call
            beyond its inputs (each backend estimates its own before allocating and refuses
            above it, naming the figure); ``None``: the device's total memory (RAM on CPU,
            the GPU's memory on CUDA).
    """

    crossover_density: float = 0.04
    crossover_head_dim: float = 11.0
    max_mask_elements: int = 1 << 26
    fused_min_work: int = 0
    max_memory_bytes: int | None = None

    def density_threshold(self, head_dim: int) -> float:
        """Edge density above which ``auto`` prefers the dense backend."""
        return self.crossover_density * (1.0 + self.crossover_head_dim / max(1, head_dim))

    def order(
        self, graph: Graph, head_dim: int, groups: int = 1, *, kernel: bool = False
    ) -> list[str]:
        """Registered backend names, most preferred first, for ``graph``, head dim,
        ``groups = B * H`` attention groups and whether the score is a kernel score
        (:mod:`graphattn.kernels`: ``linear`` first on complete graphs)."""
        if kernel and graph.is_complete:
            first = ["linear", "edges"]
        elif graph.mask_free or graph.is_complete:
            first = ["dense"]
        elif graph.key_padding_mask is None and _blocks(graph) > 1:
            first = ["blocks", "dense"]
        else:
            size = graph.num_dst * graph.num_src
            dense = size > 0 and graph.num_edges / size >= self.density_threshold(head_dim)
            first = ["dense", "edges"] if dense else ["edges", "dense"]
        if graph.num_edges * groups >= self.fused_min_work:  # the kernel before pure torch
            first.insert(first.index("edges") if "edges" in first else len(first), "fused")
        names = backend_names()
        return [n for n in first if n in names] + [n for n in names if n not in first]


def _blocks(graph: Graph) -> int:
    blocks = graph.complete_blocks()
    return 0 if blocks is None else len(blocks) - 1


#: the process-wide auto rule; mutate its fields to override.
auto_policy = AutoPolicy()


def select_backend(call: AttentionCall, backend: str) -> Backend:
    """The backend that runs ``call``: the first of the policy's order that can serve it
    (``backend="auto"``), or ``backend`` itself.

    Raises:
        BackendNotSupportedError: no backend, or not the forced one, can serve the call.
    """
    if backend == "auto":
        head_dim = max(call.head_dim, call.v.shape[-1])
        groups = call.batch * call.heads
        for name in call.policy.order(call.graph, head_dim, groups, kernel=call.score.kernel):
            chosen = get_backend(name)
            if not chosen.reasons(call):
                return chosen
        raise BackendNotSupportedError(_refusal(call, None))
    chosen = get_backend(backend)
    if chosen.reasons(call):
        raise BackendNotSupportedError(_refusal(call, chosen))
    return chosen


def _refusal(call: AttentionCall, forced: Backend | None) -> str:
    """Every backend's reasons and the call, for :class:`BackendNotSupportedError`."""
    if forced is None:
        head = "no backend can serve this call"
    else:
        head = f"backend {forced.name!r} cannot serve this call: " + "; ".join(forced.reasons(call))
    lines = [head, "reasons of every backend:"]
    for name in backend_names():
        reasons = get_backend(name).reasons(call)
        lines.append(f"  {name}: " + ("; ".join(reasons) if reasons else "can serve"))
    lines.append(f"call: {call.describe()}")
    return "\n".join(lines)


def choose_backend(
    graph: Graph,
    *,
    head_dim: int = 64,
    has_edge_values: bool = False,
    policy: AutoPolicy | None = None,
) -> str:
    """The backend ``"auto"`` picks for a dot-product call on ``graph`` with head dim
    ``head_dim`` (see :class:`AutoPolicy`); ``has_edge_values``: the call has per-edge values.

    Example:
        >>> from graphattn import Graph, choose_backend
        >>> choose_backend(Graph.causal(100))
        'dense'
        >>> choose_backend(Graph.window(4096, 8)) in ("fused", "edges")  # fused: C++ built
        True
    """

    def meta(*shape: int) -> torch.Tensor:  # shapes only: nothing is allocated
        return torch.empty(*shape, device="meta")

    if isinstance(graph, PerSampleGraph):  # attention runs on its flat graph, a batch of 1
        graph = graph.flat()
    b = 1 if graph.key_padding_mask is None else len(graph.key_padding_mask)
    nd, ns, e = graph.num_dst, graph.num_src, graph.num_edges
    call = AttentionCall(
        q=meta(b, 1, nd, head_dim),
        k=meta(b, 1, ns, head_dim),
        v=meta(b, 1, ns, head_dim),
        graph=graph,
        score=DotProduct(),
        scale=1.0,
        bias=None,
        bias_layout=None,
        edge_features=None,
        edge_values=meta(1, e, 1, head_dim) if has_edge_values else None,
        dropout_p=0.0,
        need_weights=False,
        batched=True,
        policy=policy or auto_policy,
    )
    return select_backend(call, "auto").name

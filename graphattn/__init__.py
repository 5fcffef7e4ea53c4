"""graphattn: attention as message passing over graphs.

A complete graph is ordinary dense attention; any other graph (causal, windowed, an image
grid, a citation network, a cross-modal bipartite graph) is the same operator with fewer
edges. See :func:`graph_attention` and :class:`GraphAttention`.
"""

from .attention import GraphAttention
from .functional import (
    AttentionOutput,
    AttentionWeights,
    AutoPolicy,
    BackendNotSupportedError,
    auto_policy,
    choose_backend,
    graph_attention,
    segment_softmax,
)
from .graph import (
    CausalGraph,
    CompleteGraph,
    EdgeListGraph,
    Graph,
    GridGraph,
    WindowGraph,
)

__version__ = "0.1.0"

__all__ = [
    "Graph",
    "CompleteGraph",
    "CausalGraph",
    "WindowGraph",
    "GridGraph",
    "EdgeListGraph",
    "graph_attention",
    "segment_softmax",
    "AttentionOutput",
    "AttentionWeights",
    "AutoPolicy",
    "auto_policy",
    "choose_backend",
    "BackendNotSupportedError",
    "GraphAttention",
]

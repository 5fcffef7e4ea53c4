"""graphattn: attention as message passing over graphs.

A complete graph is ordinary dense attention; any other graph (causal, windowed, an image
grid, a citation network, a cross-modal bipartite graph) is the same operator with fewer
edges. See :func:`graph_attention` and :class:`GraphAttention`.
"""

from . import backends, kernels, scores
from .attention import GraphAttention
from .backends import AttentionCall, Backend, register_backend
from .conv import ConvOutput, GATConv, GATv2Conv, TransformerConv, add_self_loops
from .decoding import KVCache
from .explain import (
    HeadStatistics,
    PerturbationResult,
    attention_rollout,
    force_dense_backend,
    grad_attention,
    grad_attention_by_role,
    head_statistics,
    perturbation_check,
    summarize_by_modality,
)
from .functional import (
    AttentionOutput,
    AttentionWeights,
    AutoPolicy,
    BackendNotSupportedError,
    auto_policy,
    choose_backend,
    graph_attention,
    graph_attention_with_weights,
    segment_softmax,
    zero_padded_nodes,
)
from .global_attention import SGFormerAttention
from .gps import LocalGlobalLayer
from .graph import (
    CausalGraph,
    CompleteGraph,
    EdgeListGraph,
    Graph,
    GridGraph,
    PerSampleGraph,
    WindowGraph,
)
from .hetero import HGTConv, TypedLinear
from .interop import from_pyg, to_hetero
from .layers import (
    GraphTransformer,
    GraphTransformerLayer,
    LayerOutput,
    TransformerOutput,
)
from .mha import MultiheadAttention
from .partition import NodePartitions, PartitionBatch
from .positional import (
    AxialRotaryEmbedding,
    LaplacianEigenpairs,
    LaplacianPE,
    LearnedPositionalEncoding,
    RelativePositionBias1D,
    RelativePositionBias2D,
    RotaryEmbedding,
    ShortestPathBias,
    SinusoidalPositionalEncoding,
    clustering_encoding,
    degree_encoding,
    laplacian_eigenpairs,
    laplacian_eigenvector_pe,
    random_walk_pe,
    shortest_path_distance,
    sinusoidal_2d,
    sinusoidal_encoding,
    t5_relative_position_bucket,
)
from .scores import Score
from .structure import LearnedStructureBias, WeightedGraph, attention_to_graph

__version__ = "0.1.0"

__all__ = [
    "Graph",
    "CompleteGraph",
    "CausalGraph",
    "WindowGraph",
    "GridGraph",
    "EdgeListGraph",
    "PerSampleGraph",
    "graph_attention",
    "graph_attention_with_weights",
    "zero_padded_nodes",
    "segment_softmax",
    "AttentionOutput",
    "AttentionWeights",
    "AutoPolicy",
    "auto_policy",
    "choose_backend",
    "BackendNotSupportedError",
    "AttentionCall",
    "Backend",
    "register_backend",
    "backends",
    "kernels",
    "scores",
    "Score",
    "GraphAttention",
    # PyG-style layers and conversion
    "GATConv",
    "GATv2Conv",
    "TransformerConv",
    "HGTConv",
    "TypedLinear",
    "ConvOutput",
    "add_self_loops",
    "from_pyg",
    "to_hetero",
    "SGFormerAttention",
    "MultiheadAttention",
    "LocalGlobalLayer",
    "NodePartitions",
    "PartitionBatch",
    # layers
    "GraphTransformerLayer",
    "GraphTransformer",
    "LayerOutput",
    "TransformerOutput",
    "KVCache",
    # positional and structural encodings
    "sinusoidal_encoding",
    "sinusoidal_2d",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEncoding",
    "RotaryEmbedding",
    "AxialRotaryEmbedding",
    "t5_relative_position_bucket",
    "RelativePositionBias1D",
    "RelativePositionBias2D",
    "laplacian_eigenvector_pe",
    "laplacian_eigenpairs",
    "LaplacianEigenpairs",
    "LaplacianPE",
    "random_walk_pe",
    "degree_encoding",
    "clustering_encoding",
    "shortest_path_distance",
    "ShortestPathBias",
    # learned structure (graphattn.plot holds the pictures; it needs matplotlib)
    "attention_to_graph",
    "WeightedGraph",
    "LearnedStructureBias",
    # explanations
    "attention_rollout",
    "grad_attention",
    "grad_attention_by_role",
    "force_dense_backend",
    "head_statistics",
    "HeadStatistics",
    "perturbation_check",
    "PerturbationResult",
    "summarize_by_modality",
]

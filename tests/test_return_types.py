"""One return type per method: every public call returns one type whatever its flags.

The weights come from a ``*_with_weights`` sibling; the old ``need_weights=True`` (and
``return_attention=True``, ``roles=``, ``return_eigenvalues=True``) still work for a while,
give the sibling's result and warn with a ``FutureWarning`` that names the sibling. PyG's
``return_attention_weights=True`` on the conv layers is the one documented exception: PyG
code passes it and expects PyG's tuple.
"""

from __future__ import annotations

import ast
import inspect
import warnings

import pytest
import torch

import graphattn
import modalities
from graphattn import (
    AttentionOutput,
    ConvOutput,
    GATConv,
    GATv2Conv,
    Graph,
    GraphAttention,
    GraphTransformer,
    GraphTransformerLayer,
    LayerOutput,
    TransformerConv,
    TransformerOutput,
    grad_attention,
    grad_attention_by_role,
    graph_attention,
    graph_attention_with_weights,
    laplacian_eigenpairs,
    laplacian_eigenvector_pe,
)

C, H, N = 16, 4, 9


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, N, C, generator=torch.Generator().manual_seed(0))


def _no_warning(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------- the operator


@pytest.mark.parametrize("graph", [None, Graph.window(N, 2), Graph.causal(N)])
def test_graph_attention_and_its_sibling(graph):
    q = torch.randn(2, H, N, 4, generator=torch.Generator().manual_seed(1))
    out = _no_warning(graph_attention, q, q, q, graph)
    res = _no_warning(graph_attention_with_weights, q, q, q, graph)
    assert isinstance(out, torch.Tensor) and isinstance(res, AttentionOutput)
    torch.testing.assert_close(res.out, out)
    dense = res.attention.to_dense()  # (B, H, N, N): rows sum to one
    torch.testing.assert_close(dense.sum(-1), torch.ones(2, H, N))
    with pytest.warns(FutureWarning, match="call graph_attention_with_weights"):
        old = graph_attention(q, q, q, graph, need_weights=True)
    assert isinstance(old, AttentionOutput)
    torch.testing.assert_close(old.out, out)


def test_the_sibling_takes_every_option_of_the_operator():
    """Same keywords (minus the flag), so that switching is renaming the call."""
    plain = inspect.signature(graph_attention).parameters
    sibling = inspect.signature(graph_attention_with_weights).parameters
    assert set(plain) - set(sibling) == {"need_weights", "bias"}  # the flag, a deprecated name
    assert set(sibling) <= set(plain)


# ---------------------------------------------------------------------- modules


def _modules():
    torch.manual_seed(0)
    layer = GraphTransformerLayer(C, H, dim_feedforward=32, dropout=0.0)
    stack = GraphTransformer(2, C, H, dim_feedforward=32, dropout=0.0)
    return [
        (GraphAttention(C, H), AttentionOutput, "GraphAttention"),
        (layer, LayerOutput, "GraphTransformerLayer"),
        (stack, TransformerOutput, "GraphTransformer"),
    ]


@pytest.mark.parametrize("index", range(3))
@pytest.mark.parametrize("graph", [None, Graph.window(N, 1)])
def test_module_forward_returns_a_tensor_and_forward_with_weights_the_record(index, graph, x):
    module, record, name = _modules()[index]
    module.eval()
    out = _no_warning(module, x, graph)
    res = _no_warning(module.forward_with_weights, x, graph)
    assert isinstance(out, torch.Tensor) and type(res) is record
    torch.testing.assert_close(res.out, out)
    with pytest.warns(FutureWarning, match=rf"call {name}.forward_with_weights"):
        old = module(x, graph, need_weights=True)
    assert type(old) is record
    torch.testing.assert_close(old.out, out)


def test_return_attention_is_still_the_deprecated_flag(x):
    attn = GraphAttention(C, H)
    with pytest.warns(FutureWarning, match="forward_with_weights"):
        assert isinstance(attn(x, return_attention=True), AttentionOutput)
    with pytest.raises(TypeError, match="return_attention= is the old name of need_weights="):
        attn(x, need_weights=True, return_attention=True)


def test_forward_with_weights_refuses_the_flag_it_replaces(x):
    with pytest.raises(TypeError, match="need_weights"):
        GraphAttention(C, H).forward_with_weights(x, need_weights=False)


def test_the_stack_forwards_the_weights_under_checkpointing(x):
    torch.manual_seed(0)
    stack = GraphTransformer(2, C, H, dim_feedforward=32, dropout=0.0, checkpoint=True)
    x = x.requires_grad_()
    res = _no_warning(stack.forward_with_weights, x, Graph.window(N, 1))
    assert len(res.attentions) == 2 and res.attentions[0].values.requires_grad
    res.out.sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("conv_cls", [GATConv, GATv2Conv, TransformerConv])
def test_conv_layers_and_pygs_exception(conv_cls):
    torch.manual_seed(0)
    conv = conv_cls(C, 8, heads=2).eval()
    feats = torch.randn(6, C)
    ei = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]])
    out = _no_warning(conv, feats, ei)
    res = _no_warning(conv.forward_with_weights, feats, ei)
    assert isinstance(out, torch.Tensor) and isinstance(res, ConvOutput)
    torch.testing.assert_close(res.out, out)
    assert res.attention.values.shape == (res.edge_index.shape[1], 2)  # self-loops included
    pyg_out, (edges, alpha) = _no_warning(conv, feats, ei, return_attention_weights=True)
    torch.testing.assert_close(pyg_out, out)
    torch.testing.assert_close(alpha, res.attention.values)
    assert torch.equal(edges, res.edge_index)
    name = conv_cls.__name__
    with pytest.warns(FutureWarning, match=rf"call {name}.forward_with_weights"):
        assert isinstance(conv(feats, ei, need_weights=True), ConvOutput)


# ---------------------------------------------------------------------- explanations


def test_grad_attention_returns_a_tensor_and_by_role_a_dict(x):
    torch.manual_seed(0)
    stack = GraphTransformer(2, C, H, dim_feedforward=32, dropout=0.0).eval()
    res = stack.forward_with_weights(x)
    rel = _no_warning(grad_attention, res.out[:, 0].sum(-1), res.attentions, retain_graph=True)
    assert isinstance(rel, torch.Tensor) and rel.shape == (2, N, N)
    by_role = _no_warning(
        grad_attention_by_role,
        res.out[:, 0].sum(-1),
        res.attentions,
        [("s", "s"), ("s", "s")],
        retain_graph=True,
    )
    assert set(by_role) == {("s", "s")}
    torch.testing.assert_close(by_role[("s", "s")], rel)
    with pytest.warns(FutureWarning, match="call grad_attention_by_role"):
        old = grad_attention(res.out[:, 0].sum(-1), res.attentions, roles=[("s", "s")] * 2)
    torch.testing.assert_close(old[("s", "s")], rel)


def test_grad_attention_points_cross_attention_to_by_role():
    torch.manual_seed(0)
    attn = GraphAttention(C, H).eval()
    res = attn.forward_with_weights(torch.randn(1, 3, C), x_src=torch.randn(1, 5, C))
    with pytest.raises(ValueError, match="use grad_attention_by_role for cross-attention"):
        grad_attention(res.out.sum(), [res.attention])
    with pytest.raises(ValueError, match="got 1 attentions but 2 roles"):
        grad_attention_by_role(res.out.sum(), [res.attention], [("q", "s"), ("q", "q")])


# ---------------------------------------------------------------------- positions


def test_laplacian_eigenvectors_and_eigenpairs():
    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])  # a 4-cycle
    pe = _no_warning(laplacian_eigenvector_pe, ei, 4, 3)
    vectors, values = _no_warning(laplacian_eigenpairs, ei, 4, 3)
    assert isinstance(pe, torch.Tensor) and torch.equal(pe, vectors)
    torch.testing.assert_close(values, torch.tensor([1.0, 1.0, 2.0]))  # 1 - cos(2 pi k / 4)
    with pytest.warns(FutureWarning, match="call laplacian_eigenpairs"):
        old_vectors, old_values = laplacian_eigenvector_pe(ei, 4, 3, return_eigenvalues=True)
    assert torch.equal(old_values, values)


# ---------------------------------------------------------------------- the rule itself


def _public_callables():
    packages = [(graphattn, name) for name in graphattn.__all__]
    packages += [(modalities, name) for name in modalities.__all__]
    for package, name in packages:
        obj = getattr(package, name)
        if inspect.isfunction(obj):
            yield name, obj
        elif inspect.isclass(obj):
            for meth_name, meth in vars(obj).items():
                if inspect.isfunction(meth) and not meth_name.startswith("_"):
                    yield f"{name}.{meth_name}", meth


#: union returns that are one type in practice: optional values, and PyG's own convention
_ALLOWED = {
    "GATConv.forward",  # PyG's return_attention_weights=True -> (out, (edge_index, alpha))
    "GATv2Conv.forward",
    "TransformerConv.forward",
}


def _union_parts(annotation: str) -> list[str]:
    """The members of a top-level ``A | B`` (or ``Union[A, B]``) annotation, ``None`` left
    out (an optional value is one type)."""
    node = ast.parse(annotation, mode="eval").body
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("Union", "typing.Union"):
        parts = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
    else:
        parts = []
        while isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            parts.append(node.right)
            node = node.left
        parts.append(node)
    return [ast.unparse(p) for p in parts if ast.unparse(p) != "None"]


def test_no_public_function_returns_a_union_of_types():
    offenders = []
    for name, fn in _public_callables():
        ret = inspect.signature(fn).return_annotation
        if ret is inspect.Signature.empty:
            continue
        ret = ret if isinstance(ret, str) else inspect.formatannotation(ret)
        if len(_union_parts(ret)) > 1 and name not in _ALLOWED:
            offenders.append(f"{name} -> {ret}")
    assert not offenders, offenders


def test_the_rule_sees_unions():
    assert _union_parts("Tensor | AttentionOutput") == ["AttentionOutput", "Tensor"]
    assert _union_parts("Union[Tensor, dict]") == ["Tensor", "dict"]
    assert _union_parts("Tensor | None") == ["Tensor"]
    assert _union_parts("tuple[Tensor | None, Tensor]") == ["tuple[Tensor | None, Tensor]"]

"""Heterogeneous graphs: the conv layers inside PyG's ``HeteroConv`` and under
``graphattn.to_hetero`` (PyG's ``to_hetero``) give the numbers of the same models built from
PyG's layers, forward and backward; lazy ``in_channels=-1`` layers are shaped by their first
call and their ``state_dict`` round-trips."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

pyg_nn = pytest.importorskip("torch_geometric.nn")
from torch_geometric.data import HeteroData  # noqa: E402

import graphattn  # noqa: E402

F64 = torch.float64

# (graphattn layer, PyG layer, options); self-loops are PyG's refusal on bipartite relations
CONVS = [
    (graphattn.GATConv, "GATConv", {"heads": 2, "add_self_loops": False}),
    (graphattn.GATConv, "GATConv", {"heads": 2, "add_self_loops": False, "residual": True}),
    (graphattn.GATv2Conv, "GATv2Conv", {"heads": 2, "add_self_loops": False}),
    (graphattn.TransformerConv, "TransformerConv", {"heads": 2}),
    (graphattn.TransformerConv, "TransformerConv", {"heads": 2, "beta": True, "concat": False}),
]
IDS = ["gat", "gat-residual", "gatv2", "transformer", "transformer-beta-mean"]


def _data(seed: int = 0) -> HeteroData:
    """Two node types of widths 5 and 3, two bipartite relations and one within ``paper``;
    ``author`` 3 gets no in-edge."""
    gen = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data["paper"].x = torch.randn(6, 5, generator=gen, dtype=F64)
    data["author"].x = torch.randn(4, 3, generator=gen, dtype=F64)

    def edges(ns: int, nd: int, e: int) -> Tensor:
        return torch.stack(
            [torch.randint(0, ns, (e,), generator=gen), torch.randint(0, nd, (e,), generator=gen)]
        )

    data["author", "writes", "paper"].edge_index = edges(4, 6, 12)
    data["paper", "written_by", "author"].edge_index = edges(6, 3, 10)
    data["paper", "cites", "paper"].edge_index = edges(6, 6, 9)
    return data


def _copy_weights(ours: nn.Module, pyg: nn.Module) -> None:
    """PyG's weights into ours (same names); PyG's unused ``lin_skip`` is left out."""
    ours_state = ours.state_dict()
    state = {k: v for k, v in pyg.state_dict().items() if k in ours_state}
    ours.load_state_dict(state, strict=True)


def _run(model: nn.Module, data: HeteroData) -> tuple[dict, dict, dict]:
    """Outputs, input gradients and parameter gradients (by name) for one random upstream
    gradient per node type."""
    x_dict = {k: v.clone().requires_grad_() for k, v in data.x_dict.items()}
    out = model(x_dict, data.edge_index_dict)
    gen = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=F64)).sum() for o in out.values())
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(x_dict.values()) + list(params.values()))
    x_grads = dict(zip(x_dict, grads[: len(x_dict)], strict=True))
    p_grads = dict(zip(params, grads[len(x_dict) :], strict=True))
    return out, x_grads, p_grads


def _assert_same(ours: tuple, ref: tuple) -> None:
    (o_out, o_x, o_p), (r_out, r_x, r_p) = ours, ref
    assert o_out.keys() == r_out.keys()
    for k in r_out:
        assert torch.isfinite(o_out[k]).all()
        torch.testing.assert_close(o_out[k], r_out[k], rtol=0, atol=1e-12, msg=str(k))
    for k in r_x:
        torch.testing.assert_close(o_x[k], r_x[k], rtol=0, atol=1e-12, msg=f"x[{k}]")
    for name, g in o_p.items():
        torch.testing.assert_close(g, r_p[name], rtol=0, atol=1e-12, msg=name)


def _hetero_conv(make, data: HeteroData) -> nn.Module:
    return pyg_nn.HeteroConv({et: make() for et in data.edge_types}, aggr="sum").double()


@pytest.mark.parametrize(("ours", "pyg", "kw"), CONVS, ids=IDS)
def test_hetero_conv_matches_pyg(ours: type, pyg: str, kw: dict) -> None:
    data = _data()
    torch.manual_seed(0)
    ref = _hetero_conv(lambda: getattr(pyg_nn, pyg)((-1, -1), 4, **kw), data)
    model = _hetero_conv(lambda: ours((-1, -1), 4, **kw), data)
    with torch.no_grad():  # shape the lazy projections
        ref(data.x_dict, data.edge_index_dict)
        model(data.x_dict, data.edge_index_dict)
    _copy_weights(model, ref)
    _assert_same(_run(model, data), _run(ref, data))


class _Gnn(nn.Module):
    """A homogeneous two-layer GNN with the given conv class."""

    def __init__(self, conv: type, kw: dict) -> None:
        super().__init__()
        self.conv1 = conv((-1, -1), 4, **kw)
        self.conv2 = conv((-1, -1), 3, **kw)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


@pytest.mark.parametrize("aggr", ["sum", "mean"])
@pytest.mark.parametrize(("ours", "pyg", "kw"), CONVS, ids=IDS)
def test_to_hetero_matches_pyg(ours: type, pyg: str, kw: dict, aggr: str) -> None:
    data = _data(1)
    ref = pyg_nn.to_hetero(_Gnn(getattr(pyg_nn, pyg), kw), data.metadata(), aggr=aggr).double()
    model = _Gnn(ours, kw)
    hetero = graphattn.to_hetero(model, data.metadata(), aggr=aggr).double()
    with torch.no_grad():
        ref(data.x_dict, data.edge_index_dict)
        hetero(data.x_dict, data.edge_index_dict)
    _copy_weights(hetero, ref)
    _assert_same(_run(hetero, data), _run(ref, data))
    # the layers are graphattn's, before and after: the MessagePassing view was temporary
    layers = [m for m in hetero.modules() if isinstance(m, ours)]
    assert len(layers) == 2 * len(data.edge_types)
    assert all(type(m) is ours for m in [*layers, model.conv1, model.conv2])
    assert not isinstance(model.conv1, pyg_nn.MessagePassing)
    assert "GATConv(" in repr(hetero) or "Conv(" in repr(hetero)


class _OneLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = graphattn.GATConv((-1, -1), 4, add_self_loops=False)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.conv(x, edge_index)


def test_plain_to_hetero_sees_no_message_passing() -> None:
    """Why :func:`graphattn.to_hetero` exists: PyG's own gives a module that is not a
    ``MessagePassing`` one output per edge type, never summed into node types."""
    data = _data()
    plain = pyg_nn.to_hetero(_OneLayer(), data.metadata()).double()
    assert set(plain(data.x_dict, data.edge_index_dict)) == set(data.edge_types)
    ours = graphattn.to_hetero(_OneLayer(), data.metadata()).double()
    assert set(ours(data.x_dict, data.edge_index_dict)) == set(data.node_types)


def test_to_hetero_refuses_self_loops_on_bipartite_relations() -> None:
    data = _data()
    with pytest.raises(ValueError, match="add_self_loops"):
        graphattn.to_hetero(_Gnn(graphattn.GATConv, {}), data.metadata())


@pytest.mark.parametrize(("ours", "pyg", "kw"), CONVS, ids=IDS)
@pytest.mark.parametrize("in_channels", [-1, (-1, -1)])
def test_lazy_layer_state_dict_round_trips(ours: type, pyg: str, kw: dict, in_channels) -> None:
    data = _data()
    x = data["paper"].x if in_channels == -1 else (data["paper"].x, data["author"].x)
    ei = data["paper", "written_by", "author"].edge_index
    if in_channels == -1:
        ei = data["paper", "cites", "paper"].edge_index
    lazy = ours(in_channels, 4, **kw).double()
    state = copy.deepcopy(lazy.state_dict())  # unshaped: saved as torch's lazy modules do
    lazy.load_state_dict(state)
    out = lazy(x, ei)
    fresh = ours(in_channels, 4, **kw).double()
    fresh.load_state_dict(lazy.state_dict())  # shapes fresh's projections from the checkpoint
    torch.testing.assert_close(fresh(x, ei), out, rtol=0, atol=0)
    assert not any(isinstance(p, nn.parameter.UninitializedParameter) for p in fresh.parameters())
    sized = ours((5, 3) if in_channels != -1 else 5, 4, **kw).double()
    sized.load_state_dict(lazy.state_dict())  # a shaped checkpoint fits a sized layer
    torch.testing.assert_close(sized(x, ei), out, rtol=0, atol=0)


def test_lazy_projections_are_glorot_initialised() -> None:
    conv = graphattn.GATv2Conv(-1, 64, heads=1, add_self_loops=False)
    conv(torch.randn(3, 256), torch.tensor([[0, 1], [1, 2]]))
    bound = (6.0 / (256 + 64)) ** 0.5
    assert type(conv.lin_l) is nn.Linear and conv.lin_l.weight.shape == (64, 256)
    assert conv.lin_l.weight.abs().max() <= bound and conv.lin_l.weight.abs().max() > bound / 2
    assert (conv.lin_l.bias == 0).all()
    conv.reset_parameters()  # shaped now: reset like a sized layer


@pytest.mark.parametrize("bad", [0, -2, (3, 0), 1.5])
def test_in_channels_refusals(bad) -> None:
    with pytest.raises((TypeError, ValueError), match="in_channels"):
        graphattn.GATConv(bad, 4)

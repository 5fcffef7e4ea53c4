"""HGTConv: ``from_pyg`` of PyG's ``HGTConv`` gives its numbers (forward, input and
parameter gradients, float64) on a graph of three node types and three relations of
different sizes, node types and nodes without in-edges included; a layer built from scratch
trains; bad inputs fail naming what is wrong."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

pyg_nn = pytest.importorskip("torch_geometric.nn")
from torch_geometric.data import HeteroData  # noqa: E402

import graphattn  # noqa: E402
from graphattn.hetero import edge_type_key  # noqa: E402

F64 = torch.float64
OUT = 8  # = paper's width, so paper gets the gated skip and author (5 wide) does not
WRITES = ("author", "writes", "paper")
REV = ("paper", "rev_writes", "author")
PUBLISHES = ("venue", "publishes", "paper")


def _data(seed: int = 0) -> HeteroData:
    """paper (6, 8), author (4, 5), venue (2, 3); relations of 12, 7 and 4 edges. venue is
    the target of no relation; author 3 and paper 5 get no in-edge."""
    gen = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data["paper"].x = torch.randn(6, 8, generator=gen, dtype=F64)
    data["author"].x = torch.randn(4, 5, generator=gen, dtype=F64)
    data["venue"].x = torch.randn(2, 3, generator=gen, dtype=F64)

    def edges(ns: int, nd: int, e: int) -> Tensor:
        return torch.stack(
            [torch.randint(0, ns, (e,), generator=gen), torch.randint(0, nd, (e,), generator=gen)]
        )

    data[WRITES].edge_index = edges(4, 5, 12)
    data[REV].edge_index = edges(6, 3, 7)
    data[PUBLISHES].edge_index = edges(2, 5, 4)
    return data


def _pyg(data: HeteroData, heads: int = 2, seed: int = 0) -> nn.Module:
    """PyG's HGTConv with every parameter random (skip and p_rel start at one in PyG)."""
    torch.manual_seed(seed)
    in_channels = {nt: data[nt].x.shape[1] for nt in data.node_types}
    conv = pyg_nn.HGTConv(in_channels, OUT, data.metadata(), heads=heads).to(F64)
    with torch.no_grad():
        for name, p in conv.named_parameters():
            if name.startswith(("skip", "p_rel")):
                p.copy_(torch.randn_like(p))
    return conv


def _run(model: nn.Module, x_dict: dict, edge_index_dict: dict) -> tuple[dict, dict]:
    """Outputs and input gradients for one fixed random upstream gradient per node type."""
    xs = {k: v.clone().requires_grad_() for k, v in x_dict.items()}
    out = model(xs, edge_index_dict)
    gen = torch.Generator().manual_seed(1)
    loss = sum(
        (o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum()
        for _, o in sorted(out.items())
    )
    loss.backward()
    grads = {k: x.grad for k, x in xs.items() if x.grad is not None}
    return {k: o.detach() for k, o in out.items()}, grads


def _grads_as_ours(pyg: nn.Module) -> dict[str, Tensor]:
    """PyG's parameter gradients in graphattn's layout (from_pyg of a copy whose parameters
    are the gradients; a parameter without gradient reads zero)."""
    grads = copy.deepcopy(pyg)  # (deepcopy drops .grad)
    source = dict(pyg.named_parameters())
    with torch.no_grad():
        for name, p in grads.named_parameters():
            grad = source[name].grad
            p.copy_(grad if grad is not None else torch.zeros_like(p))
    return dict(graphattn.from_pyg(grads).named_parameters())


@pytest.mark.parametrize("backend", ["auto", "edges", "dense"])
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("relations", ["all", "without_rev_writes"])
def test_from_pyg_matches_pyg(backend: str, heads: int, relations: str) -> None:
    data = _data()
    pyg = _pyg(data, heads=heads)
    ours = graphattn.from_pyg(pyg, backend=backend)
    assert isinstance(ours, graphattn.HGTConv)
    edge_index_dict = dict(data.edge_index_dict)
    if relations == "without_rev_writes":  # author: a target type whose relations are absent
        del edge_index_dict[REV]
    out_p, gx_p = _run(pyg, data.x_dict, edge_index_dict)
    out_o, gx_o = _run(ours, data.x_dict, edge_index_dict)
    assert set(out_o) == set(out_p) == {"paper", "author"}  # venue: target of nothing
    torch.testing.assert_close(out_o, out_p)
    torch.testing.assert_close(gx_o, gx_p)
    want = _grads_as_ours(pyg)
    for name, p in ours.named_parameters():
        got = p.grad if p.grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(got, want[name], msg=lambda m, n=name: f"{n}: {m}")


def test_no_in_edges_match_pyg() -> None:
    """A target without in-edges aggregates zero: its output is out_lin(gelu(0)) = the bias,
    mixed with its input by the gate for paper and alone for author."""
    data = _data()
    pyg = _pyg(data)
    ours = graphattn.from_pyg(pyg)
    out = ours(data.x_dict, data.edge_index_dict)
    gate = ours.skip["paper"].sigmoid()
    bias = ours.out_lin["paper"].bias
    torch.testing.assert_close(
        out["paper"][5], gate * bias + (1 - gate) * data["paper"].x[5], check_dtype=False
    )
    torch.testing.assert_close(out["author"][3], ours.out_lin["author"].bias.detach())
    assert "venue" not in out and "venue" not in pyg(data.x_dict, data.edge_index_dict)
    # no relation given at all: PyG cannot concatenate nothing; we give every target zero
    empty = ours(data.x_dict, {})
    torch.testing.assert_close(empty["author"], ours.out_lin["author"].bias.expand(4, -1))
    # relations with zero edges are PyG's numbers too
    no_edges = {et: ei[:, :0] for et, ei in data.edge_index_dict.items()}
    torch.testing.assert_close(ours(data.x_dict, no_edges), pyg(data.x_dict, no_edges))


def test_one_softmax_over_all_relations() -> None:
    """The weights of a target's in-edges over every relation sum to one: with equal keys
    (zero relation matrices) the output is the mean of the incoming values."""
    data = _data()
    conv = graphattn.HGTConv(
        {nt: data[nt].x.shape[1] for nt in data.node_types}, OUT, data.metadata()
    ).to(F64)
    with torch.no_grad():
        for w in conv.w_att.values():
            w.zero_()
        for w in conv.w_msg.values():
            nn.init.eye_(w[0])
        for lin in conv.out_lin.values():
            nn.init.eye_(lin.weight)
            lin.bias.zero_()
        for s in conv.skip.values():
            s.fill_(100.0)  # gate ~ 1: the output is out_lin's
    target = 2
    incoming = []
    for et in (WRITES, PUBLISHES):
        ei = data[et].edge_index
        src = ei[0, ei[1] == target]
        incoming.append(conv.v_lin[et[0]](data[et[0]].x[src]))
    mean = torch.cat(incoming).mean(0)
    out = conv(data.x_dict, data.edge_index_dict)["paper"][target]
    torch.testing.assert_close(out, torch.nn.functional.gelu(mean), atol=1e-12, rtol=1e-12)


def test_lazy_in_channels_and_lazy_pyg() -> None:
    data = _data()
    torch.manual_seed(0)
    pyg = pyg_nn.HGTConv(-1, OUT, data.metadata(), heads=2).to(F64)
    x_dict, edge_index_dict = data.x_dict, data.edge_index_dict
    with pytest.raises(ValueError, match="lazy"):
        graphattn.from_pyg(pyg)
    pyg(x_dict, edge_index_dict)  # shapes it
    ours = graphattn.from_pyg(pyg)
    torch.testing.assert_close(ours(x_dict, edge_index_dict), pyg(x_dict, edge_index_dict))
    lazy = graphattn.HGTConv(-1, OUT, data.metadata(), heads=2, dtype=F64)
    out = lazy(x_dict, edge_index_dict)
    assert {k: v.shape for k, v in out.items()} == {
        "paper": (6, OUT),
        "author": (4, OUT),
    }
    assert lazy.k_lin["author"].weight.shape == (OUT, 5)


def test_sparse_adj_t_matches_edge_index() -> None:
    data = _data()
    ours = graphattn.from_pyg(_pyg(data))
    # a sparse matrix holds each edge once: compare on edge lists without duplicates
    edge_index_dict = {et: ei.unique(dim=1) for et, ei in data.edge_index_dict.items()}
    adj = {
        et: torch.sparse_coo_tensor(
            ei.flip(0),
            torch.ones(ei.shape[1], dtype=F64),
            (data[et[2]].num_nodes, data[et[0]].num_nodes),
        ).to_sparse_csr()
        for et, ei in edge_index_dict.items()
    }
    torch.testing.assert_close(ours(data.x_dict, adj), ours(data.x_dict, edge_index_dict))


def test_trains_from_scratch() -> None:
    data = _data()
    torch.manual_seed(0)
    conv = graphattn.HGTConv(
        {nt: data[nt].x.shape[1] for nt in data.node_types}, OUT, data.metadata(), heads=2
    ).to(F64)
    head = nn.Linear(OUT, 1, dtype=F64)
    target = torch.randn(6, 1, dtype=F64, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.Adam([*conv.parameters(), *head.parameters()], lr=0.02)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        out = conv(data.x_dict, data.edge_index_dict)
        loss = nn.functional.mse_loss(head(out["paper"]), target) + out["author"].pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert all(torch.isfinite(o).all() for o in out.values())
    assert losses[-1] < 0.5 * losses[0]
    # every parameter used gets a gradient; unused ones are PyG's too: venue is the target of
    # nothing (no query, output projection or gate), author is too narrow for its gate
    unused = {"q_lin.venue.weight", "q_lin.venue.bias", "out_lin.venue.weight"}
    unused |= {"out_lin.venue.bias", "skip.venue", "skip.author"}
    for name, p in conv.named_parameters():
        if name in unused:
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_layout_and_repr() -> None:
    data = _data()
    conv = graphattn.HGTConv(5, 8, data.metadata(), heads=2)
    key = edge_type_key(WRITES)
    assert key == "author__writes__paper"
    assert conv.w_att[key].shape == conv.w_msg[key].shape == (2, 4, 4)
    assert conv.mu[key].shape == (2,)
    assert conv.skip["paper"].shape == ()
    assert "heads=2" in repr(conv) and "edge_types=3" in repr(conv)


def test_errors_name_the_bad_input() -> None:
    data = _data()
    meta = data.metadata()
    widths = {nt: data[nt].x.shape[1] for nt in data.node_types}
    conv = graphattn.HGTConv(widths, OUT, meta, heads=2).to(F64)
    x_dict = dict(data.x_dict)
    del x_dict["venue"]
    with pytest.raises(ValueError, match=r"no features for node type 'venue'"):
        conv(x_dict, data.edge_index_dict)
    bad = {**data.x_dict, "author": torch.randn(4, 4, dtype=F64)}
    with pytest.raises(ValueError, match=r"x_dict\['author'\] has 4 features.* = 5"):
        conv(bad, data.edge_index_dict)
    with pytest.raises(ValueError, match="not in the layer's metadata"):
        conv(data.x_dict, {("paper", "cites", "paper"): torch.zeros(2, 1, dtype=torch.long)})
    with pytest.raises(ValueError, match="out of range"):
        conv(data.x_dict, {WRITES: torch.tensor([[4], [0]])})
    with pytest.raises(ValueError, match=r"out_channels \(got 7\) must be divisible by heads"):
        graphattn.HGTConv(widths, 7, meta, heads=2)
    with pytest.raises(ValueError, match=r"in_channels has no width for node types \['venue'\]"):
        graphattn.HGTConv({"paper": 8, "author": 5}, OUT, meta)
    with pytest.raises(ValueError, match="node type 'journal'"):
        graphattn.HGTConv(widths, OUT, (["paper"], [("journal", "has", "paper")]))
    with pytest.raises(ValueError, match=r"in_channels\['paper'\]"):
        graphattn.HGTConv({**widths, "paper": 0}, OUT, meta)

"""Smoke test of ``examples.node_classification`` on the real Cora and Minesweeper (a few
epochs), its ROC-AUC against scikit-learn's, and its argument errors."""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields, replace

import pytest
import torch

pytest.importorskip("torch_geometric")
pytest.importorskip("scipy")  # Planetoid reads the raw files with scipy

from examples.node_classification import (  # noqa: E402
    DEFAULT_MODELS,
    GLOBAL,
    MODELS,
    NOT_TRAINING,
    ClassicNet,
    CompleteAttention,
    DeepNet,
    GCNLayer,
    NodeConfig,
    NodeNet,
    PlainNet,
    Selection,
    checkpoint_path,
    file_lock,
    gcn_adjacency,
    graph_for,
    input_features,
    load_dataset,
    mask_dropout,
    optimizer,
    roc_auc,
    run,
    settings,
    sparse_csr,
    sparse_dropout,
    split_masks,
    train_one,
)
from examples.training import load_checkpoint, resolve_data_dir  # noqa: E402
from graphattn import (  # noqa: E402
    Graph,
    clustering_encoding,
    degree_encoding,
    shortest_path_distance,
)


def _data_dir() -> str:
    root = resolve_data_dir(None)
    if not (root / "planetoid" / "Cora" / "raw").is_dir():
        pytest.skip(f"Cora not found under {root} (tests never download)")
    if not (root / "heterophilous" / "minesweeper" / "raw").is_dir():
        pytest.skip(f"Minesweeper not found under {root} (tests never download)")
    return str(root)


@pytest.mark.usefixtures("one_thread")
def test_every_model_trains_on_cora_and_minesweeper(tmp_path):
    cfg = NodeConfig(
        datasets=("Cora", "Minesweeper"),
        quick=True,
        data_dir=_data_dir(),
        out_dir=str(tmp_path / "cache"),
        results=str(tmp_path / "nc.json"),
        threads=1,
    )
    result = run(cfg)
    seen = {(r["dataset"], r["model"]) for r in result["runs"]}
    assert seen == {(d, m) for d in cfg.datasets for m in DEFAULT_MODELS}
    for r in result["runs"]:
        assert r["metric"] == ("accuracy" if r["dataset"] == "Cora" else "roc_auc")
        assert 0.0 <= r["test"] <= 1.0 and r["epoch_ms"] > 0 and r["epochs"] == 5, r
    saved = json.loads((tmp_path / "nc.json").read_text())
    assert saved["complete"] is True and "ms/epoch" in saved["table"].splitlines()[0]


def test_splits_and_presets(tmp_path):
    data = load_dataset("Minesweeper", _data_dir(), tmp_path)
    assert data.train_mask.shape == (10_000, 10)
    train, val, test = split_masks(data, 3)
    assert not (train & val).any() and not (train & test).any() and not (val & test).any()
    with pytest.raises(ValueError, match="runs: the data set has 10 splits"):
        split_masks(data, 10)
    cfg = settings(NodeConfig(hidden=32), "Minesweeper")
    assert cfg.hidden == 32 and cfg.sep is True and cfg.layout == "classic"
    assert settings(NodeConfig(), "Cora").layout == "plain"
    with pytest.raises(
        ValueError, match=r"layout must be one of \('plain', .*'classic'\), got 'x'"
    ):
        settings(NodeConfig(layout="x"), "Cora")
    with pytest.raises(
        ValueError, match="global_in must be 'all', 'last' or 'hidden', got 'first'"
    ):
        settings(NodeConfig(global_in="first"), "Cora")
    with pytest.raises(ValueError, match="gps_local must be one of"):
        settings(NodeConfig(gps_local="gin"), "Cora")
    with pytest.raises(ValueError, match="global_attn must be one of .*, got 'linear'"):
        settings(NodeConfig(global_attn="linear"), "Cora")
    with pytest.raises(ValueError, match="stop must be 'metric' or 'gat', got 'loss'"):
        settings(NodeConfig(stop="loss"), "Cora")
    with pytest.raises(ValueError, match="Minesweeper is scored by ROC-AUC"):
        settings(NodeConfig(stop="gat"), "Minesweeper")
    assert settings(NodeConfig(), "Cora").stop == "gat"
    assert settings(NodeConfig(), "Minesweeper").stop == "metric"


def test_tolokers_changes_its_family_preset():
    """Tolokers' own changes (chosen on its validation) sit on the heterophilous preset: its
    default is the README's residual 8-block command with dropouts 0.5 / 0.2 and the degree
    and clustering encodings, and a flag still overrides them."""
    tolokers = settings(NodeConfig(), "Tolokers")
    flags = NodeConfig(
        layout="residual", heads=4, lr=0.003, layers=8, dropout=0.5, input_dropout=0.2,
        epochs=1000, patience=200, degree=True, clustering=True,
    )  # fmt: skip
    assert tolokers == settings(flags, "Tolokers")
    assert tolokers.hidden == settings(NodeConfig(), "Minesweeper").hidden == 64
    assert settings(NodeConfig(layout="classic"), "Tolokers").layout == "classic"
    assert settings(NodeConfig(degree=False), "Tolokers").degree is False
    assert settings(NodeConfig(clustering=False), "Tolokers").clustering is False
    assert settings(NodeConfig(), "Cora").clustering is True
    assert settings(NodeConfig(), "Minesweeper").clustering is False
    assert settings(NodeConfig(), "Minesweeper").degree is False
    assert settings(NodeConfig(), "Cora").degree is False
    assert settings(NodeConfig(), "Minesweeper").layout == "classic"


def test_selection_rules():
    """The "metric" rule: the first epoch of the best metric, stop after `patience` epochs
    without a better one; "gat": GAT's rule, patience reset by a val accuracy or loss at
    least as good as the best so far, the reported epoch the last where both were."""
    history = [(0.5, 1.0), (0.6, 1.1), (0.6, 0.9), (0.5, 1.2), (0.4, 1.3), (0.7, 0.8)]
    metric = Selection("metric", patience=2)
    assert [metric.update(e, acc, loss) for e, (acc, loss) in enumerate(history[:5])] == [
        (True, False), (True, False), (False, False), (False, True), (False, True)
    ]  # fmt: skip
    gat = Selection("gat", patience=3)
    assert [gat.update(e, acc, loss) for e, (acc, loss) in enumerate(history)] == [
        (True, False), (False, False), (True, False), (False, False), (False, False),
        (True, False),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="rule must be 'metric' or 'gat', got 'x'"):
        Selection("x", 1)


def _tiny_graph(n: int = 30, f: int = 12):
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(n, f, generator=gen) < 0.1).float() * torch.rand(n, f, generator=gen)
    edge_index = torch.randint(0, n, (2, 4 * n), generator=gen)

    class Data:
        num_nodes = n

    data = Data()
    data.edge_index = edge_index
    return x, data


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("model", MODELS)
def test_deep_layout_runs_every_model(model):
    """GCNII's deep network with each model's propagation: logits of the right shape, a
    gradient for every parameter, and GCNII's two weight-decay groups."""
    x, data = _tiny_graph()
    cfg = settings(NodeConfig(layout="deep", layers=3, hidden=16, heads=2), "Cora")
    net = DeepNet(model, x.shape[1], 4, cfg)
    logits = net(x, graph_for(data, sep=False))
    assert logits.shape == (30, 4) and torch.isfinite(logits).all()
    logits.sum().backward()
    unused = [n for n, p in net.named_parameters() if p.grad is None]
    assert not unused, unused
    decays = sorted(g["weight_decay"] for g in optimizer(net, cfg).param_groups)
    assert decays == [cfg.weight_decay, cfg.layer_weight_decay]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("model", MODELS)
def test_plain_and_residual_layouts_run_every_model(model):
    """GAT's two layers and the pre-norm residual blocks (with and without ``sep``) with each
    model: finite logits of the right shape and a gradient for every parameter."""
    x, data = _tiny_graph()
    for layout, net_cls, sep in (("plain", PlainNet, False), ("residual", NodeNet, False),
                                 ("residual", NodeNet, True)):  # fmt: skip
        cfg = settings(NodeConfig(layout=layout, layers=2, hidden=16, heads=2, sep=sep), "Cora")
        net = net_cls(model, x.shape[1], 4, cfg)
        logits = net(x, graph_for(data, sep=sep))
        assert logits.shape == (30, 4) and torch.isfinite(logits).all(), (layout, sep)
        logits.sum().backward()
        unused = [n for n, p in net.named_parameters() if p.grad is None]
        assert not unused, (layout, sep, unused)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("model", MODELS)
def test_classic_layout_runs_every_model(model):
    """Luo et al.'s classic layers with each model's messages: logits of the right shape, a
    gradient for every parameter, Adam with one weight decay; and, in evaluation, one layer
    is exactly ``out(ReLU(BatchNorm(messages(x) + Linear(x))))``."""
    x, data = _tiny_graph()
    graph = graph_for(data, sep=True)
    cfg = settings(NodeConfig(layout="classic", layers=3, hidden=16, heads=2), "Minesweeper")
    net = ClassicNet(model, x.shape[1], 4, cfg)
    logits = net(x, graph)
    assert logits.shape == (30, 4) and torch.isfinite(logits).all()
    logits.sum().backward()
    unused = [n for n, p in net.named_parameters() if p.grad is None]
    assert not unused, unused
    opt = optimizer(net, cfg)
    assert isinstance(opt, torch.optim.Adam) and len(opt.param_groups) == 1
    one = ClassicNet(model, x.shape[1], 4, replace(cfg, layers=1)).eval()
    with torch.no_grad():
        one.norms[0].running_mean.uniform_(-1, 1)
        one.norms[0].running_var.uniform_(0.5, 2)
        y = one.self_maps[0](x)
        if one.local[0] is not None:
            y = y + one.local[0](x, graph)
        if one.glob[0] is not None:
            y = y + one.w * one.glob[0](x[None])[0]
        bn = one.norms[0]
        y = (y - bn.running_mean) / (bn.running_var + bn.eps).sqrt() * bn.weight + bn.bias
        torch.testing.assert_close(one(x, graph), one.out(y.relu()))


def test_complete_attention_is_softmax_over_every_node():
    """``softmax``: exactly softmax(q k^T / sqrt(Dq)) v over all pairs; ``favor``: an
    estimate of it (its error shrinks with the number of features), redrawn every training
    call and fixed in evaluation."""
    torch.manual_seed(0)
    x = torch.randn(2, 40, 12)
    exact = CompleteAttention(12, 5, "softmax", qk_channels=8)
    q, k, v = exact.q(x), exact.k(x), exact.v(x)
    want = torch.softmax(q @ k.transpose(1, 2) / 8**0.5, -1) @ v  # (2, 40, 5)
    torch.testing.assert_close(exact(x), want)
    errors = []
    for features in (16, 4096):
        favor = CompleteAttention(12, 5, "favor", qk_channels=8, favor_features=features)
        favor.load_state_dict(exact.state_dict())
        with torch.no_grad():
            errors.append((favor(x) - want).abs().mean().item())
            assert favor(x).equal(favor(x))  # no redraw without gradients
    assert errors[1] < errors[0] / 3 and errors[1] < 0.05, errors
    with pytest.raises(ValueError, match="kind must be 'softmax' or 'favor', got 'dot'"):
        CompleteAttention(12, 5, "dot", qk_channels=8)
    with pytest.raises(ValueError, match="be 0 for 'favor', got 0.5"):
        CompleteAttention(12, 5, "favor", qk_channels=8, dropout=0.5)
    dropped = CompleteAttention(12, 5, "softmax", qk_channels=8, dropout=0.5)
    dropped.load_state_dict(exact.state_dict())
    assert not dropped(x).equal(want)  # training: weights dropped
    torch.testing.assert_close(dropped.eval()(x), want)


def test_complete_attention_hop_distance_bias():
    """``spd``: softmax(q k^T / sqrt(Dq) + b[hops(i, j)]) v with Graphormer's buckets (hops
    clipped at ``spd``, unreachable pairs their own); the bias is learned, the distances are
    computed once per graph, and the bias needs exact softmax and a graph."""
    torch.manual_seed(0)
    x, data = _tiny_graph()
    graph = graph_for(data, sep=False)
    att = CompleteAttention(x.shape[1], 5, "softmax", qk_channels=8, spd=2)
    with torch.no_grad():
        att.spd.spatial_bias.weight.copy_(torch.arange(4.0)[:, None])  # bias = bucket
    dist = shortest_path_distance(graph, data.num_nodes)  # (N, N)
    bucket = torch.where(dist < 0, 3, dist.clamp(max=2)).float()
    q, k, v = att.q(x), att.k(x), att.v(x)
    want = torch.softmax(q @ k.T / 8**0.5 + bucket, -1) @ v  # (N, 5)
    out = att(x[None], graph)[0]
    torch.testing.assert_close(out, want)
    cached = att._buckets[1]
    out.sum().backward()
    assert att.spd.spatial_bias.weight.grad.abs().sum() > 0
    att(x[None], graph)
    assert att._buckets[1] is cached  # the same graph: its bucketed distances kept
    with pytest.raises(ValueError, match="needs the graph"):
        att(x[None])
    with pytest.raises(ValueError, match="0 for 'favor', got 2"):
        CompleteAttention(12, 5, "favor", qk_channels=8, spd=2)
    with pytest.raises(ValueError, match="global_spd=3 needs global_attn='softmax'"):
        settings(NodeConfig(global_spd=3, global_attn="favor"), "Cora")
    with pytest.raises(ValueError, match="global_spd=3 needs global_attn='softmax'"):
        settings(NodeConfig(global_spd=3), "Tolokers")  # its preset: SGFormer's attention
    with pytest.raises(ValueError, match="global_spd must be >= 0, got -1"):
        settings(NodeConfig(global_spd=-1), "Cora")
    cfg = settings(NodeConfig(hidden=16, heads=2, global_spd=2), "Cora")
    net = PlainNet("gps", x.shape[1], 4, cfg)
    assert net.mid.spd is not None
    net(x, graph).sum().backward()
    assert net.mid.spd.spatial_bias.weight.grad is not None
    deep = settings(NodeConfig(hidden=16, heads=2, global_spd=2, layout="deep", layers=2), "Cora")
    net = DeepNet("gps", x.shape[1], 4, deep)  # the deep layout's one global attention, on h0
    net(x, graph).sum().backward()
    assert net.mid.spd.spatial_bias.weight.grad is not None
    with pytest.raises(ValueError, match="deep layout's 'global' attends globally in 'all'"):
        DeepNet("global", x.shape[1], 4, deep)  # every layer: no hop distances there
    for layout, net_cls in (("residual", NodeNet), ("classic", ClassicNet)):
        other = settings(replace(deep, layout=layout, global_in="all"), "Cora")
        net = net_cls("gps", x.shape[1], 4, other)
        bias = [m.spd for m in net.modules() if isinstance(m, CompleteAttention)]
        assert bias and all(b is not None for b in bias), layout
        net(x, graph).sum().backward()
        assert all(b.spatial_bias.weight.grad is not None for b in bias), layout
    with pytest.raises(ValueError, match="global_in='hidden' in the deep layout.*'deep' and 'all'"):
        settings(replace(deep, global_in="all"), "Cora")
    assert settings(NodeConfig(), "Cora").global_spd == 0
    base = settings(NodeConfig(), "Cora")
    key = repr([
        (f.name, getattr(base, f.name)) for f in fields(base)
        if f.name not in NOT_TRAINING and f.name != "global_spd"
    ])  # fmt: skip
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]  # the key from before the setting
    assert checkpoint_path(base, "Cora", "gps", 0).stem.endswith(digest)
    assert checkpoint_path(base, "Cora", "gps", 0) != checkpoint_path(
        replace(base, global_spd=2), "Cora", "gps", 0
    )


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("global_attn", GLOBAL)
def test_every_global_attention_in_every_layout(global_attn):
    """``gps`` and ``global`` with each global attention in the plain, residual, deep and
    classic layouts: finite logits of the right shape and a gradient for every parameter used."""
    x, data = _tiny_graph()
    graph = graph_for(data, sep=False)
    nets = (("plain", PlainNet), ("residual", NodeNet), ("deep", DeepNet), ("classic", ClassicNet))
    for layout, net_cls in nets:
        for model in ("gps", "global"):
            cfg = settings(
                NodeConfig(layout=layout, layers=2, hidden=16, heads=2, global_attn=global_attn,
                           global_in="all", global_qk=4),
                "Cora",
            )  # fmt: skip
            net = net_cls(model, x.shape[1], 4, cfg)
            logits = net(x, graph)
            assert logits.shape == (30, 4) and torch.isfinite(logits).all(), (layout, model)
            logits.sum().backward()
            unused = [n for n, p in net.named_parameters() if p.grad is None]
            assert not unused, (layout, model, unused)


def test_gcn_layer_is_pygs_gcnconv():
    """``gcn``: GCN's fixed weights ``D^-1/2 (A + I) D^-1/2`` on :func:`graph_for`'s graph
    (one self-loop per node, duplicate edges counted twice) give PyG's ``GCNConv`` output and
    gradient with the same weights; a node without in-edges gets a zero row."""
    from torch_geometric.nn import GCNConv

    x, data = _tiny_graph()
    graph = graph_for(data, sep=False)
    torch.manual_seed(0)
    ref = GCNConv(x.shape[1], 5)
    ref.bias.data.normal_()
    ours = GCNLayer(x.shape[1], 5)
    ours.lin.weight.data.copy_(ref.lin.weight)
    ours.bias.data.copy_(ref.bias)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, expected = ours(xa, graph), ref(xb, data.edge_index)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(ours(sparse_csr(x), graph), expected)  # the sparse input path
    lonely = Graph.from_edge_index(torch.tensor([[0, 1, 0], [1, 0, 2]]), 4)  # 3: no in-edges
    adj = gcn_adjacency(lonely).to_dense()  # (4, 4)
    expected = torch.zeros(4, 4)
    expected[1, 0], expected[0, 1], expected[2, 0] = 1.0, 1.0, 1.0  # degrees 1, 1, 1
    torch.testing.assert_close(adj, expected)


def test_gcn_propagation_gradient_is_exact():
    """The deep layout's ``gcn`` propagation (a sparse product whose backward uses the kept
    transpose): float64 gradcheck through a whole GCNII network, directed edges included."""
    x, data = _tiny_graph(n=12, f=5)
    cfg = settings(NodeConfig(layout="deep", layers=2, hidden=4, heads=2, dropout=0.0), "Cora")
    net = DeepNet("gcn", 5, 3, cfg).double().eval()
    assert net.props[0].gcn is net.props[1].gcn  # one A_hat for all layers
    graph = graph_for(data, sep=False)
    x = x.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: net(v, graph), (x,))
    a = gcn_adjacency(graph).to_dense()
    assert not torch.equal(a, a.T)  # the random edges are directed: the transpose matters


def test_mask_dropout_has_dropouts_distribution():
    """The deep layout's dropout: zeros a share ``p`` of the entries and scales the rest by
    ``1 / (1 - p)``, the mean unchanged; the identity in evaluation; all zeros at ``p = 1``."""
    torch.manual_seed(0)
    x = torch.rand(400, 500) + 1.0
    y = mask_dropout(x, 0.6, True)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.4)
    assert abs(kept.float().mean().item() - 0.4) < 0.01
    assert abs(y.mean().item() / x.mean().item() - 1.0) < 0.01
    assert mask_dropout(x, 0.6, False) is x and mask_dropout(x, 0.0, True) is x
    assert (mask_dropout(x, 1.0, True) == 0).all()


@pytest.mark.usefixtures("one_thread")
def test_deep_layout_places_the_global_attention():
    """The deep layout's ``gps``: global attention in every layer (``all``), the last one
    (``last``), or once on ``h0`` (``hidden``), where it is ``h0 + w * global(h0)``; sparse CSR
    input gives the dense input's logits."""
    x, data = _tiny_graph()
    graph = graph_for(data, sep=False)
    base = NodeConfig(layout="deep", layers=3, hidden=16, heads=2, gps_local="gcn")
    for where, in_layer in (("all", [True] * 3), ("last", [False, False, True]),
                            ("hidden", [False] * 3)):  # fmt: skip
        net = DeepNet("gps", x.shape[1], 4, settings(replace(base, global_in=where), "Cora"))
        assert [p.glob for p in net.props] == in_layer and (net.mid is not None) == (
            where == "hidden"
        )
    net = DeepNet("gps", x.shape[1], 4, settings(replace(base, global_in="hidden"), "Cora"))
    net.eval()
    zero = DeepNet("gcn", x.shape[1], 4, settings(base, "Cora")).eval()
    zero.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("mid.")})
    with torch.no_grad():
        net.mid.v.weight.zero_()  # a zero global branch: the gcn network's logits
        torch.testing.assert_close(net(x, graph), zero(x, graph))
        net.mid.v.weight.normal_()
        assert not torch.allclose(net(x, graph), zero(x, graph))
        torch.testing.assert_close(net(sparse_csr(x), graph), net(x, graph))


def test_sparse_features_give_the_dense_output():
    """The plain network on sparse CSR features: the dense features' logits in eval mode;
    sparse dropout keeps zeros and scales kept values by 1 / (1 - p)."""
    x, data = _tiny_graph()
    graph = graph_for(data, sep=False)
    for model in ("gat", "gatv2", "transformer", "gcn", "gps"):
        torch.manual_seed(0)
        net = PlainNet(model, x.shape[1], 4, settings(NodeConfig(hidden=16, heads=2), "Cora"))
        net.eval()
        torch.testing.assert_close(net(sparse_csr(x), graph), net(x, graph))
    dropped = sparse_dropout(sparse_csr(x), 0.5, True).to_dense()
    kept = dropped != 0
    assert (x[kept] * 2 == dropped[kept]).all() and (dropped[x == 0] == 0).all()
    assert sparse_dropout(sparse_csr(x), 0.5, False).to_dense().equal(x)


@pytest.mark.usefixtures("one_thread")
def test_degree_flag_feeds_one_more_input_feature(tmp_path):
    """``--degree`` trains on the features plus the degree column (the input layer is one
    wider) and names its own checkpoint."""
    data = load_dataset("Minesweeper", _data_dir(), tmp_path)
    cfg = settings(NodeConfig(quick=True, degree=True, out_dir=str(tmp_path)), "Minesweeper")
    record = train_one("gat", data, "Minesweeper", 0, cfg)
    assert 0.0 <= record["test"] <= 1.0
    saved = load_checkpoint(checkpoint_path(cfg, "Minesweeper", "gat", 0))
    first = next(v for k, v in saved["model"].items() if k.endswith("weight") and v.dim() == 2)
    assert first.shape[1] == data.num_features + 1
    assert checkpoint_path(cfg, "Minesweeper", "gat", 0) != checkpoint_path(
        replace(cfg, degree=False), "Minesweeper", "gat", 0
    )


@pytest.mark.usefixtures("one_thread")
def test_clustering_flag_feeds_one_more_input_feature(tmp_path):
    """``--clustering`` appends the clustering column (the input layer is one wider, after the
    degree's when both are on) and names its own checkpoint; left off, it leaves the
    checkpoint key of every earlier run as it was, so those runs still resume."""
    data = load_dataset("Minesweeper", _data_dir(), tmp_path)
    cfg = settings(
        NodeConfig(quick=True, degree=True, clustering=True, out_dir=str(tmp_path)), "Minesweeper"
    )
    record = train_one("gat", data, "Minesweeper", 0, cfg)
    assert 0.0 <= record["test"] <= 1.0
    saved = load_checkpoint(checkpoint_path(cfg, "Minesweeper", "gat", 0))
    first = next(v for k, v in saved["model"].items() if k.endswith("weight") and v.dim() == 2)
    assert first.shape[1] == data.num_features + 2
    off = replace(cfg, clustering=False)
    assert checkpoint_path(cfg, "Minesweeper", "gat", 0) != checkpoint_path(
        off, "Minesweeper", "gat", 0
    )
    # the key of a run with clustering off is the key from before the setting existed
    key = repr([
        (f.name, getattr(off, f.name)) for f in fields(off)
        if f.name not in NOT_TRAINING and f.name not in ("clustering", "global_spd")
    ])  # fmt: skip
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    assert checkpoint_path(off, "Minesweeper", "gat", 0).stem.endswith(digest)


@pytest.mark.usefixtures("one_thread")
def test_input_features_append_degree_then_clustering(tmp_path):
    """``input_features``: ``data.x``, then the degree column, then the clustering column;
    a run given those features trains exactly as one that computes them itself."""
    data = load_dataset("Minesweeper", _data_dir(), tmp_path)
    base = NodeConfig(quick=True, out_dir=str(tmp_path))
    both = settings(replace(base, degree=True, clustering=True), "Minesweeper")
    x = input_features(data, both)
    assert x.shape == (data.num_nodes, data.num_features + 2)
    assert x[:, : data.num_features].equal(data.x)
    assert x[:, -2].equal(degree_encoding(data.edge_index, data.num_nodes)[:, 0])
    assert x[:, -1].equal(clustering_encoding(data.edge_index, data.num_nodes)[:, 0])
    assert input_features(data, settings(base, "Minesweeper")) is data.x
    given = train_one("gat", data, "Minesweeper", 0, replace(both, resume=False), x)
    computed = train_one("gat", data, "Minesweeper", 0, replace(both, resume=False))
    assert {k: v for k, v in given.items() if k not in ("wall_s", "epoch_ms")} == {
        k: v for k, v in computed.items() if k not in ("wall_s", "epoch_ms")
    }


def test_unknown_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="datasets: unknown name 'Coraa'"):
        load_dataset("Coraa", None, tmp_path)
    with pytest.raises(ValueError, match="models: unknown model 'gin'"):
        run(NodeConfig(models=("gin",), out_dir=str(tmp_path), results=None))  # type: ignore[arg-type]


def test_file_lock_is_exclusive(tmp_path):
    """load_dataset's lock: a second holder (its own open file, as another process would
    have) waits until the first lets go."""
    import threading

    path = tmp_path / "cache" / ".Cora.lock"
    entered = threading.Event()

    def second() -> None:
        with file_lock(path):
            entered.set()

    with file_lock(path):
        thread = threading.Thread(target=second)
        thread.start()
        assert not entered.wait(0.3)  # blocked while the first holds the lock
    assert entered.wait(10)
    thread.join()


def test_roc_auc_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (500,), generator=gen)
    scores = (torch.randn(500, generator=gen) + labels).round(decimals=1)  # with ties
    assert roc_auc(scores, labels) == pytest.approx(
        metrics.roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12
    )
    with pytest.raises(ValueError, match="needs both classes"):
        roc_auc(scores, torch.zeros(500))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("model", ["gat", "gps"])
def test_an_interrupted_run_resumes_with_the_uninterrupted_numbers(tmp_path, monkeypatch, model):
    """A run stopped after epoch 3 (checkpoints every epoch) and started again ends where an
    uninterrupted run ends, bit for bit: metrics, chosen epoch and weights (dropout, Adam
    and BatchNorm state, the random streams). A finished run's record is read back, not
    trained again; ``resume=False`` trains from scratch."""
    data = load_dataset("Minesweeper", _data_dir(), tmp_path / "data")
    base = NodeConfig(layers=2, hidden=16, epochs=8, checkpoint_s=0.0, progress=False)

    def cfg(name: str) -> NodeConfig:
        return settings(replace(base, out_dir=str(tmp_path / name)), "Minesweeper")

    whole = train_one(model, data, "Minesweeper", 1, cfg("whole"))
    update = Selection.update

    def interrupt(self, epoch, metric, loss):
        if epoch == 4:
            raise KeyboardInterrupt
        return update(self, epoch, metric, loss)

    monkeypatch.setattr(Selection, "update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_one(model, data, "Minesweeper", 1, cfg("cut"))
    assert load_checkpoint(checkpoint_path(cfg("cut"), "Minesweeper", model, 1))["epoch"] == 3
    monkeypatch.setattr(Selection, "update", update)
    resumed = train_one(model, data, "Minesweeper", 1, cfg("cut"))
    same = ("test", "val", "best_epoch", "epochs", "params")
    assert {k: resumed[k] for k in same} == {k: whole[k] for k in same}
    a, b = (
        load_checkpoint(checkpoint_path(cfg(n), "Minesweeper", model, 1)) for n in ("whole", "cut")
    )
    assert a["epoch"] == b["epoch"] == 7 and a["model"].keys() == b["model"].keys()
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(Selection, "__init__", no_training)
    assert train_one(model, data, "Minesweeper", 1, cfg("whole")) == whole
    monkeypatch.undo()
    again = train_one(model, data, "Minesweeper", 1, replace(cfg("whole"), resume=False))
    assert again["test"] == whole["test"] and again["wall_s"] != whole["wall_s"]


def test_checkpoint_names_follow_the_training_settings(tmp_path):
    """Settings that change training change the checkpoint's name; where results go, the
    thread count and the bar do not."""
    cfg = settings(NodeConfig(out_dir=str(tmp_path)), "Minesweeper")
    path = checkpoint_path(cfg, "Minesweeper", "gat", 0)
    assert path.parent == tmp_path / "checkpoints" and path.name.startswith("Minesweeper_gat_run0_")
    assert checkpoint_path(replace(cfg, hidden=32), "Minesweeper", "gat", 0) != path
    assert checkpoint_path(replace(cfg, lr=0.02), "Minesweeper", "gat", 0) != path
    assert checkpoint_path(cfg, "Minesweeper", "gat", 1) != path
    for same in (replace(cfg, threads=2), replace(cfg, results=None), replace(cfg, progress=False),
                 replace(cfg, runs=10, first_run=3)):  # fmt: skip
        assert checkpoint_path(same, "Minesweeper", "gat", 0) == path

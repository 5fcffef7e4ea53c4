"""NodeSet: validation, concatenation, graphs with padding, padding invariance."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

from graphattn import Graph, GraphAttention
from modalities import NodeSet, masked_mean


def make(b: int, n: int, d: int = 8, lengths: list[int] | None = None, **kw) -> NodeSet:
    g = torch.Generator().manual_seed(n * 10 + d)
    feats = torch.randn(b, n, d, generator=g)
    if lengths is None:
        mask = torch.ones(b, n, dtype=torch.bool)
    else:
        mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    return NodeSet(feats, mask, **kw)


@pytest.mark.parametrize("name", ["_common", "nodes", "text", "image", "audio", "fusion", "rl"])
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"modalities.{name}")
    res = doctest.testmod(module, extraglobs={"torch": torch})
    assert res.failed == 0


def test_sizes_and_masks() -> None:
    ns = make(2, 5, lengths=[3, 5])
    assert (ns.batch_size, ns.num_nodes, ns.dim) == (2, 5, 8)
    assert ns.lengths.tolist() == [3, 5]
    assert torch.equal(ns.key_padding_mask, ~ns.mask)
    assert ns.modality_names == ("generic",) and ns.modality_ids.tolist() == [0] * 5
    assert "N=5" in repr(ns)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"features": torch.randn(5, 8)}, ValueError, r"features must have shape \(B, N, D\)"),
        ({"features": torch.ones(2, 5, 8, dtype=torch.long)}, TypeError, "floating point"),
        ({"mask": torch.ones(2, 5)}, TypeError, "mask must be a bool tensor"),
        ({"mask": torch.ones(2, 4, dtype=torch.bool)}, ValueError, r"\(2, 5\), got \(2, 4\)"),
        ({"positions": torch.zeros(2, 5, dtype=torch.long)}, ValueError, "position_kind must"),
        ({"position_kind": "time"}, ValueError, "without positions"),
        (
            {"positions": torch.zeros(2, 5, dtype=torch.long), "position_kind": "grid"},
            ValueError,
            r"shape \(2, 5, 2\)",
        ),
        (
            {"positions": torch.zeros(2, 5, dtype=torch.long), "position_kind": "time"},
            TypeError,
            "seconds",
        ),
        (
            {"positions": torch.zeros(2, 5), "position_kind": "index"},
            TypeError,
            "integer dtype",
        ),
        ({"grid_shape": (2, 3)}, ValueError, r"6 cells but there are 5 nodes"),
        ({"modality": ""}, ValueError, "non-empty"),
        ({"modality_ids": torch.tensor([0, 0, 1, 0, 0])}, ValueError, r"\[0, 1\)"),
        ({"graph_kind": "star"}, ValueError, "graph_kind must be one of"),
    ],
)
def test_validation(kwargs: dict, error: type, match: str) -> None:
    args = {"features": torch.randn(2, 5, 8), "mask": torch.ones(2, 5, dtype=torch.bool)}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        NodeSet(**args)


def test_concat_keeps_modality_ids_and_positions() -> None:
    a = make(2, 3, modality="text", positions=torch.arange(3).expand(2, 3), position_kind="index")
    b = make(2, 4, modality="image", positions=torch.arange(4).expand(2, 4), position_kind="index")
    c = make(2, 2, modality="text")
    ab = NodeSet.concat(a, b)
    assert ab.num_nodes == 7 and ab.modality == "text+image"
    assert ab.modality_names == ("text", "image")
    assert ab.modality_ids.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert ab.positions.tolist()[0] == [0, 1, 2, 0, 1, 2, 3]
    assert torch.equal(ab.features[:, 3:], b.features)
    # a name seen twice keeps one id; mixed position kinds are dropped
    abc = NodeSet.concat([ab, c])
    assert abc.modality_ids.tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0]
    assert abc.positions is None and abc.position_kind is None


def test_concat_errors() -> None:
    with pytest.raises(ValueError, match="batch size 3 but nodesets\\[0\\] .* has 2"):
        NodeSet.concat(make(2, 3), make(3, 3))
    with pytest.raises(ValueError, match="feature size 4 but"):
        NodeSet.concat(make(2, 3), make(2, 3, d=4))
    with pytest.raises(ValueError, match="at least one"):
        NodeSet.concat()
    with pytest.raises(TypeError, match="must be a NodeSet"):
        NodeSet.concat(make(2, 3), torch.zeros(2, 3, 8))


def test_to_moves_every_tensor() -> None:
    ns = make(1, 3, positions=torch.zeros(1, 3), position_kind="time").to("meta")
    assert ns.features.is_meta and ns.mask.is_meta and ns.positions.is_meta
    assert ns.modality_ids.is_meta


@pytest.mark.parametrize(
    ("kind", "radius", "expected"),
    [
        ("complete", None, Graph.complete(6)),
        ("causal", None, Graph.causal(6)),
        ("window", 1, Graph.window(6, 1)),
        ("grid", 1, Graph.grid(2, 3, 1)),
    ],
)
def test_graph_kinds_respect_padding(kind: str, radius: int | None, expected: Graph) -> None:
    ns = make(2, 6, lengths=[4, 6], grid_shape=(2, 3))
    g = ns.graph(kind, radius=radius)
    structure = expected.materialize()  # (N, N)
    want = structure[None] & ns.mask[:, None, :]  # (B, N, N): padded sources send nothing
    assert torch.equal(g.materialize(), want)
    # unpadded node sets give an unpadded graph (keeps the fused kernels)
    assert make(2, 6, grid_shape=(2, 3)).graph(kind, radius=radius).key_padding_mask is None


def test_graph_defaults_and_errors() -> None:
    ns = make(1, 4, graph_kind="window", graph_radius=1)
    assert torch.equal(ns.graph().materialize(), Graph.window(4, 1).materialize())
    with pytest.raises(ValueError, match="needs a radius"):
        make(1, 4).graph("window")
    with pytest.raises(ValueError, match="needs grid_shape"):
        make(1, 4).graph("grid")
    with pytest.raises(ValueError, match="kind must be one of"):
        make(1, 4).graph("star")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["complete", "causal", "window"])
@pytest.mark.parametrize("backend", ["dense", "edges"])
def test_padding_invariance_through_attention(kind: str, backend: str) -> None:
    """Appending padded nodes (with garbage features) never changes the real nodes."""
    torch.manual_seed(0)
    attn = GraphAttention(8, 2, backend=backend).eval()
    short = make(1, 4, graph_kind=kind, graph_radius=1)
    garbage = torch.randn(1, 3, 8) * 100
    padded = NodeSet(
        torch.cat([short.features, garbage], dim=1),
        torch.cat([short.mask, torch.zeros(1, 3, dtype=torch.bool)], dim=1),
        graph_kind=kind,
        graph_radius=1,
    )
    ref = attn(short.features, short.graph())
    out = attn(padded.features, padded.graph())
    torch.testing.assert_close(out[:, :4], ref)


def test_fully_padded_sample_gives_finite_zero_pooling() -> None:
    ns = make(2, 3, lengths=[0, 3])
    attn = GraphAttention(8, 2)
    out = attn(ns.features, ns.graph())
    assert torch.isfinite(out).all()
    pooled = masked_mean(out, ns.mask)
    assert torch.equal(pooled[0], torch.zeros(8))
    torch.testing.assert_close(pooled[1], out[1].mean(0))

"""TypedLinear (graphattn.hetero): every node goes through its own type's weights (against
a node-by-node reference and PyG's HeteroLinear), a copy of one nn.Linear is that Linear,
every type's weights receive gradients, bad inputs fail naming what is wrong."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graphattn import TypedLinear

TYPES = torch.tensor([2, 0, 1, 0, 2, 2, 1])  # interleaved on purpose


def test_each_node_uses_its_types_weights() -> None:
    torch.manual_seed(0)
    lin = TypedLinear(5, 3, num_types=3)
    x = torch.randn(2, 7, 5)  # (B, N, F_in)
    out = lin(x, TYPES)
    assert out.shape == (2, 7, 3)
    for n, t in enumerate(TYPES.tolist()):
        ref = x[:, n] @ lin.weight[t].T + lin.bias[t]  # (B, F_out)
        torch.testing.assert_close(out[:, n], ref)
    unbatched = lin(x[0], TYPES)  # (N, F_in) works too
    torch.testing.assert_close(unbatched, out[0])


def test_types_do_not_share_weights() -> None:
    """Changing type 1's weights changes type 1's nodes and no other node."""
    torch.manual_seed(0)
    lin = TypedLinear(4, 4, num_types=3)
    x = torch.randn(7, 4)
    before = lin(x, TYPES)
    with torch.no_grad():
        lin.weight[1].add_(1.0)
    after = lin(x, TYPES)
    changed = (after - before).abs().amax(-1) > 0  # (N,)
    assert changed.tolist() == (TYPES == 1).tolist()


def test_from_linear_equals_the_linear() -> None:
    torch.manual_seed(0)
    ref = nn.Linear(6, 4)
    lin = TypedLinear.from_linear(ref, num_types=3)
    x = torch.randn(3, 7, 6)
    torch.testing.assert_close(lin(x, TYPES), ref(x))
    no_bias = TypedLinear.from_linear(nn.Linear(6, 4, bias=False), 2)
    assert no_bias.bias is None


def test_matches_pyg_hetero_linear() -> None:
    pyg_nn = pytest.importorskip("torch_geometric.nn")
    torch.manual_seed(0)
    pyg = pyg_nn.HeteroLinear(5, 3, num_types=3)
    lin = TypedLinear(5, 3, num_types=3)
    with torch.no_grad():
        lin.weight.copy_(pyg.weight.transpose(1, 2))  # PyG stores (T, F_in, F_out)
        lin.bias.copy_(pyg.bias)
    x = torch.randn(7, 5)
    torch.testing.assert_close(lin(x, TYPES), pyg(x, TYPES))


def test_gradients_reach_every_type() -> None:
    torch.manual_seed(0)
    lin = TypedLinear(4, 2, num_types=3)
    x = torch.randn(2, 7, 4, requires_grad=True)
    lin(x, TYPES).square().sum().backward()
    for t in range(3):
        assert lin.weight.grad[t].abs().sum() > 0 and lin.bias.grad[t].abs().sum() > 0
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # a type with no node in the input gets a zero gradient, not an error
    lin.zero_grad()
    lin(x, torch.zeros(7, dtype=torch.long)).sum().backward()
    assert lin.weight.grad[1:].abs().sum() == 0


def test_initialisation_and_repr() -> None:
    lin = TypedLinear(16, 8, num_types=2)
    bound = 1 / 16**0.5  # nn.Linear's, per type
    assert lin.weight.abs().max() <= bound and lin.bias.abs().max() <= bound
    assert not torch.equal(lin.weight[0], lin.weight[1])  # types start apart
    assert repr(lin) == "TypedLinear(in_features=16, out_features=8, num_types=2, bias=True)"


def test_errors_name_the_bad_input() -> None:
    lin = TypedLinear(4, 2, num_types=2)
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"x must be \(\.\.\., N, F_in=4\), got \(3, 5\)"):
        lin(torch.randn(3, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"node_type must be integer ids of shape \(N=3,\)"):
        lin(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="node_type must be integer ids"):
        lin(x, torch.zeros(3))
    with pytest.raises(ValueError, match=r"node_type must lie in \[0, num_types=2\), got ids"):
        lin(x, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="num_types must be an int"):
        TypedLinear(4, 2, num_types=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="linear must be an nn.Linear, got Conv1d"):
        TypedLinear.from_linear(nn.Conv1d(2, 2, 1), 2)  # type: ignore[arg-type]

"""``LazyAdamW`` = ``torch.optim.AdamW`` on dense gradients and ``torch.optim.SparseAdam`` on
sparse ones, in one optimizer that the schedulers and ``Trainer`` accept."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from examples.training import LazyAdamW, Muon, orthogonalize


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.ModuleDict({"emb": nn.Embedding(50, 6, sparse=True), "lin": nn.Linear(6, 3)}).double()


def _loss(model: nn.Module, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    ids = torch.randint(0, 12, (7, 4), generator=g)  # repeated ids: duplicate sparse rows
    target = torch.randn(7, 3, generator=g, dtype=torch.float64)
    h = model["emb"](ids).sum(1)  # (7, 6)
    return ((model["lin"](h) - target) ** 2).mean()


def test_matches_adamw_dense_and_sparseadam_sparse() -> None:
    ours, ref = _model(0), _model(0)
    opt = LazyAdamW(ours.parameters(), lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    ref_dense = torch.optim.AdamW(
        ref["lin"].parameters(), lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1
    )
    ref_sparse = torch.optim.SparseAdam(
        list(ref["emb"].parameters()), lr=0.05, betas=(0.8, 0.95), eps=1e-6
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    ref_scheds = [torch.optim.lr_scheduler.StepLR(o, 3, 0.5) for o in (ref_dense, ref_sparse)]
    untouched = ours["emb"].weight[12:].clone()
    for step in range(8):
        for model, opts in ((ours, [opt]), (ref, [ref_dense, ref_sparse])):
            for o in opts:
                o.zero_grad()
            _loss(model, step).backward()
            assert model["emb"].weight.grad.is_sparse
            for o in opts:
                o.step()
        sched.step()
        for s in ref_scheds:
            s.step()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    assert torch.equal(ours["emb"].weight[12:], untouched)  # rows never looked up: unchanged


def test_state_dict_round_trip_continues_identically() -> None:
    a, b = _model(1), _model(1)
    opt_a = LazyAdamW(a.parameters(), lr=0.02)
    for step in range(3):
        opt_a.zero_grad()
        _loss(a, step).backward()
        opt_a.step()
    b.load_state_dict(a.state_dict())
    opt_b = LazyAdamW(b.parameters(), lr=0.02)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as through torch.save/load
    for model, o in ((a, opt_a), (b, opt_b)):
        o.zero_grad()
        _loss(model, 3).backward()
        o.step()
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr"),
        ({"betas": (1.0, 0.9)}, "betas"),
        ({"eps": 0.0}, "eps"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LazyAdamW(nn.Linear(2, 2).parameters(), **kwargs)


@pytest.mark.parametrize("shape", [(16, 16), (40, 12), (12, 40)])
def test_orthogonalize_flattens_the_spectrum(shape: tuple[int, int]) -> None:
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    g = g * torch.logspace(-0.5, 0.5, shape[1])  # columns of different scales
    x = orthogonalize(g)
    assert x.shape == g.shape
    s = torch.linalg.svdvals(x)
    assert s.min() > 0.5 and s.max() < 1.3, s  # U V^T has all singular values 1
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cos = (x * (u @ vh)).sum() / (x.norm() * (u @ vh).norm())
    assert cos > 0.95  # points along U V^T


def test_muon_matrix_update_and_adamw_groups() -> None:
    torch.manual_seed(0)
    hidden, head = nn.Linear(8, 6, bias=False), nn.Linear(6, 2)
    ref_hidden, ref_head = copy.deepcopy(hidden), copy.deepcopy(head)
    opt = Muon(
        [
            {"params": [hidden.weight], "use_muon": True, "weight_decay": 0.1},
            {"params": list(head.parameters()), "use_muon": False, "weight_decay": 0.01},
        ],
        lr=0.05,
        momentum=0.9,
        adam_lr=0.01,
        adam_betas=(0.8, 0.95),
    )
    ref_adam = torch.optim.AdamW(
        ref_head.parameters(), lr=0.01, betas=(0.8, 0.95), weight_decay=0.01
    )
    buf = torch.zeros_like(hidden.weight)
    x, y = torch.randn(5, 8), torch.randn(5, 2)
    for _ in range(3):
        for h, o in ((hidden, head), (ref_hidden, ref_head)):
            h.zero_grad()
            o.zero_grad()
            ((o(torch.tanh(h(x))) - y) ** 2).mean().backward()
        opt.step()
        ref_adam.step()
        with torch.no_grad():  # Muon by hand: Nesterov momentum, orthogonalized, decayed
            g = ref_hidden.weight.grad
            buf.lerp_(g, 0.1)
            ref_hidden.weight.mul_(1 - 0.05 * 0.1)
            ref_hidden.weight.add_(orthogonalize(g.lerp(buf, 0.9)), alpha=-0.05)
    torch.testing.assert_close(hidden.weight, ref_hidden.weight)
    for a, b in zip(head.parameters(), ref_head.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_muon_bad_groups() -> None:
    with pytest.raises(ValueError, match="use_muon"):
        Muon([{"params": [nn.Parameter(torch.zeros(2, 2))]}])
    with pytest.raises(ValueError, match=r"only matrices.*|shape \(3,\)"):
        Muon([{"params": [nn.Parameter(torch.zeros(3))], "use_muon": True}])
    with pytest.raises(ValueError, match="momentum"):
        Muon([{"params": [nn.Parameter(torch.zeros(2, 2))], "use_muon": True}], momentum=1.0)


@pytest.mark.parametrize("shape", [(16, 16), (40, 12), (12, 40)])
def test_muon_is_torch_muon_but_for_the_precision_of_newton_schulz(shape: tuple[int, int]) -> None:
    """``torch.optim.Muon`` (torch 2.9+) runs the same algorithm (momentum, Nesterov,
    decoupled weight decay, the ``sqrt(max(1, rows / cols))`` scale, Newton-Schulz with the
    same coefficients) but orthogonalizes in bfloat16; ours stays in float32, so the char_lm
    results do not change. The updates agree to bfloat16's precision (~1% relative), no
    better: the two are not interchangeable bit for bit."""
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch >= 2.9")
    g = torch.Generator().manual_seed(0)
    start = torch.randn(*shape, generator=g)
    grads = [torch.randn(*shape, generator=g) for _ in range(4)]
    ours, ref = nn.Parameter(start.clone()), nn.Parameter(start.clone())
    kwargs = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.2}
    opt = Muon([{"params": [ours], "use_muon": True}], **kwargs)
    opt_ref = torch.optim.Muon([ref], nesterov=True, adjust_lr_fn="original", **kwargs)
    for grad in grads:
        for p, o in ((ours, opt), (ref, opt_ref)):
            p.grad = grad.clone()
            o.step()
        moved, moved_ref = ours.detach() - start, ref.detach() - start
        rel = ((moved - moved_ref).norm() / moved_ref.norm()).item()
        assert 1e-4 < rel < 0.03, rel  # differ, by bfloat16's rounding only

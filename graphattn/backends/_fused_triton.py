"""The fused edge pass in Triton, for CUDA devices: the same arithmetic as ``_fused_cpu.cpp``
(one program per target and block of groups, online softmax over its in-edges in CSR order;
backward recomputes the scores from the per-target log-sum-exp, once per target for the
query and per-edge gradients and once per source for the key and value gradients, so no two
programs write the same row and nothing per edge is stored).

This module imports ``triton`` at import time: :mod:`graphattn.backends.fused` imports it
only when a CUDA tensor asks for the kernel. :func:`forward` and :func:`backward` take the
C++ extension's arguments, so one autograd function drives both.

Layout: q ``(Nd, G, Dq)``, k ``(Ns, G, Dk)``, v ``(Ns, G, Dv)``, edge features ef ``(E, G,
De)``, edge values ev ``(E, G, Dv)``, bias ``(E, G)`` (``-inf`` removes an edge), all in the
sorted (target-major) edge order. Scores: 0 dot product ``scale * <q_i, k_j + ef>``; 1 GAT
``LeakyReLU(q_i + k_j + ef)`` (D = 1); 2 GATv2 ``<att_g, LeakyReLU(q_i + k_j + ef)>``.
Half precision is loaded as is and computed in float32; float64 is computed in float64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["forward", "backward"]

_TILE = 4096  # elements of the largest (edges x groups x dim) register tile

#: Overrides of the launch configuration, for benchmarks: ``{"BE": edges per block,
#: "num_warps": warps per program}``; empty: the defaults of :func:`_blocks`.
CONFIG: dict[str, int] = {}


def _blocks(g: int, d: int, dv: int, mean_degree: float) -> tuple[int, int, int, int, int]:
    """Block sizes (powers of two): groups, score dim, value dim, edges; and warps.

    Measured on an H200 (``benchmarks/sweep_triton.py``, N=1M, in-degree 16, 8 heads x 8):
    small programs win, one warp and edge blocks of half the mean in-degree (2.7x the
    bandwidth bound for dot product, 2.9x for GAT, against 3.6x and 3.8x with 16 edges and two
    warps); more lanes per program only add masked work and registers.
    """
    bd, bdv = triton.next_power_of_2(max(d, 1)), triton.next_power_of_2(max(dv, 1))
    wide = max(bd, bdv)
    bg = min(triton.next_power_of_2(max(g, 1)), max(1, 512 // wide))
    fit = max(1, _TILE // (bg * wide))
    be = min(fit, 64, max(1, triton.next_power_of_2(max(1, int(mean_degree))) // 2))
    be = max(1, min(fit, CONFIG.get("BE", be)))
    tile = be * bg * wide
    warps = CONFIG.get("num_warps", 1 if tile <= 1024 else 2 if tile <= 2048 else 4)
    return bg, bd, bdv, be, warps


def _compute_dtype(t: Tensor) -> tl.dtype:
    return tl.float64 if t.dtype == torch.float64 else tl.float32


@triton.jit
def _scores(
    qi, kj, att, bias, valid, scale, slope,
    KIND: tl.constexpr, HAS_BIAS: tl.constexpr,
):  # fmt: skip
    """Scores (BE, BG) of one block of edges; ``pre`` (BE, BG, BD) for the GAT kinds."""
    if KIND == 0:
        pre = kj
        s = tl.sum(qi[None, :, :] * kj, axis=2) * scale
    else:
        pre = qi[None, :, :] + kj
        s = tl.sum(att[None, :, :] * tl.where(pre > 0, pre, pre * slope), axis=2)
    if HAS_BIAS:  # -inf removes the edge, even where its score is NaN
        s = tl.where(bias == float("-inf"), float("-inf"), s + bias)
    s = tl.where(valid, s, float("-inf"))
    return s, pre


@triton.jit
def _fwd_kernel(
    Q, K, V, EF, EV, BIAS, ATT, PTR, SRC, OUT, LSE,
    G, DQ, DV, SCAL,
    KIND: tl.constexpr, HAS_EF: tl.constexpr, HAS_EV: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_ATT: tl.constexpr, CDT: tl.constexpr,
    BG: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, BE: tl.constexpr,
):  # fmt: skip
    i = tl.program_id(0).to(tl.int64)
    scale = tl.load(SCAL).to(CDT)  # float64 scalars stay exact (a float argument is fp32)
    slope = tl.load(SCAL + 1).to(CDT)
    g = tl.program_id(1) * BG + tl.arange(0, BG)  # (BG,)
    d = tl.arange(0, BD)
    dv = tl.arange(0, BDV)
    gm, dm, dvm = g < G, d < DQ, dv < DV
    gd = gm[:, None] & dm[None, :]  # (BG, BD)
    gdv = gm[:, None] & dvm[None, :]  # (BG, BDV)
    qi = tl.load(Q + i * G * DQ + g[:, None] * DQ + d[None, :], mask=gd, other=0).to(CDT)
    if HAS_ATT:
        att = tl.load(ATT + g[:, None] * DQ + d[None, :], mask=gd, other=0).to(CDT)
    else:
        att = tl.full((BG, BD), 1.0, CDT)
    e0 = tl.load(PTR + i)
    e1 = tl.load(PTR + i + 1)
    m = tl.full((BG,), float("-inf"), CDT)
    lsum = tl.zeros((BG,), CDT)
    acc = tl.zeros((BG, BDV), CDT)
    nan = tl.zeros((BG,), tl.int32)
    for start in range(e0, e1, BE):
        e = start + tl.arange(0, BE)  # (BE,)
        em = e < e1
        j = tl.load(SRC + e, mask=em, other=0)
        valid = em[:, None] & gm[None, :]  # (BE, BG)
        m3 = em[:, None, None] & gd[None, :, :]
        kj = tl.load(
            K + j[:, None, None] * G * DQ + g[None, :, None] * DQ + d[None, None, :],
            mask=m3,
            other=0,
        ).to(CDT)  # (BE, BG, BD)
        if HAS_EF:
            kj += tl.load(
                EF + e[:, None, None] * G * DQ + g[None, :, None] * DQ + d[None, None, :],
                mask=m3,
                other=0,
            ).to(CDT)
        bias = tl.zeros((BE, BG), CDT)
        if HAS_BIAS:
            bias = tl.load(BIAS + e[:, None] * G + g[None, :], mask=valid, other=0).to(CDT)
        s, _ = _scores(qi, kj, att, bias, valid, scale, slope, KIND, HAS_BIAS)
        isnan = s != s
        nan = tl.maximum(nan, tl.max(isnan.to(tl.int32), axis=0))
        s = tl.where(isnan, float("-inf"), s)
        m_new = tl.maximum(m, tl.max(s, axis=0))  # (BG,)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - m_safe[None, :])  # (BE, BG); 0 on removed and masked edges
        corr = tl.exp(m - m_safe)
        lsum = lsum * corr + tl.sum(p, axis=0)
        v3 = em[:, None, None] & gdv[None, :, :]
        vj = tl.load(
            V + j[:, None, None] * G * DV + g[None, :, None] * DV + dv[None, None, :],
            mask=v3,
            other=0,
        ).to(CDT)  # (BE, BG, BDV)
        if HAS_EV:
            vj += tl.load(
                EV + e[:, None, None] * G * DV + g[None, :, None] * DV + dv[None, None, :],
                mask=v3,
                other=0,
            ).to(CDT)
        acc = acc * corr[:, None] + tl.sum(p[:, :, None] * vj, axis=0)
        m = m_new
    empty = m == float("-inf")
    out = tl.where(empty[:, None], 0.0, acc / tl.where(empty, 1.0, lsum)[:, None])
    out = tl.where((nan > 0)[:, None], float("nan"), out)
    lse = tl.where(empty, float("-inf"), m + tl.log(tl.where(empty, 1.0, lsum)))
    lse = tl.where(nan > 0, float("nan"), lse)
    tl.store(OUT + i * G * DV + g[:, None] * DV + dv[None, :], out, mask=gdv)
    tl.store(LSE + i * G + g, lse, mask=gm)


@triton.jit
def _bwd_dst_kernel(
    Q, K, V, EF, EV, BIAS, ATT, PTR, SRC, LSE, DOUT, DELTA,
    DQ_, DEF, DEV, DBIAS, DATT,
    G, DQ, DV, SCAL,
    KIND: tl.constexpr, HAS_EF: tl.constexpr, HAS_EV: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_ATT: tl.constexpr, NEED_Q: tl.constexpr, NEED_EF: tl.constexpr,
    NEED_EV: tl.constexpr, NEED_BIAS: tl.constexpr, NEED_ATT: tl.constexpr, CDT: tl.constexpr,
    BG: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, BE: tl.constexpr,
):  # fmt: skip
    """Per target: the query gradient, and the per-edge gradients of its in-edges."""
    i = tl.program_id(0).to(tl.int64)
    scale = tl.load(SCAL).to(CDT)  # float64 scalars stay exact (a float argument is fp32)
    slope = tl.load(SCAL + 1).to(CDT)
    g = tl.program_id(1) * BG + tl.arange(0, BG)
    d = tl.arange(0, BD)
    dv = tl.arange(0, BDV)
    gm, dm, dvm = g < G, d < DQ, dv < DV
    gd = gm[:, None] & dm[None, :]
    gdv = gm[:, None] & dvm[None, :]
    qi = tl.load(Q + i * G * DQ + g[:, None] * DQ + d[None, :], mask=gd, other=0).to(CDT)
    if HAS_ATT:
        att = tl.load(ATT + g[:, None] * DQ + d[None, :], mask=gd, other=0).to(CDT)
    else:
        att = tl.full((BG, BD), 1.0, CDT)
    lse = tl.load(LSE + i * G + g, mask=gm, other=float("-inf")).to(CDT)  # (BG,)
    delta = tl.load(DELTA + i * G + g, mask=gm, other=0).to(CDT)
    go = tl.load(DOUT + i * G * DV + g[:, None] * DV + dv[None, :], mask=gdv, other=0).to(CDT)
    dq = tl.zeros((BG, BD), CDT)
    datt = tl.zeros((BG, BD), CDT)
    e0 = tl.load(PTR + i)
    e1 = tl.load(PTR + i + 1)
    for start in range(e0, e1, BE):
        e = start + tl.arange(0, BE)
        em = e < e1
        j = tl.load(SRC + e, mask=em, other=0)
        valid = em[:, None] & gm[None, :]
        m3 = em[:, None, None] & gd[None, :, :]
        kj = tl.load(
            K + j[:, None, None] * G * DQ + g[None, :, None] * DQ + d[None, None, :],
            mask=m3,
            other=0,
        ).to(CDT)
        if HAS_EF:
            kj += tl.load(
                EF + e[:, None, None] * G * DQ + g[None, :, None] * DQ + d[None, None, :],
                mask=m3,
                other=0,
            ).to(CDT)
        bias = tl.zeros((BE, BG), CDT)
        if HAS_BIAS:
            bias = tl.load(BIAS + e[:, None] * G + g[None, :], mask=valid, other=0).to(CDT)
        s, pre = _scores(qi, kj, att, bias, valid, scale, slope, KIND, HAS_BIAS)
        alpha = tl.where(lse[None, :] > float("-inf"), tl.exp(s - lse[None, :]), 0.0)
        alpha = tl.where(valid, alpha, 0.0)  # (BE, BG)
        v3 = em[:, None, None] & gdv[None, :, :]
        vj = tl.load(
            V + j[:, None, None] * G * DV + g[None, :, None] * DV + dv[None, None, :],
            mask=v3,
            other=0,
        ).to(CDT)
        if HAS_EV:
            vj += tl.load(
                EV + e[:, None, None] * G * DV + g[None, :, None] * DV + dv[None, None, :],
                mask=v3,
                other=0,
            ).to(CDT)
        dal = tl.sum(go[None, :, :] * vj, axis=2)  # (BE, BG)
        ds = tl.where(alpha == 0, 0.0, alpha * (dal - delta[None, :]))
        if KIND == 0:
            dpre = ds[:, :, None] * scale * qi[None, :, :]  # d score / d (k_j + ef)
            if NEED_Q:
                dq += tl.sum(ds[:, :, None] * scale * kj, axis=0)
        else:
            dpre = ds[:, :, None] * att[None, :, :] * tl.where(pre > 0, 1.0, slope)
            if NEED_Q:
                dq += tl.sum(dpre, axis=0)
            if NEED_ATT:
                datt += tl.sum(ds[:, :, None] * tl.where(pre > 0, pre, pre * slope), axis=0)
        if NEED_EF:
            tl.store(
                DEF + e[:, None, None] * G * DQ + g[None, :, None] * DQ + d[None, None, :],
                dpre,
                mask=m3,
            )
        if NEED_EV:
            tl.store(
                DEV + e[:, None, None] * G * DV + g[None, :, None] * DV + dv[None, None, :],
                alpha[:, :, None] * go[None, :, :],
                mask=v3,
            )
        if NEED_BIAS:
            tl.store(DBIAS + e[:, None] * G + g[None, :], ds, mask=valid)
    if NEED_Q:
        tl.store(DQ_ + i * G * DQ + g[:, None] * DQ + d[None, :], dq, mask=gd)
    if NEED_ATT:
        tl.atomic_add(DATT + g[:, None] * DQ + d[None, :], datt, mask=gd)


@triton.jit
def _bwd_src_kernel(
    Q, K, V, EF, EV, BIAS, ATT, SPTR, PERM, SDST, LSE, DOUT, DELTA, DK, DV_,
    G, DQ, DV, SCAL,
    KIND: tl.constexpr, HAS_EF: tl.constexpr, HAS_EV: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_ATT: tl.constexpr, NEED_K: tl.constexpr, NEED_V: tl.constexpr, CDT: tl.constexpr,
    BG: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, BE: tl.constexpr,
):  # fmt: skip
    """Per source: the key and value gradients, over its out-edges in source order."""
    j = tl.program_id(0).to(tl.int64)
    scale = tl.load(SCAL).to(CDT)
    slope = tl.load(SCAL + 1).to(CDT)
    g = tl.program_id(1) * BG + tl.arange(0, BG)
    d = tl.arange(0, BD)
    dv = tl.arange(0, BDV)
    gm, dm, dvm = g < G, d < DQ, dv < DV
    gd = gm[:, None] & dm[None, :]
    gdv = gm[:, None] & dvm[None, :]
    kj = tl.load(K + j * G * DQ + g[:, None] * DQ + d[None, :], mask=gd, other=0).to(CDT)
    vj = tl.load(V + j * G * DV + g[:, None] * DV + dv[None, :], mask=gdv, other=0).to(CDT)
    if HAS_ATT:
        att = tl.load(ATT + g[:, None] * DQ + d[None, :], mask=gd, other=0).to(CDT)
    else:
        att = tl.full((BG, BD), 1.0, CDT)
    dk = tl.zeros((BG, BD), CDT)
    dvj = tl.zeros((BG, BDV), CDT)
    e0 = tl.load(SPTR + j)
    e1 = tl.load(SPTR + j + 1)
    for start in range(e0, e1, BE):
        r = start + tl.arange(0, BE)
        em = r < e1
        e = tl.load(PERM + r, mask=em, other=0)  # positions in the target-major order
        i = tl.load(SDST + r, mask=em, other=0)
        valid = em[:, None] & gm[None, :]
        m3 = em[:, None, None] & gd[None, :, :]
        v3 = em[:, None, None] & gdv[None, :, :]
        qi = tl.load(
            Q + i[:, None, None] * G * DQ + g[None, :, None] * DQ + d[None, None, :],
            mask=m3,
            other=0,
        ).to(CDT)  # (BE, BG, BD)
        ke = kj[None, :, :] + tl.zeros((BE, BG, BD), CDT)
        if HAS_EF:
            ke += tl.load(
                EF + e[:, None, None] * G * DQ + g[None, :, None] * DQ + d[None, None, :],
                mask=m3,
                other=0,
            ).to(CDT)
        bias = tl.zeros((BE, BG), CDT)
        if HAS_BIAS:
            bias = tl.load(BIAS + e[:, None] * G + g[None, :], mask=valid, other=0).to(CDT)
        if KIND == 0:
            s = tl.sum(qi * ke, axis=2) * scale
            pre = ke
        else:
            pre = qi + ke
            s = tl.sum(att[None, :, :] * tl.where(pre > 0, pre, pre * slope), axis=2)
        if HAS_BIAS:
            s = tl.where(bias == float("-inf"), float("-inf"), s + bias)
        lse = tl.load(LSE + i[:, None] * G + g[None, :], mask=valid, other=float("-inf")).to(CDT)
        alpha = tl.where(lse > float("-inf"), tl.exp(s - lse), 0.0)
        alpha = tl.where(valid, alpha, 0.0)  # (BE, BG)
        go = tl.load(
            DOUT + i[:, None, None] * G * DV + g[None, :, None] * DV + dv[None, None, :],
            mask=v3,
            other=0,
        ).to(CDT)  # (BE, BG, BDV)
        if NEED_V:
            dvj += tl.sum(alpha[:, :, None] * go, axis=0)
        if NEED_K:
            ve = vj[None, :, :] + tl.zeros((BE, BG, BDV), CDT)
            if HAS_EV:
                ve += tl.load(
                    EV + e[:, None, None] * G * DV + g[None, :, None] * DV + dv[None, None, :],
                    mask=v3,
                    other=0,
                ).to(CDT)
            delta = tl.load(DELTA + i[:, None] * G + g[None, :], mask=valid, other=0).to(CDT)
            ds = tl.where(alpha == 0, 0.0, alpha * (tl.sum(go * ve, axis=2) - delta))
            if KIND == 0:
                dk += tl.sum(ds[:, :, None] * scale * qi, axis=0)
            else:
                dk += tl.sum(
                    ds[:, :, None] * att[None, :, :] * tl.where(pre > 0, 1.0, slope), axis=0
                )
    if NEED_K:
        tl.store(DK + j * G * DQ + g[:, None] * DQ + d[None, :], dk, mask=gd)
    if NEED_V:
        tl.store(DV_ + j * G * DV + g[:, None] * DV + dv[None, :], dvj, mask=gdv)


def _flags(ef: Tensor, ev: Tensor, bias: Tensor, att: Tensor) -> dict[str, bool]:
    return {
        "HAS_EF": ef.numel() > 0,
        "HAS_EV": ev.numel() > 0,
        "HAS_BIAS": bias.numel() > 0,
        "HAS_ATT": att.numel() > 0,
    }


def _scalars(q: Tensor, scale: float, slope: float) -> Tensor:
    """``[scale, slope]`` on the device in the compute precision."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    return torch.tensor([scale, slope], dtype=acc, device=q.device)


def _present(*tensors: Tensor) -> list[Tensor]:
    """The tensors, an absent (empty) one replaced by the last argument, a one-element
    placeholder, so that every pointer handed to a kernel is a real allocation."""
    *ts, dummy = tensors
    return [t if t.numel() else dummy for t in ts]


def forward(
    q: Tensor, k: Tensor, v: Tensor, ef: Tensor, ev: Tensor, bias: Tensor, att: Tensor,
    ptr: Tensor, src: Tensor, kind: int, scale: float, slope: float, p: float, seed: int,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Output ``(Nd, G, Dv)`` and log-sum-exp ``(Nd, G)`` (empty tensors stand for absent
    inputs, as in the C++ extension). Dropout is not served (``p`` must be 0)."""
    if p != 0.0:
        raise ValueError(f"the Triton kernel serves no dropout, got p={p}")
    nd, g, dq = q.shape
    dv = v.shape[2]
    cdt = _compute_dtype(q)
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = q.new_empty(nd, g, dv, dtype=acc)
    lse = q.new_empty(nd, g, dtype=acc)
    if nd == 0 or g == 0:
        return out, lse
    bg, bd, bdv, be, warps = _blocks(g, dq, dv, src.numel() / max(nd, 1))
    grid = (nd, triton.cdiv(g, bg))
    _fwd_kernel[grid](
        q, k, v, *_present(ef, ev, bias, att, q.new_zeros(1)), ptr, src, out, lse, g, dq, dv,
        _scalars(q, scale, slope),
        KIND=kind, CDT=cdt, BG=bg, BD=bd, BDV=bdv, BE=be, num_warps=warps,
        **_flags(ef, ev, bias, att),
    )  # fmt: skip
    return out, lse


def backward(
    q: Tensor, k: Tensor, v: Tensor, ef: Tensor, ev: Tensor, bias: Tensor, att: Tensor,
    ptr: Tensor, src: Tensor, sptr: Tensor, perm: Tensor, sdst: Tensor, lse: Tensor,
    grad_out: Tensor, delta: Tensor, kind: int, scale: float, slope: float, p: float,
    seed: int, needs: list[bool],
) -> list[Tensor | None]:  # fmt: skip
    """Gradients of q, k, v, ef, ev, bias, att (``None`` where not asked for), in the
    compute dtype (float32 for half inputs)."""
    nd, g, dq = q.shape
    ns, dv = k.shape[0], v.shape[2]
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    cdt = _compute_dtype(q)
    flags = _flags(ef, ev, bias, att)
    nq, nk, nv, nef, nev, nb, na = needs
    nef, nev, nb, na = (
        nef and flags["HAS_EF"], nev and flags["HAS_EV"], nb and flags["HAS_BIAS"],
        na and flags["HAS_ATT"],
    )  # fmt: skip
    e = src.numel()
    dq_ = torch.zeros(nd, g, dq, dtype=acc, device=q.device) if nq else None
    dk = torch.zeros(ns, g, dq, dtype=acc, device=q.device) if nk else None
    dv_ = torch.zeros(ns, g, dv, dtype=acc, device=q.device) if nv else None
    def_ = torch.zeros(e, g, dq, dtype=acc, device=q.device) if nef else None
    dev_ = torch.zeros(e, g, dv, dtype=acc, device=q.device) if nev else None
    db = torch.zeros(e, g, dtype=acc, device=q.device) if nb else None
    da = torch.zeros(g, dq, dtype=acc, device=q.device) if na else None
    bg, bd, bdv, be, warps = _blocks(g, dq, dv, src.numel() / max(nd, 1))
    dummy = q.new_zeros(1, dtype=acc)  # for absent tensors: never read, never written
    if g > 0 and nd > 0 and (nq or nef or nev or nb or na):
        _bwd_dst_kernel[(nd, triton.cdiv(g, bg))](
            q, k, v, *_present(ef, ev, bias, att, dummy), ptr, src, lse, grad_out, delta,
            *(dummy if t is None else t for t in (dq_, def_, dev_, db, da)),
            g, dq, dv, _scalars(q, scale, slope), KIND=kind,
            NEED_Q=bool(nq), NEED_EF=bool(nef), NEED_EV=bool(nev), NEED_BIAS=bool(nb),
            NEED_ATT=bool(na), CDT=cdt, BG=bg, BD=bd, BDV=bdv, BE=be, num_warps=warps,
            **flags,
        )  # fmt: skip
    if g > 0 and ns > 0 and (nk or nv):
        _bwd_src_kernel[(ns, triton.cdiv(g, bg))](
            q, k, v, *_present(ef, ev, bias, att, dummy), sptr, perm, sdst, lse, grad_out,
            delta, dummy if dk is None else dk, dummy if dv_ is None else dv_,
            g, dq, dv, _scalars(q, scale, slope), KIND=kind,
            NEED_K=bool(nk), NEED_V=bool(nv), CDT=cdt, BG=bg, BD=bd, BDV=bdv, BE=be,
            num_warps=warps, **flags,
        )  # fmt: skip
    return [dq_, dk, dv_, def_, dev_, db, da]

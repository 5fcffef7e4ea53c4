"""Fused edge backend: one pass per target over its in-edges. On CPU a C++ kernel
(``_fused_cpu.cpp``) compiled on first use with ``torch.utils.cpp_extension`` and cached; on
CUDA the same pass in Triton (``_fused_triton.py``), compiled by Triton on first use.

Forward: per target, the scores of its in-edges (dot product, GAT or GATv2), their softmax
and the weighted sum of values, written once; only the output and the per-target
log-sum-exp are kept. Backward: the scores are recomputed from the log-sum-exp, once per
target (query and per-edge gradients) and once per source over the edges in source order
(key and value gradients), so threads never write the same row and nothing per edge is
stored.
Work is split into chunks of about equal numbers of edges, so that hubs of power-law graphs
do not serialise a thread.

Dropout on the weights draws its mask from a counter-based 32-bit hash of (seed, edge,
group), the seed taken from torch's generator: reproducible under ``torch.manual_seed``, but
not the same mask as the pure-torch edge path; the probability is rounded to a multiple of
2^-32.

Packed target rows (CPU): the backward first writes each target's output gradient,
log-sum-exp, ``delta = sum_d dout * out`` and query side by side in one row, so that the
source pass reads one row of adjacent cache lines per edge instead of rows of three tensors.

Huge pages (CPU): rows the kernel reads in random order (the sources' keys and values, and
in the backward's source pass the packed target rows) miss the TLB as well as the cache
once they outgrow its reach. Above ``huge_page_threshold()`` bytes they are copied into (or
packed in) memory backed by 2 MiB transparent huge pages (Linux) first, and the kernel's
outputs and gradients of that size are allocated there too. The blocks are kept for reuse
when their tensors die (at most ``GRAPHATTN_HUGE_PAGE_CACHE`` MiB, default 2048;
:func:`release_huge_pages` unmaps them), since a fresh page costs a fault and zeroing (a
fresh 256 MiB tensor: 65,536 faults of 4 KiB pages). ``GRAPHATTN_HUGE_PAGES=0`` turns this
off, ``GRAPHATTN_HUGE_PAGES=<MiB>`` sets the threshold.

Where no compiler is found (or ``GRAPHATTN_FUSED=0``), the backend refuses with that reason
and the pure-torch edge backend serves the call; a warning says so once. On CUDA the backend
refuses where Triton is not installed, and for dropout (the Triton kernel draws no mask).

Axis legend: ``Nd`` targets, ``Ns`` sources, ``E`` edges, ``G`` groups (batch x heads), ``D``
head dim, ``Dv`` value head dim.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import warnings
from typing import Any

import torch
from torch import Tensor

from ..scores import GAT, DotProduct, GATv2
from ._base import AttentionCall, Backend, BackendResult, memory_reasons
from ._chunks import by_source
from .edges import _node_major, edge_memory, sorted_edge_inputs

__all__ = [
    "FusedEdgesBackend",
    "fused_extension",
    "huge_page_threshold",
    "release_huge_pages",
    "triton_kernels",
]

_SCORES = {DotProduct: 0, GAT: 1, GATv2: 2}
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"
_HUGE_PAGE_MIB = 16  # the default threshold: above the TLB's reach in 4 KiB pages
_HUGE_CACHE_MIB = 2048  # the default bytes of free huge-page blocks kept for reuse


def huge_page_threshold(env: str | None = None, mode_file: str = _THP_MODE) -> int:
    """The bytes from which the CPU kernel copies rows it reads in random order into huge
    pages (and takes its outputs and gradients from reused huge-page blocks), or -1 for
    never. ``env`` (default: ``$GRAPHATTN_HUGE_PAGES``): ``"0"`` never, a
    number of MiB, or unset: 16 MiB where transparent huge pages are in ``madvise`` mode, and
    never where they are ``always`` on (big allocations already get them), ``never`` (none
    to get), unknown (not Linux), or where torch's allocator advises them itself
    (``THP_MEM_ALLOC_ENABLE=1``)."""
    env = os.environ.get("GRAPHATTN_HUGE_PAGES") if env is None else env
    if env is not None and env.strip():
        mib = _mib("GRAPHATTN_HUGE_PAGES", env)
        return -1 if mib <= 0 else int(mib * 2**20)
    if os.environ.get("THP_MEM_ALLOC_ENABLE", "0") not in ("", "0"):
        return -1
    try:
        with open(mode_file) as f:
            madvise = "[madvise]" in f.read()
    except OSError:
        return -1
    return _HUGE_PAGE_MIB * 2**20 if madvise else -1


def _huge_cache_bytes() -> int:
    """``$GRAPHATTN_HUGE_PAGE_CACHE`` (MiB of free huge-page blocks kept) in bytes."""
    env = os.environ.get("GRAPHATTN_HUGE_PAGE_CACHE", "").strip()
    mib = _mib("GRAPHATTN_HUGE_PAGE_CACHE", env) if env else _HUGE_CACHE_MIB
    return max(0, int(mib * 2**20))


def _mib(name: str, text: str) -> float:
    """The number of MiB that the environment variable ``name`` holds as ``text``."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of MiB, got {text!r}") from None


def release_huge_pages() -> int:
    """Unmaps the huge-page blocks the CPU kernel keeps for reuse (those whose tensors have
    died) and returns their bytes; 0 where the kernel is not built."""
    module = _STATE.get("module")
    return 0 if module is None else int(module.release_huge_pages())


def build_error(err: BaseException) -> str:
    """What a failed build says went wrong, in one line of at most 300 characters: the
    compiler's first ``error:`` line where the message holds one (torch puts the build's
    output after a first line that only names the extension), else the first line."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    lines = text.splitlines()
    errors = [line.strip() for line in lines if "error:" in line]
    return (errors[0] if errors else lines[0])[:300]


def _extension_name(source: str) -> str:
    """The C++ kernel's module name for the source file at ``source``: one per installed
    copy (a hash of its absolute path), so that two checkouts or environments on one machine
    keep their own build in torch's extension directory instead of rebuilding each other's
    (torch rebuilds an extension whose sources changed, about 35 s here)."""
    digest = hashlib.sha1(os.path.abspath(source).encode()).hexdigest()[:10]
    return f"graphattn_fused_cpu_v2_{digest}"


def fused_extension() -> tuple[Any | None, str | None]:
    """The compiled kernel module, or ``None`` and the reason it is not available (built on
    the first call, then cached in torch's extension directory)."""
    with _LOCK:
        if "module" in _STATE or "reason" in _STATE:
            return _STATE.get("module"), _STATE.get("reason")
        if os.environ.get("GRAPHATTN_FUSED", "1") == "0":
            _STATE["reason"] = "disabled by GRAPHATTN_FUSED=0"
            return None, _STATE["reason"]
        huge_pages, cache = huge_page_threshold(), _huge_cache_bytes()  # bad values raise
        path = os.environ.get("PATH", "")
        try:
            from torch.utils.cpp_extension import load

            if shutil.which("ninja") is None:  # the pip package's binary, if installed
                with contextlib.suppress(ImportError):
                    import ninja

                    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + path
            source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fused_cpu.cpp")
            _STATE["module"] = load(
                name=_extension_name(source),
                sources=[source],
                extra_cflags=[
                    "-O3",
                    "-march=native",
                    "-fopenmp",
                    "-fno-math-errno",
                    "-fno-trapping-math",
                ],
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
            _STATE["module"].set_huge_pages(huge_pages, cache)
        except Exception as err:  # no compiler, no ninja, a failed build
            _STATE["reason"] = f"the C++ kernel could not be built ({build_error(err)})"
            warnings.warn(
                f"graphattn: {_STATE['reason']}; the pure-torch edge backend serves these calls",
                RuntimeWarning,
                stacklevel=2,
            )
        finally:
            os.environ["PATH"] = path
        return _STATE.get("module"), _STATE.get("reason")


def triton_kernels() -> tuple[Any | None, str | None]:
    """The Triton kernel module for CUDA tensors, or ``None`` and the reason it is not
    available (Triton not installed, or ``GRAPHATTN_FUSED=0``)."""
    with _LOCK:
        if "triton" in _STATE or "triton_reason" in _STATE:
            return _STATE.get("triton"), _STATE.get("triton_reason")
        if os.environ.get("GRAPHATTN_FUSED", "1") == "0":
            _STATE["triton_reason"] = "disabled by GRAPHATTN_FUSED=0"
        else:
            try:
                from . import _fused_triton

                _STATE["triton"] = _fused_triton
            except ImportError as err:
                _STATE["triton_reason"] = f"Triton is not installed ({err})"[:200]
        return _STATE.get("triton"), _STATE.get("triton_reason")


def _kernels(device: torch.device) -> tuple[Any | None, str | None]:
    """The kernel module that serves tensors on ``device`` (C++ on CPU, Triton on CUDA)."""
    if device.type == "cuda":
        return triton_kernels()
    return fused_extension()


class FusedEdgesBackend(Backend):
    """The fused kernels. Serves: CPU tensors through the C++ kernel (float32, float64; half
    precision is computed in float32) and CUDA tensors through the Triton kernel (float16,
    bfloat16 and float32 computed in float32, float64), the dot-product, GAT and GATv2
    scores, per-edge and dense biases, key padding, per-edge features and values, and
    dropout on CPU. Refuses: other devices, other scores, calls that return the weights (the
    pure-torch edge path returns them on the output's autograd path), dropout on CUDA, and
    machines where the kernel cannot be built or Triton is not installed."""

    name = "fused"

    def reasons(self, call: AttentionCall) -> list[str]:
        reasons = []
        device = call.q.device.type
        if torch.compiler.is_compiling():
            reasons.append("torch.compile and torch.export trace the pure-torch edge path")
        if device not in ("cpu", "cuda", "meta"):
            reasons.append(f"CPU (C++) and CUDA (Triton) only, got device {call.q.device}")
        if type(call.score) not in _SCORES:
            reasons.append(f"score {call.score!r} is not served (dot product, GAT, GATv2)")
        if call.need_weights:
            reasons.append("returns no weights (the pure-torch edge path does)")
        if device == "cuda" and call.dropout_p > 0:
            reasons.append(f"the Triton kernel serves no dropout, got dropout_p={call.dropout_p}")
        reasons += memory_reasons(call, edge_memory(call, fused=True), "per-edge inputs")
        if not reasons:
            _, why = _kernels(call.q.device)
            if why is not None:
                reasons.append(why)
        return reasons

    def run(self, call: AttentionCall) -> BackendResult:
        q, k, v, graph = call.q, call.k, call.v, call.graph
        b, h, nd, _ = q.shape
        dv = v.shape[-1]
        st = graph.edge_structure()
        bias, ef, ev = sorted_edge_inputs(call, st)
        att = None
        if isinstance(call.score, GATv2):
            att = call.score.att.to(q.dtype).expand(b, h, -1).reshape(b * h, -1)  # (G, D)
        slope = getattr(call.score, "negative_slope", 0.0)
        seed = int(torch.randint(0, 2**62, (1,)).item()) if call.dropout_p > 0 else 0
        dtype = q.dtype
        tensors = [_node_major(q), _node_major(k), _node_major(v), ef, ev, bias, att]
        if dtype in (torch.float16, torch.bfloat16) and q.device.type != "cuda":
            tensors = [None if t is None else t.float() for t in tensors]
        out = _FusedEdgeAttention.apply(
            *tensors,
            st,
            _SCORES[type(call.score)],
            call.scale,
            slope,
            call.dropout_p,
            seed,
        )
        return BackendResult(out.to(dtype).view(nd, b, h, dv).permute(1, 2, 0, 3))


def _c(t: Tensor | None, ref: Tensor) -> Tensor:
    """A contiguous tensor for the kernel (an empty one for ``None``)."""
    return ref.new_empty(0) if t is None else t.contiguous()


def _rows(t: Tensor, strided: bool) -> Tensor:
    """``(N, G, D)`` for a kernel; ``strided``: it takes any row stride (the C++ kernel), and
    gets ``t`` itself where each row's ``(G, D)`` values are contiguous (the node-major view
    of a projection's output, in which a node's query, key and value sit side by side); else
    a contiguous copy.

    Shapes:
        - t: ``(N, G, D)``; returns ``(N, G, D)``
    """
    if strided and t.shape[0] > 0 and t[0].is_contiguous():
        return t
    return t.contiguous()


class _FusedEdgeAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        q: Tensor,  # (Nd, G, Dq)
        k: Tensor,  # (Ns, G, Dk)
        v: Tensor,  # (Ns, G, Dv)
        ef: Tensor | None,  # (E, G, De), sorted order
        ev: Tensor | None,  # (E, G, Dv), sorted order
        bias: Tensor | None,  # (E, G), sorted order
        att: Tensor | None,  # (G, D) for GATv2
        st: Any,
        kind: int,
        scale: float,
        slope: float,
        p: float,
        seed: int,
    ) -> Tensor:
        ext, _ = _kernels(q.device)
        strided = getattr(ext, "row_strides", False)
        q, k, v = (_rows(t, strided) for t in (q, k, v))
        if hasattr(ext, "paged_rows"):  # rows read in random order go to huge pages
            k, v = ext.paged_rows([k, v])
        args = [q, k, v] + [_c(t, q) for t in (ef, ev, bias, att)]
        out, lse = ext.forward(*args, st.ptr, st.src, kind, float(scale), float(slope), p, seed)
        ctx.save_for_backward(*args, out, lse)
        ctx.st, ctx.kind, ctx.scale, ctx.slope, ctx.p, ctx.seed = st, kind, scale, slope, p, seed
        ctx.present = [t is not None for t in (ef, ev, bias, att)]
        return out  # (Nd, G, Dv)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        q, k, v, ef, ev, bias, att, out, lse = ctx.saved_tensors
        st = ctx.st
        ext, _ = _kernels(q.device)
        grad_out = grad_out.contiguous()
        if getattr(ext, "packs_targets", False):
            delta = out  # the C++ kernel sums dout * out as it packs each target's row
        else:
            delta = (grad_out * out).sum(-1)  # (Nd, G): sum over in-edges of alpha * dalpha
        perm, sptr, sdst = by_source(st)
        needs = list(ctx.needs_input_grad[:7])
        for i, present in enumerate(ctx.present):
            needs[3 + i] = needs[3 + i] and present
        grads = ext.backward(
            q,
            k,
            v,
            ef,
            ev,
            bias,
            att,
            st.ptr,
            st.src,
            sptr,
            perm,
            sdst,
            lse,
            grad_out,
            delta,
            ctx.kind,
            float(ctx.scale),
            float(ctx.slope),
            ctx.p,
            ctx.seed,
            needs,
        )
        inputs = (q, k, v, ef, ev, bias, att)
        grads = [
            None if not n else (g.to(x.dtype) if g is not None else torch.zeros_like(x))
            for g, n, x in zip(grads, needs, inputs, strict=True)
        ]
        return (*grads, None, None, None, None, None, None)

"""``nn.MultiheadAttention``'s call on the graphattn operator: a drop-in.

:class:`MultiheadAttention` takes MHA's constructor and ``forward(query, key, value,
key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)`` and always
returns ``(out, weights)``, so it can be the ``self_attn`` or ``multihead_attn`` of
``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``. The graph-native call of
:class:`~graphattn.GraphAttention` (``attn(x, graph, ...)``) is its ``attend`` method.

Axis legend: ``B`` batch, ``L`` targets (queries), ``S`` sources (keys), ``E`` embed dim,
``H`` heads.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .attention import GraphAttention
from .functional import BackendName, graph_attention, graph_attention_with_weights
from .graph import Graph

__all__ = ["MultiheadAttention"]


class MultiheadAttention(GraphAttention):
    """``torch.nn.MultiheadAttention``, same parameters and call, on graphattn's backends.

    Differences from MHA, each tested: a query row whose every key is masked gets a zero
    output instead of NaN; ``is_causal=True`` without ``attn_mask`` uses the causal graph
    (MHA requires the mask).

    Args:
        embed_dim: total dimension ``E`` of the model.
        num_heads: number of heads ``H``.
        dropout: dropout on the attention weights in training.
        bias: biases in the input and output projections.
        add_bias_kv: append a learned key and value to every sample's sources.
        add_zero_attn: append a zero key and value to every sample's sources.
        kdim: feature size of ``key`` (default ``E``).
        vdim: feature size of ``value`` (default ``E``).
        batch_first: ``(B, L, E)`` tensors; ``False`` (the default, as in MHA): ``(L, B, E)``.
        device: where the parameters live.
        dtype: the parameters' dtype.
        backend: graphattn's backend (``"auto"``).

    Shapes:
        - query ``(L, B, E)`` (``(B, L, E)`` with ``batch_first``) or ``(L, E)``; key and
          value ``(S, B, kdim/vdim)`` likewise
        - returns ``(out, weights)``: out like ``query``; weights ``(B, L, S)`` averaged over
          heads, ``(B, H, L, S)`` with ``average_attn_weights=False``, or ``None``

    Example:
        >>> import torch
        >>> mha = MultiheadAttention(16, 4)
        >>> x = torch.randn(5, 2, 16)  # (L, B, E)
        >>> out, w = mha(x, x, x)
        >>> out.shape, w.shape
        (torch.Size([5, 2, 16]), torch.Size([2, 5, 5]))
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: BackendName = "auto",
    ) -> None:
        super().__init__(
            embed_dim,
            num_heads,
            dropout=dropout,
            bias=bias,
            kdim=kdim,
            vdim=vdim,
            backend=backend,
            device=device,
            dtype=dtype,
            batch_first=batch_first,
        )
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = bool(add_zero_attn)

    @classmethod
    def from_multihead_attention(  # type: ignore[override]
        cls, mha: nn.MultiheadAttention, *, backend: BackendName = "auto"
    ) -> MultiheadAttention:
        """A copy of ``mha`` (every option and weight, ``add_bias_kv`` and ``add_zero_attn``
        included)."""
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"mha must be an nn.MultiheadAttention, got {type(mha).__name__}")
        ref = mha.out_proj.weight
        new = cls(
            mha.embed_dim,
            mha.num_heads,
            dropout=mha.dropout,
            bias=mha.in_proj_bias is not None,
            add_bias_kv=mha.bias_k is not None,
            add_zero_attn=mha.add_zero_attn,
            kdim=mha.kdim,
            vdim=mha.vdim,
            batch_first=mha.batch_first,
            device=ref.device,
            dtype=ref.dtype,
            backend=backend,
        )
        with torch.no_grad():
            new.load_state_dict(mha.state_dict(), strict=True)
        return new

    def attend(self, x: Tensor, graph: Graph | Tensor | None = None, **kwargs: Any) -> Tensor:
        """The graph-native call of :class:`~graphattn.GraphAttention`
        (``attend(x, graph, x_src=..., key_padding_mask=...)``); with the weights:
        :meth:`~graphattn.GraphAttention.forward_with_weights`, inherited as it is."""
        return super().forward(x, graph, **kwargs)

    def forward(  # type: ignore[override]
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``nn.MultiheadAttention.forward``: masks are bool (True = not allowed) or float
        (added to the scores); ``attn_mask`` is ``(L, S)`` or ``(B * H, L, S)``."""
        batched = query.dim() == 3
        if batched and not self.batch_first:  # (L, B, E) -> (B, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if not batched:
            query, key, value = query[None], key[None], value[None]
        b, lq, _ = query.shape
        h, dh = self.num_heads, self.head_dim
        self_attention = key is query and value is query
        q, k, v = self._project(query, None if self_attention else (key, value))
        if self.bias_k is not None:  # one learned key and value more, for every sample
            k = torch.cat([k, self.bias_k.expand(b, 1, -1)], dim=1)
            v = torch.cat([v, self.bias_v.expand(b, 1, -1)], dim=1)
        q = q.view(b, lq, h, dh).transpose(1, 2)  # (B, H, L, Dh)
        k = k.reshape(b, -1, h, dh).transpose(1, 2)  # (B, H, S', Dh)
        v = v.reshape(b, -1, h, dh).transpose(1, 2)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(b, h, 1, dh)], dim=2)
            v = torch.cat([v, v.new_zeros(b, h, 1, dh)], dim=2)
        s = k.shape[2]
        bias = self._additive_mask(key_padding_mask, attn_mask, b, lq, s, q.dtype, batched)
        graph = None
        if is_causal and attn_mask is None:
            graph = Graph.causal(lq, device=q.device) if lq == s else None
        res = (graph_attention_with_weights if need_weights else graph_attention)(
            q,
            k,
            v,
            graph,
            attn_bias=bias,
            dropout_p=self.dropout if self.training else 0.0,
            score=self.score,
            backend=self.backend,
        )
        out = res.out if need_weights else res  # (B, H, L, Dh)
        out = self.out_proj(out.transpose(1, 2).reshape(b, lq, self.embed_dim))  # (B, L, E)
        weights = None
        if need_weights:
            weights = res.attention.to_dense()  # (B, H, L, S)
            if average_attn_weights:
                weights = weights.mean(dim=1)  # (B, L, S)
            if not batched:
                weights = weights[0]
        if not batched:
            return out[0], weights
        return (out if self.batch_first else out.transpose(0, 1)), weights

    def _additive_mask(
        self,
        key_padding_mask: Tensor | None,
        attn_mask: Tensor | None,
        b: int,
        lq: int,
        s: int,
        dtype: torch.dtype,
        batched: bool,
    ) -> Tensor | None:
        """MHA's two masks as one additive bias ``(B, H, L, S)`` (``-inf`` where not
        allowed), with the columns of ``bias_k`` and the zero key appended unmasked."""
        if key_padding_mask is None and attn_mask is None:
            return None
        h = self.num_heads
        bias = torch.zeros(b, h, lq, s, dtype=dtype, device=self.out_proj.weight.device)
        if attn_mask is not None:
            m = _as_additive("attn_mask", attn_mask, dtype)
            if m.dim() == 2:
                m = m.expand(b, h, lq, m.shape[-1])
            elif m.dim() == 3:
                m = m.view(b, h, lq, m.shape[-1])
            else:
                shape = tuple(attn_mask.shape)
                raise ValueError(f"attn_mask must be (L, S) or (B * num_heads, L, S), got {shape}")
            bias[..., : m.shape[-1]] += m
        if key_padding_mask is not None:
            m = _as_additive("key_padding_mask", key_padding_mask, dtype)
            if not batched and m.dim() == 1:
                m = m[None]
            bias[..., : m.shape[-1]] += m[:, None, None, :]
        return bias


def _as_additive(name: str, mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A bool mask (True = not allowed) as ``0 / -inf``; a float mask as it is."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, -math.inf)
    if not mask.dtype.is_floating_point:
        raise TypeError(f"{name} must be bool or floating point, got {mask.dtype}")
    return mask.to(dtype)

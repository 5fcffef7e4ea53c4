"""Text as nodes: a byte-level tokenizer, a plug for any other tokenizer, and ``TextAdapter``.

Each token becomes a node: a token embedding plus a position encoding (learned, as in
GPT-2/BERT, or fixed sinusoidal as in "Attention Is All You Need"). Padding is carried as the
node mask; ``causal=True`` makes the default graph autoregressive.

Defined edge cases:

- **Empty string**: with special tokens (the default) it encodes to ``[BOS, EOS]``, so every
  text has at least two real nodes. Without special tokens it encodes to ``[]``; in a batch
  that sample is all padding and :class:`graphattn.GraphAttention` gives its nodes a zero
  message (never NaN); :func:`modalities.masked_mean` pools it to zeros.
- **Over-long text**: truncated to ``max_length`` tokens *including* the special tokens: the
  content is cut at the end and ``BOS``/``EOS`` are kept (the convention of Hugging Face
  tokenizers). :class:`ByteTokenizer` never cuts inside a UTF-8 character.

Axis legend: ``B`` batch, ``N`` tokens (nodes), ``D`` embedding size.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from graphattn.positional import sinusoidal_encoding

from ._common import (
    arg_error,
    check_bool,
    check_choice,
    check_int,
    check_mask,
    check_sequence,
    short_repr,
)
from .nodes import NodeSet

__all__ = [
    "BatchEncoding",
    "Tokenizer",
    "ByteTokenizer",
    "TokenizerAdapter",
    "batch_encode",
    "TextAdapter",
]


class BatchEncoding(NamedTuple):
    """Token ids of a batch of texts, right-padded.

    Attributes:
        ids: token ids, ``pad_id`` in padded positions. Shape ``(B, N)`` int64.
        mask: ``True`` marks a real token. Shape ``(B, N)`` bool.
    """

    ids: Tensor
    mask: Tensor


@runtime_checkable
class Tokenizer(Protocol):
    """What :class:`TextAdapter` needs from a tokenizer.

    Attributes:
        vocab_size: number of distinct ids; every id lies in ``[0, vocab_size)``.
        pad_id: the id used for padding.
    """

    vocab_size: int
    pad_id: int

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """Ids of ``text``, special tokens included, at most ``max_length`` of them."""
        ...


def _check_max_length(max_length: Any, specials: int) -> int | None:
    """``max_length`` if it is ``None`` or an int that holds the ``specials`` special tokens
    (and at least one id)."""
    max_length = check_int("max_length", max_length, optional=True)
    if max_length is not None and max_length < max(specials, 1):
        raise ValueError(
            f"max_length must be >= {max(specials, 1)} to hold the special tokens, got {max_length}"
        )
    return max_length


def _check_text(name: str, text: Any) -> str:
    if not isinstance(text, str):
        raise arg_error(TypeError, name, "a str", text)
    return text


def _check_texts(name: str, texts: Any, of: str = "str") -> list[str]:
    """``texts`` as a list of ``str``; a single ``str`` is refused (its characters would be
    encoded as separate texts)."""
    texts = check_sequence(name, texts, of)
    for i, text in enumerate(texts):
        _check_text(f"{name}[{i}]", text)
    return texts


def _check_tokenizer(name: str, tokenizer: Any) -> Tokenizer:
    if not isinstance(tokenizer, Tokenizer):
        raise arg_error(
            TypeError,
            name,
            "a Tokenizer (vocab_size, pad_id and encode(text, max_length)); wrap other "
            "tokenizers in TokenizerAdapter",
            tokenizer,
        )
    return tokenizer


def _truncate(
    content: list[int], max_length: int | None, bos: int | None, eos: int | None
) -> list[int]:
    """``[bos] + content + [eos]`` cut to ``max_length`` by dropping content from the end."""
    specials = (bos is not None) + (eos is not None)
    max_length = _check_max_length(max_length, specials)
    if max_length is not None:
        content = content[: max_length - specials]
    return ([bos] if bos is not None else []) + content + ([eos] if eos is not None else [])


class ByteTokenizer:
    """UTF-8 bytes as tokens, with a few special tokens first; needs no vocabulary file.

    Ids: ``PAD=0``, ``BOS=1``, ``EOS=2``, ``MASK=3``, then byte ``b`` is id ``b + 4``;
    ``vocab_size == 260``.

    Args:
        add_special_tokens: wrap every text in ``BOS ... EOS``.

    Example:
        >>> tok = ByteTokenizer()
        >>> tok.encode("hé")
        [1, 108, 199, 173, 2]
        >>> tok.decode(tok.encode("hé"))
        'hé'
        >>> tok.encode("")
        [1, 2]
        >>> tok.encode("héllo", max_length=4)  # 'é' is two bytes: never cut in half
        [1, 108, 2]
    """

    PAD = 0
    BOS = 1
    EOS = 2
    MASK = 3
    num_special = 4
    vocab_size = 256 + num_special
    pad_id = PAD

    def __init__(self, *, add_special_tokens: bool = True) -> None:
        self.add_special_tokens = check_bool("add_special_tokens", add_special_tokens)

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """Token ids of ``text``: ``[BOS] + bytes + [EOS]``, cut to ``max_length`` ids by
        dropping whole UTF-8 characters from the end (``BOS``/``EOS`` are kept)."""
        data = _check_text("text", text).encode("utf-8")
        bos, eos = (self.BOS, self.EOS) if self.add_special_tokens else (None, None)
        specials = 2 if self.add_special_tokens else 0
        max_length = _check_max_length(max_length, specials)
        if max_length is not None:
            cut = max_length - specials
            if cut < len(data):
                while cut > 0 and (data[cut] & 0xC0) == 0x80:  # continuation byte: back off
                    cut -= 1
                data = data[:cut]
        return _truncate([b + self.num_special for b in data], max_length, bos, eos)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Text of ``ids``; special tokens are skipped and invalid UTF-8 becomes ``U+FFFD``.

        Args:
            ids: a 1-D sequence or tensor of ids in ``[0, vocab_size)``.
        """
        if isinstance(ids, Tensor):
            what = "a 1-D sequence or integer tensor of token ids"
            if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
                raise arg_error(TypeError, "ids", what, ids)
            if ids.dim() != 1:
                raise arg_error(ValueError, "ids", what, ids)
            ids = ids.tolist()
        ids = check_sequence("ids", ids, "int")
        for i, value in enumerate(ids):
            if check_int(f"ids[{i}]", value, minimum=0) >= self.vocab_size:
                raise ValueError(
                    f"ids[{i}] must lie in [0, vocab_size={self.vocab_size}), got {value}"
                )
        data = bytes(i - self.num_special for i in ids if i >= self.num_special)
        return data.decode("utf-8", errors="replace")

    def batch_encode(
        self, texts: Sequence[str], max_length: int | None = None, *, pad_to_max: bool = False
    ) -> BatchEncoding:
        """See :func:`batch_encode`."""
        return batch_encode(self, texts, max_length, pad_to_max=pad_to_max)

    def __repr__(self) -> str:
        return (
            f"ByteTokenizer(vocab_size={self.vocab_size}, "
            f"add_special_tokens={self.add_special_tokens})"
        )


class TokenizerAdapter:
    """Make any tokenizer usable as a :class:`Tokenizer`.

    ``tokenizer`` may be a function ``str -> list[int]``, or an object whose
    ``encode(text)`` returns a list of ids, an object with ``.ids`` (a Hugging Face
    ``tokenizers.Encoding``) or a mapping with ``"input_ids"``. Ids are checked against
    ``vocab_size``; ``bos_id``/``eos_id``, when given, are added around the ids and kept
    when truncating (leave them ``None`` if the tokenizer adds its own).

    Args:
        tokenizer: the callable or tokenizer object.
        vocab_size: number of ids the tokenizer can produce.
        pad_id: id used for padding.
        bos_id: id put before every text (``None``: nothing).
        eos_id: id put after every text (``None``: nothing).

    Example:
        >>> words = {"<pad>": 0, "hello": 1, "world": 2}
        >>> tok = TokenizerAdapter(lambda s: [words[w] for w in s.split()], vocab_size=3)
        >>> tok.batch_encode(["hello world", "world"]).ids.tolist()
        [[1, 2], [2, 0]]
    """

    def __init__(
        self,
        tokenizer: Callable[[str], Any] | Any,
        *,
        vocab_size: int,
        pad_id: int = 0,
        bos_id: int | None = None,
        eos_id: int | None = None,
    ) -> None:
        if not (callable(tokenizer) or callable(getattr(tokenizer, "encode", None))):
            raise arg_error(
                TypeError,
                "tokenizer",
                "callable (str -> list[int]) or have an encode(text) method",
                tokenizer,
            )
        self.tokenizer = tokenizer
        self.vocab_size = check_int("vocab_size", vocab_size)
        ids = {}
        for name, value in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            value = check_int(name, value, minimum=0, optional=name != "pad_id")
            if value is not None and value >= self.vocab_size:
                raise ValueError(
                    f"{name} must lie in [0, vocab_size={self.vocab_size}), got {value}"
                )
            ids[name] = value
        self.pad_id, self.bos_id, self.eos_id = ids["pad_id"], ids["bos_id"], ids["eos_id"]

    def _raw_ids(self, text: str) -> list[int]:
        enc = getattr(self.tokenizer, "encode", None)
        out = enc(text) if callable(enc) else self.tokenizer(text)
        if hasattr(out, "ids"):
            out = out.ids
        elif isinstance(out, Mapping) and "input_ids" in out:
            out = out["input_ids"]
        if isinstance(out, Tensor):
            out = out.reshape(-1).tolist()
        try:
            ids = [operator.index(i) for i in out]
        except TypeError:
            raise TypeError(
                f"tokenizer returned {short_repr(out)} for {text[:40]!r}; expected a list of "
                "int ids, an object with .ids, or a mapping with 'input_ids'"
            ) from None
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(
                f"tokenizer produced id {bad[0]} for {text[:40]!r}, outside "
                f"[0, vocab_size={self.vocab_size})"
            )
        return ids

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """Ids of ``text`` (with ``bos_id``/``eos_id`` if set), cut to ``max_length``."""
        _check_text("text", text)
        _check_max_length(max_length, (self.bos_id is not None) + (self.eos_id is not None))
        return _truncate(self._raw_ids(text), max_length, self.bos_id, self.eos_id)

    def batch_encode(
        self, texts: Sequence[str], max_length: int | None = None, *, pad_to_max: bool = False
    ) -> BatchEncoding:
        """See :func:`batch_encode`."""
        return batch_encode(self, texts, max_length, pad_to_max=pad_to_max)

    def __repr__(self) -> str:
        return (
            f"TokenizerAdapter({type(self.tokenizer).__name__}, vocab_size={self.vocab_size}, "
            f"pad_id={self.pad_id})"
        )


def batch_encode(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    max_length: int | None = None,
    *,
    pad_to_max: bool = False,
) -> BatchEncoding:
    """Encode and right-pad a batch of texts.

    Args:
        tokenizer: any :class:`Tokenizer`.
        texts: the texts (a single ``str`` is refused, to avoid encoding its characters as
            separate texts).
        max_length: truncate every text to this many ids (special tokens included).
        pad_to_max: pad to ``max_length`` instead of the longest text.

    Shapes:
        - returns ids ``(B, N)`` int64 and mask ``(B, N)`` bool, ``N`` the longest encoding
          (or ``max_length`` with ``pad_to_max``).
    """
    _check_tokenizer("tokenizer", tokenizer)
    texts = _check_texts("texts", texts)
    max_length = check_int("max_length", max_length, optional=True)
    if check_bool("pad_to_max", pad_to_max):
        if max_length is None:
            raise ValueError("pad_to_max=True needs max_length, got max_length=None")
    encoded = [tokenizer.encode(t, max_length) for t in texts]
    n = max((len(e) for e in encoded), default=0)
    if pad_to_max:
        n = max_length
    ids = torch.full((len(encoded), n), tokenizer.pad_id, dtype=torch.long)  # (B, N)
    mask = torch.zeros(len(encoded), n, dtype=torch.bool)  # (B, N)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
        mask[i, : len(e)] = True
    return BatchEncoding(ids, mask)


class TextAdapter(nn.Module):
    """Token embedding + position encoding -> text nodes.

    Args:
        vocab_size: size of the embedding table.
        dim: node feature size ``D``.
        max_length: the most tokens per text; longer strings are truncated (see the module
            docstring), longer id tensors are refused.
        causal: make the node set's default graph causal (``nodes.graph()``).
        tokenizer: a :class:`Tokenizer` for string inputs (default: :class:`ByteTokenizer`
            when ``vocab_size >= 260``, else strings are refused).
        positions: ``"learned"`` (a table of ``max_length`` vectors) or ``"sinusoidal"``.

    Shapes:
        - input: a list of ``B`` strings, or ids ``(B, N)`` with optional ``mask`` ``(B, N)``
        - output: :class:`NodeSet` with features ``(B, N, D)``, mask ``(B, N)`` and index
          positions ``(B, N)``

    Example:
        >>> adapter = TextAdapter(260, 16, max_length=32)
        >>> nodes = adapter(["hello", ""])
        >>> nodes.features.shape, nodes.mask.sum(1).tolist()
        (torch.Size([2, 7, 16]), [7, 2])
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        max_length: int,
        *,
        causal: bool = False,
        tokenizer: Tokenizer | None = None,
        positions: Literal["learned", "sinusoidal"] = "learned",
    ) -> None:
        super().__init__()
        vocab_size = self.vocab_size = check_int("vocab_size", vocab_size)
        dim = self.dim = check_int("dim", dim)
        max_length = self.max_length = check_int("max_length", max_length)
        self.causal = check_bool("causal", causal)
        check_choice("positions", positions, ("learned", "sinusoidal"))
        if tokenizer is None and vocab_size >= ByteTokenizer.vocab_size:
            tokenizer = ByteTokenizer()
        if tokenizer is not None:
            _check_tokenizer("tokenizer", tokenizer)
            if tokenizer.vocab_size > vocab_size:
                raise ValueError(
                    f"tokenizer has vocab_size={tokenizer.vocab_size} > the adapter's "
                    f"vocab_size={vocab_size}"
                )
        self.tokenizer = tokenizer
        self.positions = positions
        self.pad_id = tokenizer.pad_id if tokenizer is not None else 0
        self.token = nn.Embedding(vocab_size, dim)
        if positions == "learned":
            self.position = nn.Parameter(torch.empty(max_length, dim))
        else:
            self.register_parameter("position", None)
            self.register_buffer("sinusoid", sinusoidal_encoding(max_length, dim), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) token and position tables (GPT-2's initialisation)."""
        nn.init.normal_(self.token.weight, std=0.02)
        if self.position is not None:
            nn.init.normal_(self.position, std=0.02)

    def encode(self, texts: Sequence[str]) -> BatchEncoding:
        """Token ids and mask of ``texts`` with this adapter's tokenizer and
        ``max_length``."""
        if self.tokenizer is None:
            raise TypeError(
                f"this TextAdapter has no tokenizer (vocab_size={self.vocab_size} < 260 and "
                "none given): pass token ids, or build it with tokenizer=..."
            )
        return batch_encode(self.tokenizer, texts, self.max_length)

    def forward(self, inputs: Sequence[str] | Tensor, mask: Tensor | None = None) -> NodeSet:
        """Embed a batch of texts (or token ids) as nodes.

        Args:
            inputs: ``B`` strings, or ids ``(B, N)`` (integer, ``N <= max_length``).
            mask: for ids only: ``(B, N)`` bool, ``True`` = real token (default:
                ``ids != pad_id``).

        Shapes:
            - returns a :class:`NodeSet`: features ``(B, N, D)``, mask ``(B, N)``.
        """
        if isinstance(inputs, Tensor):
            ids = inputs
            what = "an integer tensor of shape (B, N) (token ids) or a sequence of str"
            if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
                raise arg_error(TypeError, "inputs", what, ids)
            if ids.dim() != 2:
                raise arg_error(ValueError, "inputs", what, ids)
            if ids.shape[1] > self.max_length:
                raise ValueError(
                    f"ids have N={ids.shape[1]} tokens but max_length={self.max_length}: "
                    "truncate them (strings are truncated automatically)"
                )
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
                raise ValueError(
                    f"ids must lie in [0, vocab_size={self.vocab_size}), got values in "
                    f"[{int(ids.min())}, {int(ids.max())}]"
                )
            if mask is None:
                mask = ids != self.pad_id
            else:
                check_mask("mask", mask, tuple(ids.shape))
        else:
            inputs = _check_texts("inputs", inputs, "str (or an integer tensor of token ids)")
            if mask is not None:
                raise ValueError("mask is computed for string inputs; pass it only with ids")
            ids, mask = self.encode(inputs)
            ids, mask = ids.to(self.token.weight.device), mask.to(self.token.weight.device)
        b, n = ids.shape
        pos_table = self.position if self.position is not None else self.sinusoid  # (L, D)
        x = self.token(ids) + pos_table[:n]  # (B, N, D)
        positions = torch.arange(n, device=ids.device).expand(b, n)  # (B, N)
        return NodeSet(
            features=x,
            mask=mask,
            positions=positions,
            position_kind="index",
            modality="text",
            graph_kind="causal" if self.causal else "complete",
        )

    def extra_repr(self) -> str:
        return (
            f"vocab_size={self.vocab_size}, dim={self.dim}, max_length={self.max_length}, "
            f"causal={self.causal}, positions={self.positions!r}"
        )

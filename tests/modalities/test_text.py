"""Text: byte tokenizer, pluggable tokenizers, TextAdapter shapes, edge cases, invariances."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from graphattn import CausalGraph, GraphAttention
from modalities import (
    ByteTokenizer,
    TextAdapter,
    Tokenizer,
    TokenizerAdapter,
    batch_encode,
    masked_mean,
)

TEXTS = ["graph attention", "héllo wörld ✓", "a"]


def test_byte_tokenizer_roundtrip_and_ids() -> None:
    tok = ByteTokenizer()
    assert tok.vocab_size == 260 and isinstance(tok, Tokenizer)
    for text in TEXTS + [""]:
        ids = tok.encode(text)
        assert ids[0] == tok.BOS and ids[-1] == tok.EOS
        assert len(ids) == len(text.encode("utf-8")) + 2
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
        assert tok.decode(torch.tensor(ids)) == text
    assert tok.encode("A") == [1, ord("A") + 4, 2]
    assert ByteTokenizer(add_special_tokens=False).encode("") == []


def test_empty_string_has_bos_and_eos() -> None:
    assert ByteTokenizer().encode("") == [ByteTokenizer.BOS, ByteTokenizer.EOS]


@pytest.mark.parametrize("max_length", [2, 3, 4, 5, 8])
def test_truncation_keeps_specials_and_whole_characters(max_length: int) -> None:
    tok = ByteTokenizer()
    text = "héllo ✓"  # 'é' is 2 bytes, '✓' is 3
    ids = tok.encode(text, max_length)
    assert len(ids) <= max_length
    assert ids[0] == tok.BOS and ids[-1] == tok.EOS
    decoded = tok.decode(ids)
    assert text.startswith(decoded) and "\ufffd" not in decoded


def test_truncation_errors() -> None:
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        ByteTokenizer().encode("abc", max_length=1)
    with pytest.raises(TypeError, match="text must be a str"):
        ByteTokenizer().encode(b"abc")  # type: ignore[arg-type]


def test_batch_encode_pads_right() -> None:
    tok = ByteTokenizer()
    ids, mask = tok.batch_encode(["ab", "", "abcd"])
    assert ids.shape == mask.shape == (3, 6)
    assert mask.sum(1).tolist() == [4, 2, 6]
    assert (ids[~mask] == tok.PAD).all()
    ids, mask = tok.batch_encode(["ab"], max_length=10, pad_to_max=True)
    assert ids.shape == (1, 10) and mask.sum() == 4
    with pytest.raises(TypeError, match="single str"):
        tok.batch_encode("ab")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pad_to_max=True needs max_length"):
        tok.batch_encode(["ab"], pad_to_max=True)


def test_tokenizer_adapter_plugs_functions_and_objects() -> None:
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "graph": 3, "attention": 4}

    def split(text: str) -> list[int]:
        return [vocab[w] for w in text.split()]

    hf_like = SimpleNamespace(encode=lambda text: SimpleNamespace(ids=split(text)))
    mapping = lambda text: {"input_ids": torch.tensor([split(text)])}  # noqa: E731
    for tok_obj in (split, hf_like, mapping):
        tok = TokenizerAdapter(tok_obj, vocab_size=5, bos_id=1, eos_id=2)
        assert isinstance(tok, Tokenizer)
        assert tok.encode("graph attention") == [1, 3, 4, 2]
        assert tok.encode("graph attention graph", max_length=3) == [1, 3, 2]
        assert tok.encode("") == [1, 2]
    ids, mask = batch_encode(TokenizerAdapter(split, vocab_size=5), ["graph attention", ""])
    assert ids.tolist() == [[3, 4], [0, 0]] and mask.tolist() == [[True, True], [False, False]]


def test_tokenizer_adapter_errors() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        TokenizerAdapter(42, vocab_size=5)
    with pytest.raises(ValueError, match=r"bos_id must lie in \[0, vocab_size=5\), got 7"):
        TokenizerAdapter(len, vocab_size=5, bos_id=7)
    tok = TokenizerAdapter(lambda s: [9], vocab_size=5)
    with pytest.raises(ValueError, match=r"produced id 9 .* outside \[0, vocab_size=5\)"):
        tok.encode("x")


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_text_adapter_shapes_and_masks(positions: str) -> None:
    adapter = TextAdapter(260, 16, max_length=32, positions=positions)
    nodes = adapter(TEXTS)
    lens = [len(t.encode()) + 2 for t in TEXTS]
    assert nodes.features.shape == (3, max(lens), 16)
    assert nodes.mask.sum(1).tolist() == lens
    assert nodes.position_kind == "index" and nodes.positions[0].tolist() == list(range(max(lens)))
    assert nodes.modality == "text" and nodes.graph_kind == "complete"
    assert torch.isfinite(nodes.features).all()


def test_causal_adapter_gives_padded_causal_graph() -> None:
    nodes = TextAdapter(260, 8, max_length=16, causal=True)(["abc", "a"])
    g = nodes.graph()
    assert isinstance(g, CausalGraph)
    want = torch.ones(5, 5, dtype=torch.bool).tril()[None] & nodes.mask[:, None, :]
    assert torch.equal(g.materialize(), want)


def test_over_long_text_is_truncated_to_max_length() -> None:
    adapter = TextAdapter(260, 8, max_length=6)
    nodes = adapter(["abcdefghij", "ab"])
    assert nodes.num_nodes == 6 and nodes.mask.sum(1).tolist() == [6, 4]
    ids, _ = adapter.encode(["abcdefghij"])
    assert ByteTokenizer().decode(ids[0]) == "abcd"


def test_empty_strings_never_give_nan() -> None:
    torch.manual_seed(0)
    attn = GraphAttention(8, 2)
    # with special tokens: two real nodes
    nodes = TextAdapter(260, 8, max_length=8, causal=True)(["", "xyz"])
    assert nodes.mask.sum(1).tolist() == [2, 5]
    # without: a zero-length sample, all padding, still finite downstream
    bare = TextAdapter(260, 8, max_length=8, tokenizer=ByteTokenizer(add_special_tokens=False))
    nodes = bare(["", "xyz"])
    assert nodes.mask.sum(1).tolist() == [0, 3]
    out = attn(nodes.features, nodes.graph())
    assert torch.isfinite(out).all()
    assert torch.equal(masked_mean(out, nodes.mask)[0], torch.zeros(8))
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


def test_token_id_inputs_and_errors() -> None:
    adapter = TextAdapter(50, 8, max_length=4)
    nodes = adapter(torch.tensor([[5, 6, 0, 0], [7, 8, 9, 10]]))
    assert nodes.mask.tolist() == [[True, True, False, False], [True] * 4]
    explicit = torch.ones(2, 4, dtype=torch.bool)
    assert adapter(torch.zeros(2, 4, dtype=torch.long), explicit).mask.all()
    with pytest.raises(ValueError, match="N=5 tokens but max_length=4"):
        adapter(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, vocab_size=50\), got values in \[0, 50\]"):
        adapter(torch.tensor([[0, 50]]))
    with pytest.raises(TypeError, match="integer tensor of shape"):
        adapter(torch.zeros(1, 3))
    with pytest.raises(TypeError, match="no tokenizer"):
        adapter(["text"])
    with pytest.raises(TypeError, match="single str"):
        adapter("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vocab_size=260 > the adapter's vocab_size=50"):
        TextAdapter(50, 8, 4, tokenizer=ByteTokenizer())
    with pytest.raises(TypeError, match="wrap .* in TokenizerAdapter"):
        TextAdapter(50, 8, 4, tokenizer=len)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positions must be"):
        TextAdapter(50, 8, 4, positions="rotary")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_length must be > 0, got 0"):
        TextAdapter(50, 8, 0)


@pytest.mark.parametrize("causal", [False, True])
def test_batch_equals_one_by_one_through_attention(causal: bool) -> None:
    """Padding invariance: each text alone gives the same real-node outputs as in a batch."""
    torch.manual_seed(0)
    adapter = TextAdapter(260, 16, max_length=32, causal=causal)
    attn = GraphAttention(16, 4).eval()
    nodes = adapter(TEXTS)
    batch_out = attn(nodes.features, nodes.graph())
    for i, text in enumerate(TEXTS):
        single = adapter([text])
        n = single.num_nodes
        torch.testing.assert_close(nodes.features[i, :n], single.features[0])
        torch.testing.assert_close(batch_out[i, :n], attn(single.features, single.graph())[0])


def test_every_parameter_gets_a_gradient() -> None:
    adapter = TextAdapter(260, 8, max_length=16)
    nodes = adapter(["hello", "hi"])
    (nodes.features * nodes.mask[..., None]).sum().backward()
    for name, p in adapter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

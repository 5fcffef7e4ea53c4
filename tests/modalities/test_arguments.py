"""Every public entry point of ``modalities`` names a bad argument and shows its value.

Each case calls one entry point with one bad value for one argument: ``None`` and a wrongly
typed value raise :class:`TypeError`, a value of the right type but out of range raises
:class:`ValueError`, and the message starts with the argument's name and shows the value's
``repr``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
import torch

from graphattn import Graph
from modalities import (
    AudioFrameAdapter,
    ByteTokenizer,
    CNNFeatureAdapter,
    EntitySpec,
    ModalityAttention,
    ModalityFusion,
    ModalityTransformer,
    NodeSet,
    PatchAdapter,
    RLStateEncoder,
    TextAdapter,
    TokenizerAdapter,
    batch_encode,
    conv_stem,
    fuse,
    load_wav,
    masked_mean,
)

T, V = TypeError, ValueError


def ones(*shape: int) -> torch.Tensor:
    return torch.ones(*shape, dtype=torch.bool)


def nodes(modality: str = "a") -> NodeSet:
    return NodeSet(torch.zeros(1, 2, 8), ones(1, 2), modality=modality)


@cache
def text() -> TextAdapter:
    return TextAdapter(260, 8, 16)


@cache
def patches() -> PatchAdapter:
    return PatchAdapter(3, 4, 8)


@cache
def cnn() -> CNNFeatureAdapter:
    return CNNFeatureAdapter("stem", dim=4)


@cache
def audio() -> AudioFrameAdapter:
    return AudioFrameAdapter(8000, 8, n_mels=16)


@cache
def fusion() -> ModalityFusion:
    return ModalityFusion(8, ("a", "b"))


@cache
def rl(entities: bool = False) -> RLStateEncoder:
    return RLStateEncoder(EntitySpec(3) if entities else 4, 8, 1, 2, num_actions=2)


def box(*shape: int) -> Any:
    gym = pytest.importorskip("gymnasium")
    return gym.spaces.Box(-1.0, 1.0, shape=shape)


def image_box() -> Any:
    gym = pytest.importorskip("gymnasium")
    return gym.spaces.Box(0, 255, shape=(3, 8, 8), dtype="uint8")


# (entry point, argument, call with the bad value, [(bad value, error), ...])
Case = tuple[str, str, Callable[[Any], Any], list[tuple[Any, type[Exception]]]]
CASES: list[Case] = [
    # ------------------------------------------------------------------ text
    ("TextAdapter", "vocab_size", lambda v: TextAdapter(v, 8, 16), [(None, T), ("260", T), (0, V)]),
    ("TextAdapter", "dim", lambda v: TextAdapter(260, v, 16), [(None, T), (8.0, T), (-1, V)]),
    ("TextAdapter", "max_length", lambda v: TextAdapter(260, 8, v), [(None, T), ("16", T), (0, V)]),
    ("TextAdapter", "causal", lambda v: TextAdapter(260, 8, 16, causal=v), [(None, T), ("no", T)]),
    (
        "TextAdapter",
        "tokenizer",
        lambda v: TextAdapter(260, 8, 16, tokenizer=v),
        [(3, T), (len, T)],
    ),
    (
        "TextAdapter",
        "positions",
        lambda v: TextAdapter(260, 8, 16, positions=v),
        [(None, T), ("rotary", V)],
    ),
    ("TextAdapter.forward", "inputs", lambda v: text()(v), [(None, T), (3, T), ("hello", T)]),
    ("TextAdapter.forward", "inputs[1]", lambda v: text()(["a", v]), [(None, T), (b"b", T)]),
    (
        "TextAdapter.forward",
        "mask",
        lambda v: text()(torch.zeros(1, 2, dtype=torch.long), v),
        [(3, T), ([[True, True]], T)],
    ),
    ("TextAdapter.encode", "texts", lambda v: text().encode(v), [(None, T), ("abc", T)]),
    (
        "ByteTokenizer",
        "add_special_tokens",
        lambda v: ByteTokenizer(add_special_tokens=v),
        [(None, T), (1, T)],
    ),
    ("ByteTokenizer.encode", "text", lambda v: ByteTokenizer().encode(v), [(None, T), (b"a", T)]),
    (
        "ByteTokenizer.encode",
        "max_length",
        lambda v: ByteTokenizer().encode("abc", v),
        [("4", T), (2.5, T), (True, T), (1, V)],
    ),
    ("ByteTokenizer.decode", "ids", lambda v: ByteTokenizer().decode(v), [(None, T), ("ab", T)]),
    (
        "ByteTokenizer.decode",
        "ids[1]",
        lambda v: ByteTokenizer().decode([5, v]),
        [("a", T), (300, V)],
    ),
    ("ByteTokenizer.batch_encode", "texts", lambda v: ByteTokenizer().batch_encode(v), [(None, T)]),
    (
        "TokenizerAdapter",
        "tokenizer",
        lambda v: TokenizerAdapter(v, vocab_size=5),
        [(None, T), (42, T)],
    ),
    (
        "TokenizerAdapter",
        "vocab_size",
        lambda v: TokenizerAdapter(len, vocab_size=v),
        [(None, T), ("5", T), (0, V)],
    ),
    (
        "TokenizerAdapter",
        "pad_id",
        lambda v: TokenizerAdapter(len, vocab_size=5, pad_id=v),
        [(None, T), ("0", T), (-1, V), (5, V)],
    ),
    (
        "TokenizerAdapter",
        "bos_id",
        lambda v: TokenizerAdapter(len, vocab_size=5, bos_id=v),
        [(1.5, T), (7, V)],
    ),
    (
        "TokenizerAdapter",
        "eos_id",
        lambda v: TokenizerAdapter(len, vocab_size=5, eos_id=v),
        [("2", T), (-1, V)],
    ),
    (
        "TokenizerAdapter.encode",
        "text",
        lambda v: TokenizerAdapter(len, vocab_size=5).encode(v),
        [(None, T), (3, T)],
    ),
    ("batch_encode", "tokenizer", lambda v: batch_encode(v, ["a"]), [(None, T), (len, T)]),
    (
        "batch_encode",
        "texts",
        lambda v: batch_encode(ByteTokenizer(), v),
        [(None, T), ("abc", T), (3, T)],
    ),
    ("batch_encode", "texts[0]", lambda v: batch_encode(ByteTokenizer(), [v]), [(None, T)]),
    (
        "batch_encode",
        "max_length",
        lambda v: batch_encode(ByteTokenizer(), ["a"], v),
        [("4", T), (0, V)],
    ),
    (
        "batch_encode",
        "pad_to_max",
        lambda v: batch_encode(ByteTokenizer(), ["a"], 8, pad_to_max=v),
        [(None, T), ("yes", T)],
    ),
    # ------------------------------------------------------------------ image
    (
        "PatchAdapter",
        "in_channels",
        lambda v: PatchAdapter(v, 4, 8),
        [(None, T), (3.0, T), (0, V)],
    ),
    ("PatchAdapter", "patch_size", lambda v: PatchAdapter(3, v, 8), [(None, T), ("4", T), (0, V)]),
    ("PatchAdapter", "patch_size[1]", lambda v: PatchAdapter(3, (4, v), 8), [(None, T)]),
    ("PatchAdapter", "dim", lambda v: PatchAdapter(3, 4, v), [(None, T), ("8", T), (0, V)]),
    ("PatchAdapter", "pad", lambda v: PatchAdapter(3, 4, 8, pad=v), [(None, T)]),
    ("PatchAdapter", "convert_uint8", lambda v: PatchAdapter(3, 4, 8, convert_uint8=v), [(1, T)]),
    (
        "PatchAdapter",
        "grid_radius",
        lambda v: PatchAdapter(3, 4, 8, grid_radius=v),
        [("1", T), (0, V)],
    ),
    (
        "PatchAdapter",
        "pos_embed",
        lambda v: PatchAdapter(3, 4, 8, pos_embed=v),
        [(None, T), ("learned", V)],
    ),
    ("PatchAdapter.forward", "images", lambda v: patches()(v), [(None, T), ([[0.0]], T)]),
    ("conv_stem", "in_channels", lambda v: conv_stem(v), [(None, T), ("3", T), (0, V)]),
    ("conv_stem", "width", lambda v: conv_stem(3, v), [(None, T), (0, V)]),
    ("CNNFeatureAdapter", "backbone", lambda v: CNNFeatureAdapter(v, dim=4), [(None, T), (3, T)]),
    ("CNNFeatureAdapter", "layer", lambda v: CNNFeatureAdapter("resnet18", v, dim=4), [(3, T)]),
    ("CNNFeatureAdapter", "dim", lambda v: CNNFeatureAdapter("stem", dim=v), [(None, T)]),
    (
        "CNNFeatureAdapter",
        "in_channels",
        lambda v: CNNFeatureAdapter("stem", dim=4, in_channels=v),
        [(None, T), ("3", T), (0, V)],
    ),
    ("CNNFeatureAdapter.forward", "images", lambda v: cnn()(v), [(None, T)]),
    # ------------------------------------------------------------------ audio
    (
        "AudioFrameAdapter",
        "sample_rate",
        lambda v: AudioFrameAdapter(v, 8),
        [(None, T), ("8000", T), (0, V), (8000.5, V), (math.inf, V)],
    ),
    ("AudioFrameAdapter", "dim", lambda v: AudioFrameAdapter(8000, v), [(None, T)]),
    (
        "AudioFrameAdapter",
        "target_rate",
        lambda v: AudioFrameAdapter(8000, 8, target_rate=v),
        [("16000", T), (-8000, V)],
    ),
    (
        "AudioFrameAdapter",
        "n_mels",
        lambda v: AudioFrameAdapter(8000, 8, n_mels=v),
        [(None, T), (0, V)],
    ),
    ("AudioFrameAdapter", "n_fft", lambda v: AudioFrameAdapter(8000, 8, n_fft=v), [(None, T)]),
    (
        "AudioFrameAdapter",
        "hop_length",
        lambda v: AudioFrameAdapter(8000, 8, hop_length=v),
        [(None, T)],
    ),
    (
        "AudioFrameAdapter",
        "patch",
        lambda v: AudioFrameAdapter(8000, 8, patch=v),
        [("a", T), ((4,), V)],
    ),
    (
        "AudioFrameAdapter",
        "eps",
        lambda v: AudioFrameAdapter(8000, 8, eps=v),
        [(None, T), ("tiny", T), (0.0, V), (math.nan, V)],
    ),
    ("AudioFrameAdapter.forward", "waveform", lambda v: audio()(v), [(None, T), ([[0.0]], T)]),
    (
        "AudioFrameAdapter.forward",
        "lengths",
        lambda v: audio()(torch.zeros(1, 1000), lengths=v),
        [("a", T)],
    ),
    ("AudioFrameAdapter.log_mel", "waveform", lambda v: audio().log_mel(v), [(None, T)]),
    ("load_wav", "path", load_wav, [(None, T), (3.5, T), (b"x.wav", T)]),
    # ------------------------------------------------------------------ nodes
    (
        "NodeSet",
        "features",
        lambda v: NodeSet(v, ones(1, 2)),
        [(None, T), ([[[0.0]]], T)],
    ),
    (
        "NodeSet",
        "mask",
        lambda v: NodeSet(torch.zeros(1, 2, 8), v),
        [(None, T), ([[True, True]], T)],
    ),
    (
        "NodeSet",
        "modality",
        lambda v: NodeSet(torch.zeros(1, 2, 8), ones(1, 2), modality=v),
        [(None, T), ("", V)],
    ),
    (
        "NodeSet",
        "grid_shape",
        lambda v: NodeSet(torch.zeros(1, 2, 8), ones(1, 2), grid_shape=v),
        [(2, T), ((2,), V)],
    ),
    (
        "NodeSet",
        "graph_kind",
        lambda v: NodeSet(torch.zeros(1, 2, 8), ones(1, 2), graph_kind=v),
        [(None, T), ("star", V)],
    ),
    (
        "NodeSet",
        "graph_radius",
        lambda v: NodeSet(torch.zeros(1, 2, 8), ones(1, 2), graph_radius=v),
        [("1", T), (-1, V)],
    ),
    (
        "NodeSet",
        "modality_names",
        lambda v: NodeSet(torch.zeros(1, 2, 8), ones(1, 2), modality_names=v),
        [(3, T), ("ab", T)],
    ),
    (
        "NodeSet",
        "modality_ids",
        lambda v: NodeSet(torch.zeros(1, 2, 8), ones(1, 2), modality_ids=v),
        [([0, 0], T)],
    ),
    ("NodeSet.concat", "nodesets[1]", lambda v: NodeSet.concat(nodes(), v), [(None, T), (3, T)]),
    ("NodeSet.to", "device", lambda v: nodes().to(v), [(None, T), (3.5, T)]),
    ("NodeSet.with_features", "features", lambda v: nodes().with_features(v), [(None, T)]),
    ("NodeSet.graph", "kind", lambda v: nodes().graph(v), [(3, T), ("star", V)]),
    ("NodeSet.graph", "radius", lambda v: nodes().graph("window", radius=v), [("1", T), (-1, V)]),
    # ------------------------------------------------------------------ fusion
    ("fuse", "nodesets", fuse, [(None, T), (3, T)]),
    ("fuse", "nodesets[1]", lambda v: fuse([nodes(), v]), [(None, T), ("b", T)]),
    ("fuse", "mode", lambda v: fuse([nodes()], mode=v), [(None, T), ("late", V)]),
    ("fuse", "intra", lambda v: fuse([nodes()], intra=v), [(None, T), ("none", V)]),
    ("fuse", "symmetric", lambda v: fuse([nodes()], symmetric=v), [(None, T)]),
    (
        "fuse",
        "cross_links",
        lambda v: fuse([nodes("a"), nodes("b")], mode="intra+cross", cross_links=v),
        [("ab", T), (3, T)],
    ),
    (
        "fuse",
        "cross_links[0]",
        lambda v: fuse([nodes("a"), nodes("b")], mode="intra+cross", cross_links=[v]),
        [("ab", T), (("a",), V)],
    ),
    (
        "fuse",
        "num_latents",
        lambda v: fuse([nodes()], mode="bottleneck", num_latents=v),
        [("2", T), (0, V)],
    ),
    ("fuse", "latents", lambda v: fuse([nodes()], mode="bottleneck", latents=v), [(3, T)]),
    ("ModalityFusion", "dim", lambda v: ModalityFusion(v, ("a",)), [(None, T), (0, V)]),
    (
        "ModalityFusion",
        "modality_names",
        lambda v: ModalityFusion(8, v),
        [(None, T), ("text", T)],
    ),
    (
        "ModalityFusion",
        "modality_names[1]",
        lambda v: ModalityFusion(8, ("a", v)),
        [(None, T), ("", V)],
    ),
    (
        "ModalityFusion",
        "num_latents",
        lambda v: ModalityFusion(8, ("a",), v),
        [(None, T), (-1, V)],
    ),
    ("ModalityFusion.forward", "nodesets", lambda v: fusion()(v), [(None, T)]),
    ("ModalityFusion.forward", "mode", lambda v: fusion()([nodes()], mode=v), [(3, T), ("x", V)]),
    (
        "FusedGraph.pair_mask",
        "dst",
        lambda v: fuse([nodes()]).pair_mask(v, "a"),
        [(None, T), ("audio", V)],
    ),
    (
        "FusedGraph.modality_summary",
        "attention",
        lambda v: fuse([nodes()]).modality_summary(v),
        [(None, T)],
    ),
    ("ModalityAttention", "num_types", lambda v: ModalityAttention(8, 2, v), [(None, T), (0, V)]),
    (
        "ModalityAttention",
        "dropout",
        lambda v: ModalityAttention(8, 2, 2, dropout=v),
        [(None, T), (1.5, V)],
    ),
    (
        "ModalityAttention.forward",
        "node_type",
        lambda v: ModalityAttention(8, 2, 1)(nodes().features, Graph.complete(2), v),
        [(None, T)],
    ),
    (
        "ModalityTransformer",
        "num_layers",
        lambda v: ModalityTransformer(v, 8, 2, ("a",)),
        [(None, T), (0, V)],
    ),
    (
        "ModalityTransformer",
        "modality_names",
        lambda v: ModalityTransformer(1, 8, 2, v),
        [(None, T), (("a", "a"), V)],
    ),
    (
        "ModalityTransformer",
        "activation",
        lambda v: ModalityTransformer(1, 8, 2, ("a",), activation=v),
        [(3, T), ("tanh", V)],
    ),
    (
        "ModalityTransformer.forward",
        "x",
        lambda v: ModalityTransformer(1, 8, 2, ("a",))(v, fuse([nodes()])),
        [(None, T)],
    ),
    (
        "ModalityTransformer.forward",
        "fused",
        lambda v: ModalityTransformer(1, 8, 2, ("a",))(nodes().features, v),
        [(None, T)],
    ),
    # ------------------------------------------------------------------ rl
    ("EntitySpec", "feature_dim", EntitySpec, [(None, T), ("3", T), (0, V)]),
    ("EntitySpec", "max_entities", lambda v: EntitySpec(3, v), [("5", T), (0, V)]),
    (
        "RLStateEncoder",
        "obs",
        lambda v: RLStateEncoder(v, 8, 1, 2),
        [(None, T), (4.0, T), (0, V)],
    ),
    ("RLStateEncoder", "dim", lambda v: RLStateEncoder(4, v, 1, 2), [(None, T)]),
    ("RLStateEncoder", "num_layers", lambda v: RLStateEncoder(4, 8, v, 2), [(None, T), (0, V)]),
    ("RLStateEncoder", "num_heads", lambda v: RLStateEncoder(4, 8, 1, v), [(None, T), (3, V)]),
    (
        "RLStateEncoder",
        "num_actions",
        lambda v: RLStateEncoder(4, 8, 1, 2, num_actions=v),
        [("2", T), (0, V)],
    ),
    (
        "RLStateEncoder",
        "action_dim",
        lambda v: RLStateEncoder(4, 8, 1, 2, action_dim=v),
        [(2.5, T)],
    ),
    ("RLStateEncoder", "groups", lambda v: RLStateEncoder(4, 8, 1, 2, groups=v), [(3, T)]),
    (
        "RLStateEncoder",
        "groups[1][0]",
        lambda v: RLStateEncoder(4, 8, 1, 2, groups=[[0, 1], [v, 3]]),
        [("2", T), (-2, V)],
    ),
    (
        "RLStateEncoder",
        "dim_feedforward",
        lambda v: RLStateEncoder(4, 8, 1, 2, dim_feedforward=v),
        [("32", T), (0, V)],
    ),
    (
        "RLStateEncoder",
        "dropout",
        lambda v: RLStateEncoder(4, 8, 1, 2, dropout=v),
        [(None, T), (1.5, V)],
    ),
    (
        "RLStateEncoder",
        "backend",
        lambda v: RLStateEncoder(4, 8, 1, 2, backend=v),
        [(None, T), ("gpu", V)],
    ),
    ("RLStateEncoder.forward", "obs", lambda v: rl()(v), [(None, T), ("abc", T)]),
    (
        "RLStateEncoder.forward",
        "mask",
        lambda v: rl(entities=True)(torch.zeros(1, 2, 3), v),
        [(3, T), ([[True, True]], T)],
    ),
    (
        "RLStateEncoder.from_space",
        "observation_space",
        RLStateEncoder.from_space,
        [(None, T), (4, T)],
    ),
    (
        "RLStateEncoder.from_space",
        "action_space",
        lambda v: RLStateEncoder.from_space(box(4), v),
        [("2", T)],
    ),
    (
        "RLStateEncoder.from_space",
        "patch_size",
        lambda v: RLStateEncoder.from_space(image_box(), dim=8, num_heads=2, patch_size=v),
        [("2", T), (0, V)],
    ),
    # ------------------------------------------------------------------ pooling
    ("masked_mean", "x", lambda v: masked_mean(v, ones(1, 2)), [(None, T), ([[[1.0]]], T)]),
    (
        "masked_mean",
        "mask",
        lambda v: masked_mean(torch.zeros(1, 2, 8), v),
        [(None, T), ([[True, True]], T)],
    ),
]


def _params() -> list[Any]:
    params = []
    for entry, name, call, bad in CASES:
        for value, error in bad:
            label = f"{entry}-{name}={value!r}-{error.__name__}"
            params.append(pytest.param(call, name, value, error, id=label))
    return params


@pytest.mark.parametrize(("call", "name", "value", "error"), _params())
def test_bad_argument_names_itself_and_its_value(
    call: Callable[[Any], Any], name: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(Exception) as info:
        call(value)
    message = str(info.value)
    assert type(info.value) is error, f"{type(info.value).__name__}: {message}"
    assert re.match(rf"{re.escape(name)}(?![\w\[])", message), message  # it leads with it
    assert repr(value) in message, message


def test_long_values_are_shortened() -> None:
    """Reprs are cut to about 60 characters; tensors are shown by shape and dtype."""
    for value, shown in [
        ("x" * 1000, "xxx...xxx"),
        (list(range(1000)), "[0, 1, 2, 3, 4, 5, ...]"),
        (torch.zeros(1000, 2), "tensor of shape (1000, 2) (torch.float32)"),
    ]:
        with pytest.raises(TypeError) as info:
            TextAdapter(value, 8, 16)
        message = str(info.value)
        assert message.startswith("vocab_size must be an int, got ") and shown in message
        assert len(message) < 120, message

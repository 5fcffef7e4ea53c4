"""RLStateEncoder: vector and entity observations, gymnasium spaces, heads, invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalities import EntitySpec, RLOutput, RLStateEncoder

gym = pytest.importorskip("gymnasium", reason="gymnasium is in the dev/examples extras")


def small(obs, **kw) -> RLStateEncoder:
    torch.manual_seed(0)
    kw.setdefault("num_actions", 3)
    return RLStateEncoder(obs, 16, 2, 2, **kw).eval()


def test_vector_observation_one_node_per_feature() -> None:
    enc = small(5)
    x, mask = enc.embed(torch.randn(4, 5))
    assert x.shape == (4, 5, 16) and mask.all()
    out = enc(torch.randn(4, 5))
    assert isinstance(out, RLOutput)
    assert out.embedding.shape == (4, 16) and out.logits.shape == (4, 3)
    assert out.value.shape == (4,) and out.nodes.shape == (4, 5, 16)
    assert out.action_mean is None and out.attentions is None


def test_groups_make_one_node_per_group() -> None:
    enc = small(5, groups=[[0, 1], [2], [3, 4]])
    x, _ = enc.embed(torch.randn(2, 5))
    assert x.shape == (2, 3, 16)
    # node 0 is W_0 [x0, x1] + e_0: an independent reference
    obs = torch.randn(2, 5)
    ref = obs[:, :2] @ enc.value_weight[0, :2] + enc.identity[0]
    torch.testing.assert_close(enc.embed(obs)[0][:, 0], ref)
    ref2 = obs[:, 2:3] @ enc.value_weight[1, :1] + enc.identity[1]
    torch.testing.assert_close(enc.embed(obs)[0][:, 1], ref2)


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        ([[0, 1], [1, 2, 3]], r"must not share features; \[1\]"),
        ([[0, 1], [2]], r"must cover every feature; \[3\]"),
        ([[0, 1], [2, 3, 7]], r"indices \[7\] outside \[0, obs_dim=4\)"),
        ([[0, 1, 2, 3], []], "non-empty"),
    ],
)
def test_bad_groups(groups, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RLStateEncoder(4, 8, 1, 2, num_actions=2, groups=groups)


def test_constructor_and_input_errors() -> None:
    with pytest.raises(ValueError, match="not both; got num_actions=2, action_dim=3"):
        RLStateEncoder(4, 8, 1, 2, num_actions=2, action_dim=3)
    with pytest.raises(ValueError, match="groups apply to vector observations"):
        RLStateEncoder(EntitySpec(3), 8, 1, 2, groups=[[0]])
    with pytest.raises(ValueError, match="num_layers must be > 0, got 0"):
        RLStateEncoder(4, 8, 0, 2)
    enc = small(4)
    with pytest.raises(ValueError, match=r"\(B, obs_dim=4\), got \(4,\) \(add a batch"):
        enc.embed(torch.randn(4))  # forward takes one observation; embed wants a batch
    with pytest.raises(ValueError, match=r"\(B, obs_dim=4\), got \(2, 3, 4\)"):
        enc(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="mask applies to entity observations only"):
        enc(torch.randn(1, 4), torch.ones(1, 4, dtype=torch.bool))
    ent = small(EntitySpec(3, max_entities=5))
    with pytest.raises(ValueError, match=r"\(B, N, F=3\), got \(2, 4, 2\)"):
        ent(torch.randn(2, 4, 2))
    with pytest.raises(ValueError, match="N=6 entities > max_entities=5"):
        ent(torch.randn(1, 6, 3))
    with pytest.raises(TypeError, match=r"mask must be a bool tensor of shape \(B, N\) = \(2, 4\)"):
        ent(torch.randn(2, 4, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="no actor head"):
        RLStateEncoder(4, 8, 1, 2)(torch.randn(1, 4)).distribution()


def test_entities_permutation_and_padding_invariance() -> None:
    enc = small(EntitySpec(3))
    obs = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, True, False], [True] * 4])
    out = enc(obs, mask)
    # permuting entities changes nothing pooled
    perm = torch.tensor([2, 0, 3, 1])
    out_p = enc(obs[:, perm], mask[:, perm])
    torch.testing.assert_close(out_p.embedding, out.embedding, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_p.logits, out.logits, atol=1e-5, rtol=1e-5)
    # adding padded garbage entities changes nothing; a batch equals its samples
    padded = torch.cat([obs, torch.randn(2, 3, 3) * 100], dim=1)
    mask_p = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    out_pad = enc(padded, mask_p)
    torch.testing.assert_close(out_pad.value, out.value, atol=1e-5, rtol=1e-5)
    single = enc(obs[:1, :3])
    torch.testing.assert_close(single.embedding[0], out.embedding[0], atol=1e-5, rtol=1e-5)


def test_entity_sample_without_entities_is_finite() -> None:
    enc = small(EntitySpec(3))
    out = enc(torch.randn(2, 3, 3), torch.tensor([[False] * 3, [True] * 3]))
    assert torch.isfinite(out.value).all() and torch.isfinite(out.logits).all()


def test_vector_batch_equals_one_by_one() -> None:
    enc = small(4)
    obs = torch.randn(3, 4)
    out = enc(obs)
    for i in range(3):
        one = enc(obs[i : i + 1])
        torch.testing.assert_close(one.logits[0], out.logits[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(one.value[0], out.value[i], atol=1e-5, rtol=1e-5)


def test_from_cartpole_space_runs_and_returns_attention() -> None:
    env = gym.make("CartPole-v1")
    try:
        obs, _ = env.reset(seed=0)
        torch.manual_seed(0)
        enc = RLStateEncoder.from_space(
            env.observation_space, env.action_space, dim=16, num_layers=2, num_heads=2
        )
        assert enc.obs_dim == 4 and enc.num_actions == 2
        out = enc(obs[None], need_weights=True)  # numpy float32 observation
        action = out.distribution().sample()
        env.step(int(action))
    finally:
        env.close()
    assert out.logits.shape == (1, 2) and len(out.attentions) == 2
    dense = out.attentions[0].to_dense()  # (B, H, N, N): 4 feature nodes
    assert dense.shape == (1, 2, 4, 4)
    torch.testing.assert_close(dense.sum(-1), torch.ones(1, 2, 4))


def test_from_space_continuous_and_entities() -> None:
    spaces = gym.spaces
    obs_space = spaces.Box(-1.0, 1.0, shape=(6, 3))
    act_space = spaces.Box(-1.0, 1.0, shape=(2,))
    enc = RLStateEncoder.from_space(obs_space, act_space, dim=8, num_layers=1, num_heads=2)
    assert enc.entity_spec == EntitySpec(3, max_entities=6) and enc.action_dim == 2
    out = enc(torch.as_tensor(obs_space.sample())[None])
    assert out.action_mean.shape == (1, 2) and out.logits is None
    assert out.distribution().sample().shape == (1, 2)
    with pytest.raises(TypeError, match="Discrete or 1-D Box"):
        RLStateEncoder.from_space(spaces.Box(0, 1, shape=(4,)), spaces.MultiDiscrete([2, 2]))


@pytest.mark.parametrize("kind", ["discrete", "continuous", "entities"])
def test_every_parameter_gets_a_gradient(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "entities":
        enc = RLStateEncoder(EntitySpec(3), 8, 1, 2, num_actions=2)
        obs = torch.randn(2, 4, 3)
    else:
        actions = {"num_actions": 2} if kind == "discrete" else {"action_dim": 2}
        enc = RLStateEncoder(4, 8, 1, 2, groups=[[0, 1], [2, 3]], **actions)
        obs = torch.randn(2, 4)
    out = enc(obs)
    dist = out.distribution()
    loss = -dist.log_prob(dist.sample()).mean() + out.value.square().mean()
    loss.backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_an_unbatched_observation_gives_unbatched_outputs():
    """``env.reset()[0]`` goes in as it is, as one sample."""
    torch.manual_seed(0)
    vec = RLStateEncoder(4, 16, 1, 2, num_actions=2).eval()
    obs = np.array([0.1, -0.2, 0.03, 0.4], dtype=np.float32)  # CartPole's reset()[0]
    one, batch = vec(obs), vec(obs[None])
    assert one.embedding.shape == (16,) and one.value.shape == () and one.logits.shape == (2,)
    torch.testing.assert_close(one.logits, batch.logits[0])
    assert one.distribution().sample().shape == ()
    ent = RLStateEncoder(EntitySpec(feature_dim=3), 16, 1, 2).eval()
    x, mask = torch.randn(5, 3), torch.tensor([True, True, True, False, False])
    one = ent(x, mask)
    torch.testing.assert_close(one.embedding, ent(x[None], mask[None]).embedding[0])
    assert one.nodes.shape == (5, 16)


# ---------------------------------------------------------------- any gymnasium space


def _spaces() -> dict[str, tuple[object, int]]:
    """Each space kind with the node count the rule of ``from_space`` gives it."""
    s = gym.spaces
    u8 = np.uint8
    inner = s.Dict({"goal": s.Box(-1.0, 1.0, (2,)), "door": s.Discrete(2)})
    return {
        "box-scalar": (s.Box(-1.0, 1.0, ()), 1),
        "box-vector": (s.Box(-1.0, 1.0, (3,)), 3),  # one per scalar
        "box-entities": (s.Box(-1.0, 1.0, (4, 2)), 4),  # one per row
        "box-rank3": (s.Box(-1.0, 1.0, (2, 3, 5)), 6),  # one per leading cell
        "box-rank4": (s.Box(-1.0, 1.0, (2, 2, 2, 3)), 8),
        "image-chw": (s.Box(0, 255, (3, 16, 16), u8), 64),  # patch 2: 8 x 8
        "image-hwc": (s.Box(0, 255, (7, 7, 3), u8), 49),  # MiniGrid's view, patch 1
        "image-grey": (s.Box(0, 255, (1, 9, 6), u8), 15),  # patch 2, 9 padded to 10: 5 x 3
        "image-frames": (s.Box(0, 255, (4, 8, 8), u8), 4 * 64),  # 4 grey frames of 8 x 8
        "discrete": (s.Discrete(5, start=-2), 1),  # one embedded node
        "multidiscrete": (s.MultiDiscrete([[2, 3], [4, 5]], start=[[1, 0], [0, 2]]), 4),
        "multibinary": (s.MultiBinary((2, 3)), 6),  # one per bit
        "dict": (s.Dict({"pos": s.Box(-1.0, 1.0, (2,)), "key": s.Discrete(3)}), 3),
        "tuple": (s.Tuple((s.MultiBinary(2), s.Box(-1.0, 1.0, (3, 2)))), 5),
        "nested": (s.Tuple((inner, s.Dict({"t": s.Tuple((s.Discrete(4), inner))}))), 7),
    }


SPACES = _spaces()


def stack(space: object, samples: list) -> object:
    """A batch of ``samples`` shaped like ``space`` (dicts of arrays, tuples of arrays)."""
    if isinstance(space, gym.spaces.Dict):
        return {k: stack(sub, [x[k] for x in samples]) for k, sub in space.spaces.items()}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(stack(sub, [x[i] for x in samples]) for i, sub in enumerate(space.spaces))
    return np.stack([np.asarray(x) for x in samples])


def from_space(space: object, **kw) -> RLStateEncoder:
    torch.manual_seed(0)
    kw.setdefault("dim", 8)
    return RLStateEncoder.from_space(
        space, gym.spaces.Discrete(2), num_layers=1, num_heads=2, **kw
    ).eval()


@pytest.mark.parametrize("kind", list(SPACES))
def test_every_space_kind_batched_and_unbatched(kind: str) -> None:
    space, num_nodes = SPACES[kind]
    enc = from_space(space)
    space.seed(0)
    samples = [space.sample() for _ in range(3)]
    batch = enc(stack(space, samples))
    assert batch.logits.shape == (3, 2) and batch.value.shape == (3,)
    assert batch.nodes.shape == (3, num_nodes, 8) and torch.isfinite(batch.nodes).all()
    for i, sample in enumerate(samples):  # as env.reset() gives it: unbatched outputs
        one = enc(sample)
        assert one.logits.shape == (2,) and one.value.shape == () and one.embedding.shape == (8,)
        assert one.nodes.shape == (num_nodes, 8)
        torch.testing.assert_close(one.logits, batch.logits[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(one.value, batch.value[i], atol=1e-5, rtol=1e-5)
    features = enc.forward_features(stack(space, samples))
    torch.testing.assert_close(features, batch.embedding)
    assert enc.forward_features(samples[0]).shape == (8,)


def test_vector_and_entity_boxes_keep_their_modes() -> None:
    """A 1-D Box stays a vector (``groups`` apply) and a 2-D Box entities (``mask``)."""
    s = gym.spaces
    vec = from_space(s.Box(-1.0, 1.0, (4,)), groups=[[0, 1], [2, 3]])
    assert vec.obs_dim == 4 and vec.space_nodes is None
    assert vec.embed(torch.ones(1, 4))[0].shape == (1, 2, 8)
    ent = from_space(s.Box(-1.0, 1.0, (5, 3)))
    assert ent.entity_spec == EntitySpec(3, max_entities=5) and ent.observation_space is None
    box3 = from_space(s.Box(-1.0, 1.0, (2, 3, 4)))
    assert box3.observation_space is not None and "space=Box, nodes=6" in repr(box3)


def test_discrete_and_binary_nodes_against_a_reference() -> None:
    """Each component's node is its row of the table (values shifted by ``start``); each bit
    ``b_i`` gives ``b_i w_i + e_i``; a Tuple adds the type embedding of each leaf."""
    s = gym.spaces
    md = s.MultiDiscrete([[2, 3], [4, 5]], start=[[1, 0], [0, 2]])
    enc = from_space(s.Tuple((md, s.MultiBinary(3))))
    index, bits = enc.space_nodes.leaves
    types = enc.space_nodes.type_embedding  # (2, D)
    values = np.array([[[2, 0], [3, 6]]])  # (B=1, 2, 2), within start .. start + nvec - 1
    b = np.array([[1, 0, 1]])
    nodes, _ = enc.embed((values, b))
    rows = torch.tensor([0 + 2 - 1, 2 + 0 - 0, 5 + 3 - 0, 9 + 6 - 2])  # offset + value - start
    torch.testing.assert_close(nodes[0, :4], index.table.weight[rows] + types[0])
    ref = torch.tensor([1.0, 0.0, 1.0])[:, None] * bits.weight + bits.identity + types[1]
    torch.testing.assert_close(nodes[0, 4:], ref)


def test_images_patch_sizes_layouts_and_scaling() -> None:
    s = gym.spaces
    atari = from_space(s.Box(0, 255, (84, 84, 4), np.uint8), dim=16)  # stacked frames, HWC
    assert atari.space_nodes.num_nodes == 4 * 64  # patch 11, padded to 88: 8 x 8 per frame
    coarse = from_space(s.Box(0, 255, (3, 32, 32), np.uint8), patch_size=16)
    assert coarse.space_nodes.num_nodes == 4
    # channels first or last: the same pixels give the same nodes
    chw = from_space(s.Box(0, 255, (3, 6, 6), np.uint8))
    hwc = from_space(s.Box(0, 255, (6, 6, 3), np.uint8))
    hwc.load_state_dict(chw.state_dict())
    img = torch.randint(0, 256, (2, 3, 6, 6), dtype=torch.uint8)
    torch.testing.assert_close(hwc.embed(img.permute(0, 2, 3, 1))[0], chw.embed(img)[0])
    # uint8 pixels are scaled to [0, 1]; floats are taken as already scaled (SB3 gives those)
    torch.testing.assert_close(chw.embed(img)[0], chw.embed(img.float() / 255)[0])


def test_dict_and_tuple_nesting() -> None:
    s = gym.spaces
    space = s.Dict({"a": s.Box(-1.0, 1.0, (2,)), "b": s.Box(-1.0, 1.0, (2,))})
    enc = from_space(space)
    enc.space_nodes.leaves[1].load_state_dict(enc.space_nodes.leaves[0].state_dict())
    x = np.array([[0.3, -0.7]], dtype=np.float32)
    nodes, _ = enc.embed({"a": x, "b": x})  # (1, 4, D): a's two nodes, then b's
    # same weights, same values: only the type embeddings tell a from b
    type_a, type_b = enc.space_nodes.type_embedding
    torch.testing.assert_close(nodes[0, 2:] - nodes[0, :2], (type_b - type_a).expand(2, -1))
    # key order does not matter; tuples may be lists; numbers, lists and tensors all work
    torch.testing.assert_close(enc.embed({"b": x, "a": x})[0], nodes)
    nested = from_space(SPACES["nested"][0])
    obs = [
        {"goal": [0.1, 0.2], "door": 1},
        {"t": (3, {"goal": torch.tensor([0.5, 0.0]), "door": 0})},
    ]
    out = nested(obs, need_weights=True)
    assert out.attentions[0].to_dense().shape == (1, 2, 7, 7)  # (B, H, N, N): batch of one
    assert out.nodes.shape == (7, 8)  # inner: 1 + 2, then 1 + inner
    assert nested.space_nodes.names == [
        "obs[0]['door']",
        "obs[0]['goal']",
        "obs[1]['t'][0]",
        "obs[1]['t'][1]['door']",
        "obs[1]['t'][1]['goal']",
    ]  # gymnasium sorts Dict keys


def test_bad_spaces_are_named() -> None:
    s = gym.spaces
    with pytest.raises(TypeError, match=r"^observation_space must be a gymnasium Box, .*Text\("):
        from_space(s.Text(8))
    nested = s.Dict({"a": s.Tuple((s.Discrete(2), s.Sequence(s.Discrete(3))))})
    with pytest.raises(TypeError, match=r"^observation_space\['a'\]\[1\] must be .*Sequence\("):
        from_space(nested)
    with pytest.raises(TypeError, match="observation_space must be a gymnasium space"):
        from_space(np.zeros(3))
    with pytest.raises(ValueError, match=r"observation_space\['x'\] must be a Dict or Tuple of"):
        from_space(s.Dict({"x": s.Tuple(())}))
    with pytest.raises(ValueError, match=r"observation_space\[1\] has no elements \(shape \(0,"):
        from_space(s.Tuple((s.Discrete(2), s.Box(-1.0, 1.0, (0, 3)))))
    image = s.Box(0, 255, (3, 8, 8), np.uint8)
    with pytest.raises(
        ValueError, match=r"dim must be divisible by 4 for the image obs \(2-D sin-cos .*got 6"
    ):
        from_space(image, dim=6)
    with pytest.raises(ValueError, match="patch_size applies to image observations"):
        from_space(s.Discrete(3), patch_size=2)
    with pytest.raises(ValueError, match="patch_size applies to image observations of a gym"):
        RLStateEncoder(4, 8, 1, 2, patch_size=2)
    with pytest.raises(ValueError, match=r"groups apply to vector observations, not to obs=Disc"):
        RLStateEncoder(s.Discrete(3), 8, 1, 2, groups=[[0]])


def test_bad_observations_of_a_space_are_named() -> None:
    s = gym.spaces
    enc = from_space(
        s.Dict(
            {
                "pos": s.Box(-1.0, 1.0, (2,)),
                "key": s.Discrete(3, start=1),
                "t": s.Tuple((s.MultiDiscrete([2, 2]),)),
            }
        )
    )
    good = {"pos": np.zeros((2, 2)), "key": np.array([1, 3]), "t": (np.zeros((2, 2)),)}
    assert enc(good).logits.shape == (2, 2)
    with pytest.raises(
        ValueError, match=r"obs must have the keys \['key', 'pos', 't'\], got \['pos'\]"
    ):
        enc({"pos": np.zeros((2, 2))})
    with pytest.raises(TypeError, match=r"obs must be a dict with the keys .* got array of shape"):
        enc(np.zeros((2, 3)))
    with pytest.raises(
        ValueError, match=r"obs\['pos'\] must have shape \(B=2, 2\) for Box.*got \(2, 3\)"
    ):
        enc({**good, "pos": np.zeros((2, 3))})
    with pytest.raises(
        ValueError, match=r"obs\['key'\] holds \[0, 4\], outside Discrete\(3, start=1\)"
    ):
        enc({**good, "key": np.array([0, 4])})
    with pytest.raises(ValueError, match=r"obs\['key'\] must hold integers for Discrete"):
        enc({**good, "key": np.array([1.5, 2.0])})
    with pytest.raises(
        ValueError, match=r"obs\['t'\] must have 1 entries \(a Tuple space\), got 2"
    ):
        enc({**good, "t": (np.zeros((2, 2)), 1)})
    with pytest.raises(TypeError, match=r"obs\['t'\]\[0\] must be a tensor or array of numbers"):
        enc({**good, "t": (["a", "b"],)})
    with pytest.raises(ValueError, match="mask applies to EntitySpec observations only"):
        enc(good, torch.ones(2, 4, dtype=torch.bool))


def test_every_parameter_of_a_space_gets_a_gradient() -> None:
    s = gym.spaces
    space = s.Dict(
        {
            "img": s.Box(0, 255, (4, 6, 6), np.uint8),
            "rgb": s.Box(0, 255, (6, 6, 3), np.uint8),
            "cells": s.Box(-1.0, 1.0, (2, 2, 3)),
            "ents": s.Box(-1.0, 1.0, (3, 2)),
            "vec": s.Box(-1.0, 1.0, (2,)),
            "md": s.MultiDiscrete([2, 3]),
            "t": s.Tuple((s.Discrete(2), s.MultiBinary(3))),
        }
    )
    torch.manual_seed(0)
    enc = RLStateEncoder.from_space(space, s.Box(-1.0, 1.0, (2,)), dim=8, num_layers=1, num_heads=2)
    space.seed(0)
    out = enc(stack(space, [space.sample() for _ in range(4)]))
    dist = out.distribution()
    (-dist.log_prob(dist.sample()).mean() + out.value.square().mean()).backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name

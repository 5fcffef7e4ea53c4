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
    with pytest.raises(TypeError, match="must be a gymnasium Box"):
        RLStateEncoder.from_space(spaces.Discrete(3), act_space)
    with pytest.raises(ValueError, match=r"1-D \(vector\) or 2-D \(entities\), got shape"):
        RLStateEncoder.from_space(spaces.Box(0, 1, shape=(3, 8, 8)), act_space)
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

"""Images: ViT patches and CNN feature-map cells as grid nodes."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import torchvision
from torch import nn

from graphattn import Graph, GraphAttention, GridGraph
from modalities import CNNFeatureAdapter, PatchAdapter


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 7])
@pytest.mark.parametrize(("height", "width", "patch"), [(8, 12, 4), (6, 10, (3, 5))])
def test_patch_shapes_positions_and_grid(channels: int, height: int, width: int, patch) -> None:
    adapter = PatchAdapter(channels, patch, 16)
    nodes = adapter(torch.randn(2, channels, height, width))
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    h, w = height // ph, width // pw
    assert nodes.features.shape == (2, h * w, 16) and nodes.mask.all()
    assert nodes.grid_shape == (h, w) and nodes.position_kind == "grid"
    rows, cols = nodes.positions[1].unbind(-1)
    assert rows.tolist() == [r for r in range(h) for _ in range(w)]
    assert cols.tolist() == [c for _ in range(h) for c in range(w)]


def test_patch_embedding_equals_flattened_linear_projection() -> None:
    """Reference: cut the patches by hand, flatten (C, ph, pw), apply the conv's weights."""
    torch.manual_seed(0)
    adapter = PatchAdapter(3, (2, 3), 8, pos_embed="none")
    x = torch.randn(2, 3, 4, 9)
    patches = x.unfold(2, 2, 2).unfold(3, 3, 3)  # (B, C, h, w, ph, pw)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 2 * 3, 3 * 2 * 3)  # (B, N, C*ph*pw)
    w = adapter.proj.weight.reshape(8, -1)
    ref = patches @ w.T + adapter.proj.bias
    torch.testing.assert_close(adapter(x).features, ref)


def test_sincos_positions_are_added() -> None:
    adapter = PatchAdapter(1, 2, 8)
    x = torch.zeros(1, 1, 4, 4)
    feats = adapter(x).features[0]  # conv of zeros = bias = 0: only the encoding remains
    assert feats.abs().sum() > 0 and not torch.allclose(feats[0], feats[1])


def test_size_not_divisible_names_both_sizes() -> None:
    adapter = PatchAdapter(3, 4, 8)
    with pytest.raises(ValueError, match=r"\(H=10, W=12\) is not divisible by patch_size \(4, 4\)"):
        adapter(torch.randn(1, 3, 10, 12))


def test_pad_option_pads_to_a_multiple() -> None:
    adapter = PatchAdapter(3, 4, 8, pad=True, pos_embed="none")
    x = torch.randn(1, 3, 10, 13)
    nodes = adapter(x)
    assert nodes.grid_shape == (3, 4)
    padded = torch.zeros(1, 3, 12, 16)
    padded[..., :10, :13] = x
    torch.testing.assert_close(nodes.features, adapter(padded).features)


def test_uint8_refused_or_converted() -> None:
    img = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(TypeError, match="uint8.*convert_uint8=True"):
        PatchAdapter(3, 4, 8)(img)
    conv = PatchAdapter(3, 4, 8, convert_uint8=True)
    torch.testing.assert_close(conv(img).features, conv(img.float() / 255).features)


def test_bad_inputs() -> None:
    adapter = PatchAdapter(3, 4, 8)
    with pytest.raises(ValueError, match="1 channels but in_channels=3"):
        adapter(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"shape \(B, C, H, W\), got \(3, 8, 8\)"):
        adapter(torch.randn(3, 8, 8))
    with pytest.raises(TypeError, match="floating point"):
        adapter(torch.zeros(1, 3, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="in_channels must be > 0, got 0"):
        PatchAdapter(0, 4, 8)
    with pytest.raises(ValueError, match="patch_size must be > 0, got 0"):
        PatchAdapter(3, 0, 8)
    with pytest.raises(ValueError, match="pos_embed must be"):
        PatchAdapter(3, 4, 8, pos_embed="learned")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="divisible by 4 .* got 6; use pos_embed='none'"):
        PatchAdapter(3, 4, 6)
    assert PatchAdapter(3, 4, 6, pos_embed="none")(torch.randn(1, 3, 4, 4)).dim == 6


def test_grid_radius_gives_grid_graph() -> None:
    nodes = PatchAdapter(1, 2, 8, grid_radius=1)(torch.randn(1, 1, 6, 8))
    g = nodes.graph()
    assert isinstance(g, GridGraph) and (g.height, g.width, g.radius) == (3, 4, 1)
    assert torch.equal(g.materialize(), Graph.grid(3, 4, 1).materialize())


def test_patch_batch_equals_one_by_one() -> None:
    torch.manual_seed(0)
    adapter = PatchAdapter(3, 2, 8, grid_radius=1)
    attn = GraphAttention(8, 2)
    x = torch.randn(3, 3, 4, 6)
    nodes = adapter(x)
    out = attn(nodes.features, nodes.graph())
    for i in range(3):
        single = adapter(x[i : i + 1])
        torch.testing.assert_close(out[i], attn(single.features, single.graph())[0])


def test_patch_every_parameter_gets_a_gradient() -> None:
    adapter = PatchAdapter(3, 2, 8)
    adapter(torch.randn(2, 3, 4, 4)).features.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())


# ---------------------------------------------------------------- CNN features


def test_stem_backbone_shapes_and_grads() -> None:
    adapter = CNNFeatureAdapter("stem", dim=8, in_channels=1, grid_radius=1)
    nodes = adapter(torch.randn(2, 1, 16, 20))
    assert nodes.features.shape == (2, 4 * 5, 8) and nodes.grid_shape == (4, 5)
    assert isinstance(nodes.graph(), GridGraph)
    nodes.features.square().sum().backward()
    for name, p in adapter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_torchvision_backbone_tapped_layer() -> None:
    torch.manual_seed(0)
    adapter = CNNFeatureAdapter("resnet18", "layer1", dim=8).eval()
    assert adapter.feature_channels == 64
    x = torch.randn(2, 3, 32, 48)
    nodes = adapter(x)
    assert nodes.grid_shape == (8, 12) and nodes.features.shape == (2, 96, 8)
    assert nodes.positions[0, -1].tolist() == [7, 11]
    # eval mode (BatchNorm running stats): a batch equals its samples one by one
    for i in range(2):
        torch.testing.assert_close(nodes.features[i], adapter(x[i : i + 1]).features[0])
    # layers after the tap are dropped, so every remaining parameter gets a gradient
    adapter.train()
    adapter(x).features.sum().backward()
    assert all(p.grad is not None for p in adapter.parameters())
    assert not hasattr(adapter.backbone, "fc")


def test_grey_images_with_rgb_backbone_and_uint8() -> None:
    adapter = CNNFeatureAdapter("resnet18", "layer1", dim=4, in_channels=1, convert_uint8=True)
    img = torch.randint(0, 256, (1, 1, 16, 16), dtype=torch.uint8)
    assert adapter(img).grid_shape == (4, 4)


# ---------------------------------------------------------------- any input channels


def _resnet18(dtype: torch.dtype = torch.float32) -> nn.Module:
    """An untrained torchvision resnet18 standing in for a trained one (its weights are kept)."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).to(dtype).eval()


def _adapted(rgb: torch.Tensor, channels: int) -> torch.Tensor:
    """timm's rule written out: RGB kernels summed (1 channel), else repeated R, G, B, R, ...
    and scaled by 3 / channels."""
    if channels == 1:
        return rgb.sum(1, keepdim=True)
    return torch.stack([rgb[:, i % 3] for i in range(channels)], 1) * (3 / channels)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 7])
def test_torchvision_name_any_in_channels(channels: int) -> None:
    """An untrained backbone by name: the first convolution is rebuilt for the channels."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    torch.manual_seed(0)
    adapter = CNNFeatureAdapter("resnet18", "layer1", dim=8, in_channels=channels)
    conv = adapter.backbone.conv1
    assert conv.weight.shape == (64, channels, 7, 7) and conv.in_channels == channels
    assert (conv.stride, conv.padding, conv.bias) == ((2, 2), (3, 3), None)
    nodes = adapter(torch.randn(2, channels, 16, 24))
    assert nodes.grid_shape == (4, 6) and nodes.features.isfinite().all()
    if channels == 3:  # nothing changes: the weights are torchvision's own
        expected = reference.conv1.weight
    else:  # fresh, at the scale of the weight it replaces
        scale = conv.weight.square().mean().sqrt() / reference.conv1.weight.square().mean().sqrt()
        assert 0.8 < scale < 1.25
        expected = conv.weight
    torch.testing.assert_close(conv.weight, expected, rtol=0, atol=0)
    adapter(torch.randn(2, channels, 16, 24)).features.sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("backbone", "layer", "first"),
    [("mobilenet_v3_small", "features.1", "features.0.0"), ("squeezenet1_0", None, "features.0")],
)
def test_torchvision_name_first_conv_inside_features(backbone: str, layer, first: str) -> None:
    """The first convolution is found wherever it sits."""
    adapter = CNNFeatureAdapter(backbone, layer, dim=8, in_channels=2)
    assert adapter.backbone.get_submodule(first).in_channels == 2
    assert adapter(torch.randn(1, 2, 64, 64)).features.isfinite().all()


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 7])
def test_module_backbone_weights_adapted_as_timm_does(channels: int) -> None:
    """A module (possibly trained): its first convolution's weights are adapted, not redrawn;
    everything else is untouched, and 3 channels change nothing at all."""
    model = _resnet18()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weight = model.conv1.weight
    model.conv1.weight.requires_grad_(False)  # a frozen first layer stays frozen
    adapter = CNNFeatureAdapter(model, "layer2", dim=8, in_channels=channels)
    conv = adapter.backbone.conv1
    assert conv is model.conv1  # changed in place
    torch.testing.assert_close(conv.weight, _adapted(before["conv1.weight"], channels))
    assert not conv.weight.requires_grad
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k != "conv1.weight")
    if channels == 3:
        assert conv.weight is weight
    nodes = adapter(torch.randn(1, channels, 32, 32))
    assert nodes.grid_shape == (4, 4) and nodes.features.isfinite().all()


@pytest.mark.parametrize(
    ("channels", "repeat"), [(1, lambda g: g.expand(-1, 3, -1, -1)), (6, None)]
)
def test_adapted_model_on_grey_or_repeated_images_equals_rgb_model(channels: int, repeat) -> None:
    """A grey image through the summed kernel equals the RGB model on it repeated to 3
    channels; 6 channels holding an RGB image twice equal the RGB model on it (float64)."""
    model = _resnet18(torch.float64)
    rgb_adapter = CNNFeatureAdapter(copy.deepcopy(model), "layer2", dim=8).double().eval()
    adapter = CNNFeatureAdapter(model, "layer2", dim=8, in_channels=channels).double().eval()
    adapter.proj.load_state_dict(rgb_adapter.proj.state_dict())
    torch.manual_seed(1)
    if channels == 1:
        x = torch.rand(2, 1, 32, 40, dtype=torch.float64)
        rgb = repeat(x)
    else:
        rgb = torch.rand(2, 3, 32, 40, dtype=torch.float64)
        x = torch.cat([rgb, rgb], dim=1)
    with torch.no_grad():
        out, ref = adapter(x).features, rgb_adapter(rgb).features
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_adapted_weight_keeps_half_precision() -> None:
    from modalities.image import _adapt_input_weight

    rgb = torch.randn(4, 3, 3, 3, dtype=torch.float16)
    grey = _adapt_input_weight(rgb, 1)
    assert grey.dtype == torch.float16
    torch.testing.assert_close(grey, rgb.float().sum(1, keepdim=True).half())
    assert _adapt_input_weight(rgb, 3) is rgb


def test_module_that_already_takes_the_channels_is_untouched() -> None:
    """The first convolution is judged by what it receives: here a space-to-depth step feeds
    it 4 channels from a grey image, which it already takes."""
    backbone = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4, 6, 3, padding=1))
    weight = backbone[1].weight
    adapter = CNNFeatureAdapter(backbone, dim=4, in_channels=1)
    assert backbone[1].weight is weight and adapter(torch.randn(1, 1, 8, 8)).grid_shape == (4, 4)


def test_first_conv_that_cannot_be_adapted_is_refused() -> None:
    unshuffled = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, 6, 3))  # built for RGB
    with pytest.raises(ValueError, match=r"in_channels=1: .* \('1', in_channels=12\) receives 4 "):
        CNNFeatureAdapter(unshuffled, dim=4, in_channels=1)
    grouped = nn.Sequential(nn.Conv2d(3, 6, 3, groups=3))
    with pytest.raises(ValueError, match=r"in_channels=2: .* \('0'\) is grouped \(groups=3\)"):
        CNNFeatureAdapter(grouped, dim=4, in_channels=2)


def test_timm_name_without_timm_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ImportError, match=r"'timm/resnet18' needs timm: pip install timm"):
        CNNFeatureAdapter("timm/resnet18", dim=4)


def test_module_backbone_used_whole() -> None:
    backbone = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU())
    adapter = CNNFeatureAdapter(backbone, dim=4)
    assert adapter.feature_channels == 6
    assert adapter(torch.randn(1, 3, 8, 10)).grid_shape == (4, 5)


def test_cnn_errors() -> None:
    with pytest.raises(ValueError, match="layer 'layer9' is not a node .* 'layer4'"):
        CNNFeatureAdapter("resnet18", "layer9", dim=4)
    with pytest.raises(ValueError, match="'not_a_net' is not a torchvision model name"):
        CNNFeatureAdapter("not_a_net", dim=4)
    with pytest.raises(ValueError, match=r"must give a feature map \(B, C, h, w\), got \(1, 512\)"):
        CNNFeatureAdapter("resnet18", "flatten", dim=4)
    with pytest.raises(ValueError, match="backbone 'stem' has no layers"):
        CNNFeatureAdapter("stem", "layer1", dim=4)
    with pytest.raises(TypeError, match="backbone must be an nn.Module or a model name"):
        CNNFeatureAdapter(3, dim=4)  # type: ignore[arg-type]


def test_a_feature_map_below_2x2_warns_and_names_an_earlier_layer():
    """resnet18's layer4 on 32x32 images is a single cell: a graph of one node."""
    adapter = CNNFeatureAdapter("resnet18", dim=8).eval()
    with pytest.warns(UserWarning, match=r"'layer4' gives a 1x1 feature map.*Tap layer3"):
        with torch.no_grad():
            nodes = adapter(torch.rand(1, 3, 32, 32))
    assert nodes.features.shape == (1, 1, 8)

"""Images: timm backbones in ``CNNFeatureAdapter`` (``"timm/<name>"`` and ``features_only``
instances), untrained (no download), with any number of input channels."""

from __future__ import annotations

import copy

import pytest
import torch

from modalities import CNNFeatureAdapter

timm = pytest.importorskip("timm", reason="timm is not installed")


def _resnet18(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, features_only=True, **kwargs).eval()


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 7])
def test_timm_name_any_in_channels(channels: int) -> None:
    """timm builds the model for the channels; the model is cut after the tapped level."""
    adapter = CNNFeatureAdapter("timm/resnet18", "layer2", dim=8, in_channels=channels).eval()
    assert adapter.layer == "layer2" and adapter.feature_channels == 128
    assert adapter.backbone.conv1.in_channels == channels
    assert "layer3" not in dict(adapter.backbone.named_children())
    nodes = adapter(torch.randn(2, channels, 32, 48))
    assert nodes.grid_shape == (4, 6) and nodes.features.shape == (2, 24, 8)
    assert nodes.features.isfinite().all()


def test_timm_name_default_level_is_the_deepest() -> None:
    adapter = CNNFeatureAdapter("timm/convnext_atto", dim=8, in_channels=4, grid_radius=1)
    assert (adapter.layer, adapter.feature_channels) == ("stages.3", 320)
    assert adapter(torch.randn(1, 4, 64, 96)).grid_shape == (2, 3)
    assert "timm/convnext_atto" in repr(adapter) and "in_channels=4" in repr(adapter)


def test_bare_names_stay_torchvision_names() -> None:
    """Only the prefix selects timm: "resnet18" is torchvision's, "convnext_atto" an error
    that names the spelling for timm's."""
    assert not hasattr(CNNFeatureAdapter("resnet18", "layer1", dim=4).backbone, "act1")
    with pytest.raises(ValueError, match=r"not a torchvision .*; for timm's, write 'timm/conv"):
        CNNFeatureAdapter("convnext_atto", dim=4)


def test_timm_name_errors() -> None:
    with pytest.raises(ValueError, match=r"'timm/not_a_net': 'not_a_net' is not a timm model"):
        CNNFeatureAdapter("timm/not_a_net", dim=4)
    with pytest.raises(ValueError, match=r"'layer9' is not a feature level of timm/resnet18; .*"):
        CNNFeatureAdapter("timm/resnet18", "layer9", dim=4)


def test_features_only_instance_taps_the_chosen_level() -> None:
    """``layer`` names one of the levels it returns; the nodes are that map's cells."""
    model = _resnet18()
    adapter = CNNFeatureAdapter(model, "layer2", dim=8, pos_embed="none").eval()
    assert (adapter.layer, adapter.feature_channels) == ("layer2", 128)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = adapter.proj(model(x)[2]).flatten(2).transpose(1, 2)  # (B, N, D)
        torch.testing.assert_close(adapter(x).features, ref)
    deepest = CNNFeatureAdapter(_resnet18(), dim=8)
    assert (deepest.layer, deepest.feature_channels) == ("layer4", 512)


def test_features_only_instance_dict_output() -> None:
    model = _resnet18(feature_cls="dict", out_indices=(1, 2))
    adapter = CNNFeatureAdapter(model, "layer1", dim=8)
    assert adapter.feature_channels == 64
    assert adapter(torch.randn(1, 3, 32, 32)).grid_shape == (8, 8)


def test_features_only_instance_level_not_returned() -> None:
    with pytest.raises(ValueError, match=r"'layer4' is not a feature level that .* returns"):
        CNNFeatureAdapter(_resnet18(out_indices=(1, 2)), "layer4", dim=4)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 7])
def test_features_only_instance_any_in_channels(channels: int) -> None:
    """An instance built for RGB (possibly trained): its first convolution is adapted as
    timm's in_chans adapts pretrained weights; 3 channels leave it as it is."""
    model = _resnet18()
    rgb = model.conv1.weight.detach().clone()
    adapter = CNNFeatureAdapter(model, "layer1", dim=8, in_channels=channels)
    expected = timm.models.adapt_input_conv(channels, rgb)
    torch.testing.assert_close(model.conv1.weight.detach(), expected, rtol=0, atol=0)
    assert adapter(torch.randn(1, channels, 16, 16)).grid_shape == (4, 4)


def test_features_only_instance_built_for_the_channels_is_untouched() -> None:
    model = _resnet18(in_chans=4)
    weight = model.conv1.weight
    CNNFeatureAdapter(model, dim=4, in_channels=4)
    assert model.conv1.weight is weight


def test_timm_grey_equals_rgb_on_replicated_grey() -> None:
    model = _resnet18().double()
    rgb_adapter = CNNFeatureAdapter(copy.deepcopy(model), "layer2", dim=8).double().eval()
    grey_adapter = CNNFeatureAdapter(model, "layer2", dim=8, in_channels=1).double().eval()
    grey_adapter.proj.load_state_dict(rgb_adapter.proj.state_dict())
    x = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        out = grey_adapter(x).features
        ref = rgb_adapter(x.expand(-1, 3, -1, -1)).features
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def _tiny_swin(**kwargs) -> torch.nn.Module:
    """A Swin built for 32 x 32 images, whose feature maps are channels-last (B, h, w, C)."""
    torch.manual_seed(0)
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        features_only=True,
        img_size=32,
        window_size=4,
        embed_dim=8,
        depths=(1, 1),
        num_heads=(1, 1),
        **kwargs,
    ).eval()


def test_channels_last_maps_and_a_model_for_another_image_size() -> None:
    """Swin's maps come as (B, h, w, C); it refuses the 224 x 224 probe, so the first
    convolution in registration order (its patch embedding) is the one adapted."""
    model = _tiny_swin()
    adapter = CNNFeatureAdapter(model, dim=8, in_channels=2, pos_embed="none").eval()
    assert (adapter.layer, adapter.feature_channels) == ("layers.1", 16)
    assert model.patch_embed.proj.in_channels == 2
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        ref = adapter.proj(model(x)[-1].permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
        nodes = adapter(x)
    assert nodes.grid_shape == (4, 4)
    torch.testing.assert_close(nodes.features, ref)


@pytest.mark.parametrize(
    ("backbone", "message"),
    [
        ("timm/resnet18", r"'layer4' gives a 1x1 feature map.*Tap layer3 \(stride 16\)"),
        ("timm/convnext_atto", r"'stages.3' gives a 1x1 feature map.*Tap stages.2 \(stride 16\)"),
    ],
)
def test_timm_map_below_2x2_warns_and_names_an_earlier_level(backbone: str, message: str) -> None:
    adapter = CNNFeatureAdapter(backbone, dim=8).eval()
    with pytest.warns(UserWarning, match=message), torch.no_grad():
        assert adapter(torch.rand(1, 3, 32, 32)).features.shape == (1, 1, 8)

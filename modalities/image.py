"""Images as nodes: ViT-style patches (``PatchAdapter``) and CNN feature-map cells
(``CNNFeatureAdapter``, for hybrid models).

Both return a :class:`NodeSet` whose nodes are the cells of a row-major ``h x w`` grid, with
``(row, col)`` positions, ``grid_shape = (h, w)`` and, with ``grid_radius``, a default graph
that links each cell to its neighbours within that radius (:meth:`graphattn.Graph.grid`).

References: Dosovitskiy et al., "An Image is Worth 16x16 Words" (ViT, 2021) for patches;
the hybrid ViT of the same paper and DETR (Carion et al., 2020) for CNN features as tokens.

Axis legend: ``B`` batch, ``C`` channels, ``H``/``W`` image size, ``h``/``w`` grid size,
``N = h * w`` nodes, ``D`` node feature size.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.positional import sinusoidal_2d

from ._common import arg_error, check_bool, check_choice, check_int, check_tensor, pair
from .nodes import NodeSet

__all__ = ["PatchAdapter", "CNNFeatureAdapter", "conv_stem"]

PosEmbed = Literal["sincos", "none"]


def _check_image(
    x: Tensor, in_channels: int, convert_uint8: bool, *, name: str = "images"
) -> Tensor:
    """Validate ``(B, C, H, W)`` and return a floating-point tensor."""
    check_tensor(name, x, "a tensor of shape (B, C, H, W)")
    if x.dim() != 4:
        raise ValueError(
            f"{name} must have shape (B, C, H, W), got {tuple(x.shape)} "
            "(add a batch dimension with x[None])"
        )
    if x.shape[1] != in_channels:
        raise ValueError(f"{name} have {x.shape[1]} channels but in_channels={in_channels}")
    if x.dtype == torch.uint8:
        if not convert_uint8:
            raise TypeError(
                "images are uint8 (0..255); convert them to float (e.g. x.float() / 255) or "
                "build the adapter with convert_uint8=True"
            )
        return x.float() / 255.0
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be floating point (or uint8 with convert_uint8), got {x.dtype}"
        )
    return x


def _check_adapter_args(
    in_channels: int, dim: int, pos_embed: str, grid_radius: int | None, convert_uint8: bool
) -> tuple[int, int, int | None, bool]:
    """Checks shared by the image adapters; returns ``in_channels``, ``dim``,
    ``grid_radius`` and ``convert_uint8``."""
    in_channels = check_int("in_channels", in_channels)
    dim = check_int("dim", dim)
    check_choice("pos_embed", pos_embed, ("sincos", "none"))
    grid_radius = check_int("grid_radius", grid_radius, optional=True)
    convert_uint8 = check_bool("convert_uint8", convert_uint8)
    if pos_embed == "sincos" and dim % 4:
        raise ValueError(
            f"dim must be divisible by 4 for the 2-D sin-cos position encoding, got {dim}; "
            "use pos_embed='none' for other sizes"
        )
    return in_channels, dim, grid_radius, convert_uint8


def _grid_nodes(
    fmap: Tensor, pos: Tensor | None, grid_radius: int | None, modality: str
) -> NodeSet:
    """Feature map ``(B, D, h, w)`` (+ position encoding ``(N, D)``) -> grid NodeSet."""
    b, _, h, w = fmap.shape
    x = fmap.flatten(2).transpose(1, 2)  # (B, N, D), row-major cells
    if pos is not None:
        x = x + pos.to(x.dtype)
    rows = torch.arange(h, device=x.device).repeat_interleave(w)  # (N,)
    cols = torch.arange(w, device=x.device).repeat(h)  # (N,)
    positions = torch.stack([rows, cols], dim=-1).expand(b, h * w, 2)  # (B, N, 2)
    return NodeSet(
        features=x,
        mask=torch.ones(b, h * w, dtype=torch.bool, device=x.device),
        positions=positions,
        position_kind="grid",
        modality=modality,
        grid_shape=(h, w),
        graph_kind="grid" if grid_radius is not None else "complete",
        graph_radius=grid_radius,
    )


class PatchAdapter(nn.Module):
    """Split images into non-overlapping patches and project each to a node (ViT's patch
    embedding: a ``Conv2d`` with kernel = stride = patch size).

    Args:
        in_channels: channels of the images, any number (1 grey, 3 RGB, 4 RGB + near
            infrared, ...).
        patch_size: ``p`` or ``(ph, pw)``.
        dim: node feature size ``D``.
        pad: zero-pad the bottom and right edges up to a multiple of the patch size; when
            ``False`` a size that is not a multiple raises ``ValueError``.
        convert_uint8: accept ``uint8`` images and scale them to ``[0, 1]``; when ``False``
            they raise ``TypeError`` (a silent 0..255 input wrecks training).
        grid_radius: make the default graph a grid neighbourhood of this radius
            (``None``: complete graph).
        pos_embed: ``"sincos"`` adds a fixed 2-D sin-cos encoding of ``(row, col)`` (MAE,
            :func:`graphattn.positional.sinusoidal_2d`; ``dim`` divisible by 4), which works
            for any image size; ``"none"`` adds nothing.

    Shapes:
        - images: ``(B, C, H, W)`` float (or uint8 with ``convert_uint8``); ``H`` and ``W``
          may differ
        - output: :class:`NodeSet` with features ``(B, h * w, D)``, ``h = ceil(H / ph)``,
          ``w = ceil(W / pw)``, grid positions ``(B, N, 2)`` and ``grid_shape = (h, w)``

    Example:
        >>> adapter = PatchAdapter(3, 4, 32)
        >>> nodes = adapter(torch.randn(2, 3, 8, 12))
        >>> nodes.features.shape, nodes.grid_shape
        (torch.Size([2, 6, 32]), (2, 3))
    """

    def __init__(
        self,
        in_channels: int,
        patch_size: int | tuple[int, int],
        dim: int,
        *,
        pad: bool = False,
        convert_uint8: bool = False,
        grid_radius: int | None = None,
        pos_embed: PosEmbed = "sincos",
    ) -> None:
        super().__init__()
        in_channels, dim, self.grid_radius, self.convert_uint8 = _check_adapter_args(
            in_channels, dim, pos_embed, grid_radius, convert_uint8
        )
        self.in_channels, self.dim = in_channels, dim
        self.patch_size = pair("patch_size", patch_size)
        self.pad = check_bool("pad", pad)
        self.pos_embed = pos_embed
        self.proj = nn.Conv2d(in_channels, dim, self.patch_size, stride=self.patch_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform on the flattened patch projection (as MAE/timm), zero bias."""
        w = self.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.proj.bias)

    def forward(self, images: Tensor) -> NodeSet:
        """Patchify ``images`` into grid nodes.

        Shapes:
            - images: ``(B, C, H, W)``; returns a :class:`NodeSet` ``(B, h * w, D)``.
        """
        x = _check_image(images, self.in_channels, self.convert_uint8)
        ph, pw = self.patch_size
        hgt, wid = x.shape[-2:]
        if hgt % ph or wid % pw:
            if not self.pad:
                raise ValueError(
                    f"image size (H={hgt}, W={wid}) is not divisible by patch_size "
                    f"({ph}, {pw}); resize or crop, or build the adapter with pad=True"
                )
            x = F.pad(x, (0, -wid % pw, 0, -hgt % ph))  # zero-pad right and bottom
        fmap = self.proj(x)  # (B, D, h, w)
        h, w = fmap.shape[-2:]
        pos = sinusoidal_2d(h, w, self.dim, device=x.device) if self.pos_embed == "sincos" else None
        return _grid_nodes(fmap, pos, self.grid_radius, "image")

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, patch_size={self.patch_size}, dim={self.dim}, "
            f"pad={self.pad}, grid_radius={self.grid_radius}, pos_embed={self.pos_embed!r}"
        )


def conv_stem(in_channels: int, width: int = 64) -> nn.Sequential:
    """A small convolutional stem (stride 4): two 3x3 stride-2 conv + BatchNorm + ReLU
    blocks, ``in_channels -> width / 2 -> width`` (the early-convolution stem of Xiao et al.,
    "Early Convolutions Help Transformers See Better", 2021, shortened).

    Shapes:
        - ``(B, C, H, W)`` -> ``(B, width, ceil(H / 4), ceil(W / 4))``.
    """
    in_channels = check_int("in_channels", in_channels)
    width = check_int("width", width)
    mid = max(width // 2, 1)
    return nn.Sequential(
        nn.Conv2d(in_channels, mid, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    )


def _default_layer(model: nn.Module, name: str) -> str:
    if hasattr(model, "layer4"):
        return "layer4"
    if hasattr(model, "features"):
        return "features"
    from torchvision.models.feature_extraction import get_graph_node_names

    nodes = get_graph_node_names(model)[1]
    raise ValueError(
        f"layer=None has no default for backbone {name!r}; pass one of its nodes, e.g. {nodes[-8:]}"
    )


# ---------------------------------------------------------------- the input convolution


def _adapt_input_weight(weight: Tensor, in_channels: int) -> Tensor:
    """A trained first convolution's weight, adapted to ``in_channels`` input channels the way
    timm adapts pretrained weights for ``in_chans`` (``adapt_input_conv`` in
    ``timm/models/_manipulate.py``; rewritten here, for any source channel count ``I``).

    - ``in_channels == I``: the weight itself.
    - ``in_channels == 1``: the sum over the input channels, so a grey image ``g`` gives what
      the original gives on ``(g, g, g)``.
    - otherwise: the ``I`` channel kernels repeated (``R, G, B, R, G, ...``), cut to
      ``in_channels`` and scaled by ``I / in_channels``, which keeps the output's scale (an
      RGB image repeated ``k`` times gives exactly the RGB output).

    Half-precision weights are summed in float32 and returned in their own dtype.

    Shapes:
        - weight: ``(O, I, kh, kw)`` -> ``(O, in_channels, kh, kw)``
    """
    source = weight.shape[1]
    if in_channels == source:
        return weight
    work = weight.to(torch.promote_types(weight.dtype, torch.float32))
    if in_channels == 1:
        out = work.sum(dim=1, keepdim=True)  # (O, 1, kh, kw)
    else:
        repeats = math.ceil(in_channels / source)
        out = work.repeat(1, repeats, 1, 1)[:, :in_channels] * (source / in_channels)
    return out.to(weight.dtype)


class _ReachedConv(Exception):
    """Stops a probe at the first convolution that the images reach."""

    def __init__(self, name: str, conv: nn.Conv2d, received: int | None) -> None:
        super().__init__(name)
        self.name, self.conv, self.received = name, conv, received


def _first_conv(model: nn.Module, in_channels: int) -> tuple[str, nn.Conv2d, int | None] | None:
    """The first ``nn.Conv2d`` that ``in_channels``-channel images reach and the channels it
    receives, found by a probe (a ``1 x C x 224 x 224`` zero image, eval mode, no gradient)
    that a forward pre-hook stops there. When the probe fails before any convolution (a model
    built for another image size), the first ``nn.Conv2d`` in registration order, received
    channels unknown (``None``); ``None`` when the model reaches no convolution."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return None

    def stop_at(name: str, conv: nn.Conv2d) -> Callable[[nn.Module, tuple[object, ...]], None]:
        def hook(module: nn.Module, args: tuple[object, ...]) -> None:
            x = args[0] if args else None
            received = x.shape[1] if isinstance(x, Tensor) and x.dim() == 4 else None
            raise _ReachedConv(name, conv, received)

        return hook

    handles = [conv.register_forward_pre_hook(stop_at(name, conv)) for name, conv in convs]
    was_training = model.training
    model.eval()
    p = next(model.parameters(), None)
    kw = {} if p is None else {"device": p.device, "dtype": p.dtype}
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, 224, 224, **kw))
    except _ReachedConv as reached:
        return reached.name, reached.conv, reached.received
    except Exception:  # failed before any convolution: registration order decides
        return convs[0][0], convs[0][1], None
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return None


def _set_input_channels(
    model: nn.Module, in_channels: int, *, keep_weights: bool, backbone: str
) -> None:
    """Make the first convolution of ``model`` (:func:`_first_conv`) take ``in_channels``
    channels, in place. ``keep_weights`` (a possibly trained model): adapt its weight with
    :func:`_adapt_input_weight`; otherwise (an untrained model) draw a fresh weight, normal
    with the root mean square of the one it replaces: torchvision's initialisations of a
    first convolution (fan-out Kaiming, a fixed std) do not depend on its input channels.
    The bias, stride, padding and the layer's class are kept."""
    found = _first_conv(model, in_channels)
    if found is None:
        return
    name, conv, received = found
    if received is not None and received == conv.in_channels:
        return  # it already takes what the images give it
    if received is None and conv.in_channels == in_channels:
        return
    if received is not None and received != in_channels:
        raise ValueError(
            f"in_channels={in_channels}: the first convolution of {backbone} ({name!r}, "
            f"in_channels={conv.in_channels}) receives {received} channels, not the images "
            f"themselves; build the backbone for {in_channels}-channel images"
        )
    if conv.groups != 1:
        raise ValueError(
            f"in_channels={in_channels}: the first convolution of {backbone} ({name!r}) is "
            f"grouped (groups={conv.groups}) and takes {conv.in_channels} channels; build "
            f"the backbone for {in_channels}-channel images"
        )
    old = conv.weight  # (O, I, kh, kw)
    with torch.no_grad():
        if keep_weights:
            new = _adapt_input_weight(old, in_channels)  # (O, C, kh, kw)
        else:
            shape = (old.shape[0], in_channels, *old.shape[2:])
            new = (
                torch.randn(shape, device=old.device, dtype=old.dtype) * old.square().mean().sqrt()
            )
    conv.weight = nn.Parameter(new, requires_grad=old.requires_grad)
    conv.in_channels = in_channels


# ---------------------------------------------------------------- timm backbones

_TIMM = "timm/"  # a backbone name with this prefix is a timm model name


def _is_timm_features(model: nn.Module) -> bool:
    """A timm ``features_only`` model: its ``feature_info`` is a ``FeatureInfo`` (a plain
    timm model's is a list of dicts)."""
    return callable(getattr(getattr(model, "feature_info", None), "module_name", None))


def _timm_levels(model: nn.Module) -> tuple[list[str], list[int], list[int]]:
    """A timm feature model's levels: module names and strides of all of them, and the
    indices of those it returns."""
    info = model.feature_info
    every = list(range(len(info)))
    returned = [i % len(info) for i in info.out_indices]
    return info.module_name(every), info.reduction(every), returned


def _timm_model(name: str, layer: str | None, in_channels: int) -> nn.Module:
    """timm's ``features_only`` model ``name``, untrained, built for ``in_channels`` and
    returning one map: level ``layer`` (a module name), or the deepest level it returns by
    default."""
    label = _TIMM + name
    try:
        import timm
    except ImportError:
        raise ImportError(
            f"backbone {label!r} needs timm: pip install timm (or graphattn[timm])"
        ) from None
    if not timm.is_model(name):
        raise ValueError(
            f"backbone {label!r}: {name!r} is not a timm model name (timm.list_models() lists them)"
        )
    kw = {"pretrained": False, "features_only": True, "in_chans": in_channels}
    model = timm.create_model(name, **kw)
    modules, _, returned = _timm_levels(model)
    if layer is None:
        level = returned[-1]
    elif layer in modules:
        level = modules.index(layer)
    else:
        raise ValueError(
            f"layer {layer!r} is not a feature level of {label}; its levels: {modules}"
        )
    if returned != [level]:  # rebuild, cut after the tapped level
        model = timm.create_model(name, out_indices=(level,), **kw)
    return model


def _timm_tap(model: nn.Module, layer: str | None, backbone: str) -> tuple[int, str, str | None]:
    """Which of a timm feature model's outputs to tap (``layer``, a module name, or the
    deepest one), that level's module name, and the last level before it at a smaller stride
    (for the small-map advice)."""
    modules, strides, returned = _timm_levels(model)
    if layer is None:
        level = returned[-1]
    elif layer in modules and modules.index(layer) in returned:
        level = modules.index(layer)
    else:
        raise ValueError(
            f"layer {layer!r} is not a feature level that {backbone} returns; it returns "
            f"{[modules[i] for i in returned]} (of all its levels {modules}: build it with "
            "out_indices that include the one to tap)"
        )
    earlier = next(
        (
            f"{modules[i]} (stride {strides[i]})"
            for i in reversed(range(level))
            if strides[i] < strides[level]
        ),
        None,
    )
    return returned.index(level), modules[level], earlier


class CNNFeatureAdapter(nn.Module):
    """Cells of a CNN feature map as nodes (hybrid ViT): backbone -> tapped layer ->
    1x1 convolution to ``dim`` -> grid nodes.

    Args:
        backbone: one of

            - a torchvision model name (built with ``weights=None``: no download). To start
              from trained weights, pass the trained model instead (e.g.
              ``torchvision.models.resnet18(weights="DEFAULT")``);
            - ``"timm/<name>"``: a timm model name (``"timm/resnet18"``,
              ``"timm/convnext_atto"``; timm must be installed), built with
              ``features_only=True``, ``pretrained=False`` and ``in_chans=in_channels``. Only
              the prefix selects timm: a bare name is always torchvision's;
            - ``"stem"`` for :func:`conv_stem`;
            - any ``nn.Module``, a timm ``features_only=True`` model included.
        layer: the node to tap. For torchvision models and other modules, a node as named by
            ``torchvision.models.feature_extraction.get_graph_node_names``
            (e.g. ``"layer2"``); ``None``: ``"layer4"`` for ResNets, ``"features"`` for
            VGG/MobileNet/EfficientNet/ConvNeXt/DenseNet, a module backbone used whole.
            For timm models, a feature level as named by ``feature_info.module_name()``
            (``"layer2"``, ``"stages.1"``); ``None``: the deepest level the model returns
            (the last map of its output list). ``"stem"`` is its own output. The layers
            after the tap are dropped (for a timm instance, those after its deepest
            returned level).
        dim: node feature size ``D`` (keyword-only).
        in_channels: channels of the input images, any number. A backbone built for other
            channels gets its first convolution (the first ``nn.Conv2d`` the images reach)
            changed, in place: a torchvision name (untrained) gets a fresh weight for
            ``in_channels``; a module (possibly trained) gets its weight adapted as timm
            adapts pretrained weights for ``in_chans``: summed over the RGB kernels for one
            channel (a grey image gives what the RGB model gives on it repeated to 3
            channels), repeated and scaled by ``3 / in_channels`` otherwise. ``"stem"`` and
            timm names are built for ``in_channels``.
        grid_radius: make the default graph a grid neighbourhood of this radius.
        convert_uint8: accept ``uint8`` images and scale them to ``[0, 1]``.
        pos_embed: ``"sincos"`` (fixed 2-D sin-cos of ``(row, col)``) or ``"none"``.

    The feature channels are found once at construction: from ``feature_info`` for timm
    models, otherwise by a forward pass of a ``1 x C x 224 x 224`` zero image in eval mode.
    BatchNorm layers make the output depend on the batch in training mode; compare batches
    with single samples in eval mode. A tapped map of fewer than 2 x 2 cells warns, naming
    an earlier layer to tap.

    Shapes:
        - images: ``(B, C, H, W)``
        - output: :class:`NodeSet` ``(B, h * w, D)`` with the tapped map's ``(h, w)``

    Example:
        >>> adapter = CNNFeatureAdapter("resnet18", "layer2", dim=32)
        >>> adapter(torch.randn(1, 3, 64, 96)).grid_shape
        (8, 12)
        >>> CNNFeatureAdapter("resnet18", "layer1", dim=8, in_channels=4).backbone.conv1
        Conv2d(4, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False)
    """

    def __init__(
        self,
        backbone: nn.Module | str = "resnet18",
        layer: str | None = None,
        *,
        dim: int,
        in_channels: int = 3,
        grid_radius: int | None = None,
        convert_uint8: bool = False,
        pos_embed: PosEmbed = "sincos",
    ) -> None:
        super().__init__()
        in_channels, dim, self.grid_radius, self.convert_uint8 = _check_adapter_args(
            in_channels, dim, pos_embed, grid_radius, convert_uint8
        )
        self.dim, self.in_channels = dim, in_channels
        if layer is not None and not isinstance(layer, str):
            raise arg_error(TypeError, "layer", "a str (a node name) or None", layer)
        self.pos_embed = pos_embed
        self._tap: int | None = None  # a timm feature model: which map of its output list
        self._channels_last = False  # a timm feature model whose maps are (B, h, w, C)
        if isinstance(backbone, str):
            self.backbone_name = backbone
            if backbone == "stem":
                if layer is not None:
                    raise ValueError(f"backbone 'stem' has no layers to tap, got layer={layer!r}")
                model: nn.Module = conv_stem(in_channels)
            elif backbone.startswith(_TIMM):
                model = _timm_model(backbone[len(_TIMM) :], layer, in_channels)
            else:
                model = _torchvision_model(backbone)
                layer = _default_layer(model, backbone) if layer is None else layer
                _set_input_channels(model, in_channels, keep_weights=False, backbone=backbone)
        elif isinstance(backbone, nn.Module):
            self.backbone_name = type(backbone).__name__
            model = backbone
            _set_input_channels(model, in_channels, keep_weights=True, backbone=self.backbone_name)
        else:
            raise arg_error(TypeError, "backbone", "an nn.Module or a model name", backbone)
        if _is_timm_features(model):
            self._tap, layer, self._earlier = _timm_tap(model, layer, self.backbone_name)
            self._channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"
            self.layer, self.backbone = layer, model
            channels = model.feature_info.channels()[self._tap]
        else:
            self.layer, self._earlier = layer, _earlier_resnet_stage(layer)
            self.backbone = _tap_layer(model, layer, self.backbone_name)
            channels = self._probe_channels()
        self.proj = nn.Conv2d(channels, dim, 1)
        self.feature_channels = channels

    @torch.no_grad()
    def _probe_channels(self) -> int:
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            p = next(self.backbone.parameters(), None)
            kw = {} if p is None else {"device": p.device, "dtype": p.dtype}
            out = self._backbone_forward(torch.zeros(1, self.in_channels, 224, 224, **kw))
        finally:
            self.backbone.train(was_training)
        return out.shape[1]

    def _backbone_forward(self, x: Tensor) -> Tensor:
        out = self.backbone(x)
        if self._tap is not None:  # a timm feature model: one map per level, list or dict
            out = (list(out.values()) if isinstance(out, dict) else out)[self._tap]
        elif isinstance(out, dict):
            out = out["features"]
        if not isinstance(out, Tensor) or out.dim() != 4:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"layer {self.layer!r} of {self.backbone_name} must give a feature map "
                f"(B, C, h, w), got {shape}"
            )
        if self._channels_last:
            out = out.permute(0, 3, 1, 2)  # (B, h, w, C) -> (B, C, h, w)
        return out

    def reset_parameters(self) -> None:
        """Reset the 1x1 projection (the backbone keeps its own initialisation)."""
        self.proj.reset_parameters()

    def forward(self, images: Tensor) -> NodeSet:
        """Run the backbone and turn the tapped feature map into grid nodes.

        Shapes:
            - images: ``(B, C, H, W)``; returns a :class:`NodeSet` ``(B, h * w, D)``.
        """
        x = _check_image(images, self.in_channels, self.convert_uint8)
        fmap = self.proj(self._backbone_forward(x))  # (B, D, h, w)
        h, w = fmap.shape[-2:]
        if h * w < 4:
            advice = _small_map_advice(self.layer, h, w, tuple(x.shape[-2:]), self._earlier)
            warnings.warn(advice, stacklevel=2)
        pos = sinusoidal_2d(h, w, self.dim, device=x.device) if self.pos_embed == "sincos" else None
        return _grid_nodes(fmap, pos, self.grid_radius, "image")

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone_name!r}, layer={self.layer!r}, "
            f"in_channels={self.in_channels}, feature_channels={self.feature_channels}, "
            f"dim={self.dim}, grid_radius={self.grid_radius}"
        )


def _torchvision_model(name: str) -> nn.Module:
    """torchvision's model ``name``, untrained (``weights=None``)."""
    import torchvision

    try:
        return torchvision.models.get_model(name, weights=None)
    except ValueError as err:
        try:
            import timm

            hint = f"; for timm's, write {_TIMM + name!r}" if timm.is_model(name) else ""
        except ImportError:
            hint = ""
        raise ValueError(
            f"backbone {name!r} is not a torchvision model name ({err}){hint}"
        ) from None


def _tap_layer(model: nn.Module, layer: str | None, backbone: str) -> nn.Module:
    """``model`` cut after node ``layer`` (a feature extractor returning ``{"features": map}``),
    or ``model`` itself when ``layer`` is ``None``."""
    if layer is None:
        return model
    from torchvision.models.feature_extraction import (
        create_feature_extractor,
        get_graph_node_names,
    )

    names = get_graph_node_names(model)[0]
    if not any(n == layer or n.startswith(layer + ".") for n in names):
        tops = list(dict.fromkeys(n.split(".")[0] for n in names))
        raise ValueError(
            f"layer {layer!r} is not a node or module of {backbone}; its "
            f"top-level nodes: {tops[:20]}"
        )
    return create_feature_extractor(model, return_nodes={layer: "features"})


def _earlier_resnet_stage(layer: str | None) -> str | None:
    """The ResNet stage before ``layer`` (``"layer2"`` .. ``"layer4"``), at half the stride."""
    match = re.fullmatch(r"layer([2-4])", layer or "")
    return f"layer{int(match.group(1)) - 1!s} (half the stride)" if match else None


def _small_map_advice(
    layer: str | None, h: int, w: int, size: tuple[int, ...], earlier: str | None
) -> str:
    """What to do when the tapped feature map has fewer than 2 x 2 cells (nodes)."""
    return (
        f"CNNFeatureAdapter: layer {layer!r} gives a {h}x{w} feature map for "
        f"{size[0]}x{size[1]} images, i.e. {h * w} node(s): attention between cells needs at "
        f"least 2x2. Tap {earlier or 'an earlier layer'}, or feed larger images."
    )

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

import re
import warnings
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
    in_channels = check_choice("in_channels", in_channels, (1, 3))
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
        in_channels: 1 (grey) or 3 (RGB).
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


class CNNFeatureAdapter(nn.Module):
    """Cells of a CNN feature map as nodes (hybrid ViT): backbone -> tapped layer ->
    1x1 convolution to ``dim`` -> grid nodes.

    Args:
        backbone: a torchvision model name (built with ``weights=None``: no download; load
            your own weights into ``adapter.backbone`` if needed), ``"stem"`` for
            :func:`conv_stem`, or any ``nn.Module``.
        layer: the node to tap, as named by
            ``torchvision.models.feature_extraction.get_graph_node_names``
            (e.g. ``"layer2"``). ``None``: ``"layer4"`` for ResNets, ``"features"`` for
            VGG/MobileNet/EfficientNet/ConvNeXt/DenseNet; a module backbone is used whole and
            ``"stem"`` is its own output. The layers after it are dropped.
        dim: node feature size ``D`` (keyword-only).
        in_channels: channels of the input images (1 or 3). Grey images are repeated to 3
            channels for torchvision models.
        grid_radius: make the default graph a grid neighbourhood of this radius.
        convert_uint8: accept ``uint8`` images and scale them to ``[0, 1]``.
        pos_embed: ``"sincos"`` (fixed 2-D sin-cos of ``(row, col)``) or ``"none"``.

    The feature channels are found once at construction by a forward pass of a
    ``1 x C x 224 x 224`` zero image in eval mode. BatchNorm layers make the output depend
    on the batch in training mode; compare batches with single samples in eval mode.

    Shapes:
        - images: ``(B, C, H, W)``
        - output: :class:`NodeSet` ``(B, h * w, D)`` with the tapped map's ``(h, w)``

    Example:
        >>> adapter = CNNFeatureAdapter("resnet18", "layer2", dim=32)
        >>> adapter(torch.randn(1, 3, 64, 96)).grid_shape
        (8, 12)
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
        self.repeat_grey = False
        if isinstance(backbone, str):
            self.backbone_name = backbone
            if backbone == "stem":
                if layer is not None:
                    raise ValueError(f"backbone 'stem' has no layers to tap, got layer={layer!r}")
                model: nn.Module = conv_stem(in_channels)
            else:
                import torchvision

                try:
                    model = torchvision.models.get_model(backbone, weights=None)
                except ValueError as err:
                    raise ValueError(
                        f"backbone {backbone!r} is not a torchvision model name ({err})"
                    ) from None
                layer = _default_layer(model, backbone) if layer is None else layer
                self.repeat_grey = in_channels == 1
        elif isinstance(backbone, nn.Module):
            self.backbone_name = type(backbone).__name__
            model = backbone
        else:
            raise arg_error(TypeError, "backbone", "an nn.Module or a model name", backbone)
        self.layer = layer
        if layer is not None:
            from torchvision.models.feature_extraction import (
                create_feature_extractor,
                get_graph_node_names,
            )

            names = get_graph_node_names(model)[0]
            if not any(n == layer or n.startswith(layer + ".") for n in names):
                tops = list(dict.fromkeys(n.split(".")[0] for n in names))
                raise ValueError(
                    f"layer {layer!r} is not a node or module of {self.backbone_name}; its "
                    f"top-level nodes: {tops[:20]}"
                )
            model = create_feature_extractor(model, return_nodes={layer: "features"})
        self.backbone = model
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
        if self.repeat_grey:
            x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W)
        out = self.backbone(x)
        if isinstance(out, dict):
            out = out["features"]
        if not isinstance(out, Tensor) or out.dim() != 4:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"layer {self.layer!r} of {self.backbone_name} must give a feature map "
                f"(B, C, h, w), got {shape}"
            )
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
            warnings.warn(_small_map_advice(self.layer, h, w, tuple(x.shape[-2:])), stacklevel=2)
        pos = sinusoidal_2d(h, w, self.dim, device=x.device) if self.pos_embed == "sincos" else None
        return _grid_nodes(fmap, pos, self.grid_radius, "image")

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone_name!r}, layer={self.layer!r}, "
            f"feature_channels={self.feature_channels}, dim={self.dim}, "
            f"grid_radius={self.grid_radius}"
        )


def _small_map_advice(layer: str | None, h: int, w: int, size: tuple[int, ...]) -> str:
    """What to do when the tapped feature map has fewer than 2 x 2 cells (nodes)."""
    earlier = "an earlier layer"
    match = re.fullmatch(r"layer([2-4])", layer or "")
    if match:  # a ResNet stage: the one before has half the stride
        earlier = f"layer{int(match.group(1)) - 1!s} (half the stride)"
    return (
        f"CNNFeatureAdapter: layer {layer!r} gives a {h}x{w} feature map for "
        f"{size[0]}x{size[1]} images, i.e. {h * w} node(s): attention between cells needs at "
        f"least 2x2. Tap {earlier}, or feed larger images."
    )

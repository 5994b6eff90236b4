r"""The affinity CNN of docs/method.md §4 (eqs. 3.6–3.8): a backbone and the embedding head ``F_A``.

The backbone's last three levels (all at the output stride, 8 by default) are reduced by
1×1 convolutions to 64, 128 and 256 channels, concatenated and mixed by a 1×1 convolution into
the ``d_A = 448``-dimensional embedding ``F_A``. Pixel affinities are

.. math::
    D(i, j) = \exp\!\big(-\lVert F_A(i) - F_A(j) \rVert_1 / d_A\big)    \qquad (3.8)

(:func:`graphwsss.graphs.affinity_from_embedding`). The same network also gives the A²GNN's node
features: the concatenated backbone levels (post-ReLU, §5).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphwsss.models.backbone import Backbone, BackboneNetwork

REDUCED_CHANNELS = (64, 128, 256)
EMBEDDING_DIM = 448


def concat_levels(levels: list[Tensor]) -> Tensor:
    """Concatenate feature levels ``[B, C_l, h_l, w_l]`` at the size of the first (finest) one.

    Coarser levels are resized bilinearly (at output stride 8 the last three levels of every
    backbone already share one size, so nothing is resized).
    """
    size = levels[0].shape[-2:]
    return torch.cat([level if level.shape[-2:] == size else
                      F.interpolate(level, size=size, mode="bilinear", align_corners=False)
                      for level in levels], dim=1)


class AffinityNetwork(BackboneNetwork):
    """An affinity network: ``forward(images) -> (features [B, C, h, w], embedding [B, d_A,
    h, w])``; :meth:`embed` applies it to one image."""

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> tuple[Tensor, Tensor]:
        """One ``[H, W, 3]`` uint8 image to ``(features [C, h, w], embedding [d_A, h, w])``.

        Runs in evaluation mode on the network's device; the caller's mode is restored.
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        features, embedding = self(self.backbone.preprocess(image).unsqueeze(0).to(device))
        self.train(was_training)
        return features[0], embedding[0]


class AffinityNet(AffinityNetwork):
    """Backbone + affinity embedding head.

    Args:
        backbone: any :class:`~graphwsss.models.backbone.Backbone`; its last three levels are
            used.
        reduced_channels: output channels of the three 1×1 reductions (64, 128, 256).
        embedding_dim: ``d_A`` (448).
        freeze_batchnorm: keep the backbone's batch-norm statistics fixed in training (the
            usual choice with the small batches affinity training can afford).

    The layers before the last three levels and the ImageNet classifier are frozen
    (:meth:`~graphwsss.models.backbone.Backbone.freeze_before_level`).

    Shapes:
        - input: ``[B, 3, H, W]`` normalised by ``backbone.normalize``
        - output: ``(features [B, C, h, w], embedding [B, d_A, h, w])`` with ``h = ceil(H / s)``,
          ``s`` the stride of the last three levels, ``C`` the sum of their channels; the
          features are post-ReLU (non-negative, as eq. 3.15 expects).
    """

    def __init__(self, backbone: Backbone, reduced_channels: tuple[int, int, int] = REDUCED_CHANNELS,
                 embedding_dim: int = EMBEDDING_DIM, freeze_batchnorm: bool = True) -> None:
        super().__init__()
        if len(reduced_channels) != 3:
            raise ValueError(f"reduced_channels must have 3 entries, got {reduced_channels}")
        self.backbone = backbone
        backbone.freeze_before_level(-3)
        backbone.freeze_classifier()
        self.freeze_batchnorm = freeze_batchnorm
        self.stride = min(backbone.strides[-3:])
        self.channels = sum(backbone.channels[-3:])
        self.embedding_dim = embedding_dim
        self.reduce = nn.ModuleList(nn.Conv2d(channels, reduced, 1, bias=False)
                                    for channels, reduced in zip(backbone.channels[-3:],
                                                                 reduced_channels))
        self.reduce_norm = nn.ModuleList(nn.GroupNorm(4, reduced) for reduced in reduced_channels)
        self.mix = nn.Conv2d(sum(reduced_channels), embedding_dim, 1, bias=True)
        self.reset_head()

    def reset_head(self) -> None:
        for conv in self.reduce:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        nn.init.xavier_uniform_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        levels = self.backbone(images)[-3:]
        features = torch.relu(concat_levels(levels))
        size = levels[0].shape[-2:]
        reduced = []
        for level, conv, norm in zip(levels, self.reduce, self.reduce_norm):
            level = level if level.shape[-2:] == size else F.interpolate(
                level, size=size, mode="bilinear", align_corners=False)
            reduced.append(F.elu(norm(conv(level))))
        embedding = self.mix(torch.cat(reduced, dim=1))
        return features, embedding



# --- Edge-aware affinity network: frozen backbone, head on every level and colour -------------

LOW_LEVEL_CHANNELS = 32      # 1×1 reduction of each level finer than the node grid (stride 2, 4)
COLOUR_CHANNELS = 16         # 1×1 reduction of the stride-2 colour maps (RGB + Lab)
HIGH_LEVEL_CHANNELS = 64     # 1×1 reduction of each level at the node grid's stride (the last three)
HIDDEN_CHANNELS = 256        # the mixing layer before the d_A output
COLOUR_STRIDE = 2            # the colour maps' stride (area-pooled from the image)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB ``[..., 3, H, W]`` in ``[0, 1]`` to CIE Lab (D65) scaled by 1/100 (L in [0, 1])."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    matrix = rgb.new_tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                             [0.019334, 0.119193, 0.950227]])
    white = rgb.new_tensor([0.950456, 1.0, 1.088754]).view(3, 1, 1)
    xyz = torch.einsum("ij,...jhw->...ihw", matrix, linear) / white
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-6) ** (1 / 3), 7.787 * xyz + 16 / 116)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([(116 * fy - 16) / 100, 5 * (fx - fy), 2 * (fy - fz)], dim=-3)


def _pad_to(level: Tensor, size: tuple[int, int]) -> Tensor:
    """Replicate-pad ``[B, C, h, w]`` at the bottom and right to ``size`` (never crops)."""
    pad_h, pad_w = size[0] - level.shape[-2], size[1] - level.shape[-1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"level {tuple(level.shape[-2:])} is larger than {size}")
    return F.pad(level, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else level


def head_inputs(levels: list[Tensor], rgb: Tensor, strides: tuple[int, ...],
                stride: int) -> tuple[list[Tensor], Tensor, Tensor]:
    """What :class:`EdgeAffinityHead` reads, from the backbone's levels and the image.

    Args:
        levels: every backbone level ``[B, C_l, ceil(H / s_l), ceil(W / s_l)]``.
        rgb: ``[B, 3, H, W]`` RGB in ``[0, 1]``.
        strides: the levels' strides ``s_l``; stride: the node grid's (``s``, 8).

    Returns:
        ``(levels, colour, image_grid)``: each level replicate-padded to ``(h s / s_l, w s / s_l)``
        with ``h = ceil(H / s)``, so that ``s / s_l`` level cells tile one node exactly;
        ``colour [B, 6, h s / 2, w s / 2]`` (RGB and Lab / 100, area-pooled to stride 2);
        ``image_grid [B, 3, h, w]`` the mean RGB of each node's cell (padding replicated).
    """
    height, width = rgb.shape[-2:]
    grid = (math.ceil(height / stride), math.ceil(width / stride))
    padded = []
    for level, level_stride in zip(levels, strides):
        if stride % level_stride:
            raise ValueError(f"level stride {level_stride} does not divide the grid stride {stride}")
        ratio = stride // level_stride
        padded.append(_pad_to(level, (grid[0] * ratio, grid[1] * ratio)))
    image = _pad_to(rgb, (grid[0] * stride, grid[1] * stride))
    pooled = F.avg_pool2d(image, COLOUR_STRIDE)
    colour = torch.cat([pooled, rgb_to_lab(pooled)], dim=1)
    return padded, colour, F.avg_pool2d(image, stride)


class EdgeAffinityHead(nn.Module):
    r"""``F_A`` from every backbone level and the colour, so that affinities can follow edges.

    Each level is reduced by a 1×1 convolution (+ group norm, ELU); the levels finer than the
    node grid (stride 2 and 4) and the stride-2 colour maps are then pooled to the grid by both
    mean and max over each node's cell (an edge inside a cell stays visible in the max). With
    the mean colour of each cell, all are concatenated and mixed by 1×1 convolutions
    (``HIDDEN_CHANNELS``, ELU) into ``d_A`` channels.

    Shapes: :func:`head_inputs`' ``(levels, colour, image_grid)`` to ``[B, d_A, h, w]``.
    """

    def __init__(self, channels: tuple[int, ...], strides: tuple[int, ...], stride: int,
                 embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.ratios = tuple(stride // level_stride for level_stride in strides)
        widths = [LOW_LEVEL_CHANNELS if ratio > 1 else HIGH_LEVEL_CHANNELS for ratio in self.ratios]
        self.colour_ratio = stride // COLOUR_STRIDE
        self.reduce = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, width, 1, bias=False), nn.GroupNorm(4, width),
                          nn.ELU())
            for in_channels, width in zip(list(channels) + [6], widths + [COLOUR_CHANNELS]))
        mixed = sum(width * (2 if ratio > 1 else 1)
                    for width, ratio in zip(widths + [COLOUR_CHANNELS],
                                            self.ratios + (self.colour_ratio,))) + 3
        self.mix = nn.Sequential(nn.Conv2d(mixed, HIDDEN_CHANNELS, 1, bias=False),
                                 nn.GroupNorm(8, HIDDEN_CHANNELS), nn.ELU(),
                                 nn.Conv2d(HIDDEN_CHANNELS, embedding_dim, 1))

    def forward(self, levels: list[Tensor], colour: Tensor, image_grid: Tensor) -> Tensor:
        parts = []
        for level, reduce, ratio in zip(list(levels) + [colour], self.reduce,
                                        self.ratios + (self.colour_ratio,)):
            level = reduce(level.float())
            if ratio > 1:
                parts += [F.avg_pool2d(level, ratio), F.max_pool2d(level, ratio)]
            else:
                parts.append(level)
        parts.append(image_grid.float())
        return self.mix(torch.cat(parts, dim=1))


class EdgeAffinityNet(AffinityNetwork):
    """A frozen backbone and an :class:`EdgeAffinityHead` (the affinity CNN trained on cached
    backbone features, :func:`graphwsss.stages.affinity.train_affinity`).

    Same interface as :class:`AffinityNet`: ``forward(images) -> (features, embedding)`` with
    ``features`` the post-ReLU concatenation of the last three levels (the ImageNet node
    features, the backbone being frozen), ``embed(image)``, ``stride``, ``channels``,
    ``embedding_dim``. The head alone: ``head(*head_inputs(...))``.
    """

    def __init__(self, backbone: Backbone, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.backbone = backbone
        for parameter in backbone.parameters():
            parameter.requires_grad_(False)
        self.stride = min(backbone.strides[-3:])
        self.channels = sum(backbone.channels[-3:])
        self.embedding_dim = embedding_dim
        self.head = EdgeAffinityHead(backbone.channels, backbone.strides, self.stride,
                                     embedding_dim)

    def head_inputs(self, images: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
        """Normalised images ``[B, 3, H, W]`` to ``(backbone levels, *head_inputs(...))``."""
        levels = self.backbone(images)
        mean = images.new_tensor(self.backbone.pixel_mean).view(3, 1, 1)
        std = images.new_tensor(self.backbone.pixel_std).view(3, 1, 1)
        rgb = ((images * std + mean) / 255.0).clamp(0, 1)
        return (levels, *head_inputs(levels, rgb, self.backbone.strides, self.stride))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        levels, padded, colour, image_grid = self.head_inputs(images)
        features = torch.relu(concat_levels(levels[-3:]))
        return features, self.head(padded, colour, image_grid)


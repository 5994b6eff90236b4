"""ResNet-50 and ResNet-101 (He et al., 2016) in plain torch.nn, with torchvision's layout.

Module names match torchvision's state dicts (``conv1``, ``bn1``, ``layer1`` … ``layer4`` of
``Bottleneck`` blocks with ``conv1..3``, ``bn1..3`` and ``downsample.0/1``, and ``fc``), so a
torchvision checkpoint loads with ``weights=<path>``. The stride of a block sits in its 3×3
convolution ("ResNet v1.5"), as in torchvision. Inputs are normalised with the ImageNet mean and
standard deviation that torchvision's weights expect.

Levels (input ``[B, 3, H, W]``, level ``i`` is ``[B, C_i, ceil(H / s_i), ceil(W / s_i)]``):

=====  =========  ========  ==============  ==============  ==============
level  output of  channels  stride (OS 32)  stride (OS 16)  stride (OS 8)
=====  =========  ========  ==============  ==============  ==============
0      layer1     256       4               4               4
1      layer2     512       8               8               8
2      layer3     1024      16              16              8 (dilation 2)
3      layer4     2048      32              16 (dil. 2)     8 (dilation 4)
=====  =========  ========  ==============  ==============  ==============

``fc`` is used only by :meth:`ResNet.classify`; a weights file without ``fc.*`` keys leaves it
randomly initialised.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from graphwsss.models.backbone import IMAGENET, Backbone, StageLayout, layout_stages, load_weights

STEM_CHANNELS = 64
STEM_STRIDE = 4  # the 7×7 stride-2 convolution, then the stride-2 max pooling
EXPANSION = 4
NUM_CLASSES = 1000
STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)
DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided and/or dilated), 1×1 expand by 4, plus the shortcut.

    The shortcut is a strided 1×1 convolution with batch norm (``downsample``) when the block
    changes resolution or width, else the identity. Shapes: ``[B, in_channels, H, W]`` to
    ``[B, 4 * width, ceil(H / stride), ceil(W / stride)]``.
    """

    def __init__(self, in_channels: int, width: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet(Backbone):
    """Bottleneck ResNet features at four levels, layer1 … layer4 (see the module docstring).

    Args:
        depths: number of blocks in layer1 … layer4, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        output_stride: 4, 8, 16 or 32; layers beyond it run dilated instead of strided.

    Shapes: ``[B, 3, H, W]`` normalised with the ImageNet statistics (:meth:`normalize`) to
    ``[B, channels[i], ceil(H / strides[i]), ceil(W / strides[i])]`` for the four levels.
    """

    pixel_mean = (123.675, 116.28, 103.53)
    pixel_std = (58.395, 57.12, 57.375)

    def __init__(self, depths: Sequence[int], output_stride: int = 8) -> None:
        layouts = layout_stages(STEM_STRIDE, STAGE_STRIDES, output_stride)
        super().__init__(strides=[layout.total_stride for layout in layouts],
                         channels=[width * EXPANSION for width in STAGE_WIDTHS])
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        layers, in_channels = [], STEM_CHANNELS
        for depth, width, layout in zip(depths, STAGE_WIDTHS, layouts, strict=True):
            layers.append(_layer(in_channels, width, depth, layout))
            in_channels = width * EXPANSION
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(in_channels, NUM_CLASSES)

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(images))))
        levels = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            levels.append(x)
        return levels

    def classifier_modules(self) -> list[nn.Module]:
        return [self.fc]

    def modules_before_level(self, level: int) -> list[nn.Module]:
        return [self.conv1, self.bn1, *(self.layer1, self.layer2, self.layer3, self.layer4)[:level]]

    def classify(self, images: Tensor) -> Tensor:
        """ImageNet logits ``[B, 1000]`` for normalised images ``[B, 3, H, W]``."""
        return self.fc(self(images)[-1].mean(dim=(2, 3)))


def _layer(in_channels: int, width: int, depth: int, layout: StageLayout) -> nn.Sequential:
    first = Bottleneck(in_channels, width, layout.stride, layout.first_dilation)
    rest = [Bottleneck(width * EXPANSION, width, 1, layout.dilation) for _ in range(depth - 1)]
    return nn.Sequential(first, *rest)


def _resnet(depth: int, weights: str | os.PathLike | None, output_stride: int) -> ResNet:
    if weights == IMAGENET:
        raise ValueError(f"no ImageNet weights ship with graphwsss for resnet{depth}; pass "
                         "weights=<path to a torchvision-format state dict>, or None")
    model = ResNet(DEPTHS[depth], output_stride)
    if weights is not None:
        load_weights(model, weights, optional_prefixes=("fc.",))
    return model


def resnet50(weights: str | os.PathLike | None = None, output_stride: int = 8) -> ResNet:
    """ResNet-50 with ``weights`` = a torchvision-format state dict path, or ``None``."""
    return _resnet(50, weights, output_stride)


def resnet101(weights: str | os.PathLike | None = None, output_stride: int = 8) -> ResNet:
    """ResNet-101 with ``weights`` = a torchvision-format state dict path, or ``None``."""
    return _resnet(101, weights, output_stride)

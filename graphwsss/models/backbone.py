"""The backbone interface and what the concrete backbones share (the factory by name is
:mod:`graphwsss.models.registry`).

A backbone maps images ``[B, 3, H, W]`` to a list of feature maps, one per *level*, from fine to
coarse. Level ``i`` has ``channels[i]`` channels and stride ``strides[i]`` (both known before
running), and its spatial size is ``ceil(H / strides[i]) x ceil(W / strides[i])``: every
stride-2 convolution pads so that it maps ``n`` pixels to ``ceil(n / 2)``.

With ``output_stride`` < 32 the later stages do not downsample: their first convolution runs at
stride 1 and every later spatial convolution is dilated by the stride that was removed
(DeepLab's "atrous" trick, laid out as in torchvision's ``replace_stride_with_dilation``), so
the last levels all share the stride ``output_stride`` and keep the receptive field of the
pretrained network. docs/method.md §4 takes the last three levels at stride 8.
"""

from __future__ import annotations

import itertools
import operator
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from graphwsss.data.errors import DataError
from graphwsss.utils.checkpoint import refusal_reason

IMAGENET = "imagenet"


class Backbone(nn.Module, ABC):
    """Images ``[B, 3, H, W]`` (normalised by :meth:`normalize`) to multi-level feature maps.

    Subclasses set :attr:`strides` and :attr:`channels` (one entry per level, fine to coarse)
    in ``__init__`` and the class attributes :attr:`pixel_mean` and :attr:`pixel_std`, the
    per-channel RGB statistics on the 0..255 scale that their pretrained weights expect.
    """

    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]

    def __init__(self, strides: Sequence[int], channels: Sequence[int]) -> None:
        super().__init__()
        self.strides = tuple(strides)
        self.channels = tuple(channels)

    @abstractmethod
    def forward(self, images: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` to ``[B, channels[i], ceil(H / strides[i]), ceil(W / strides[i])]``."""

    @abstractmethod
    def modules_before_level(self, level: int) -> list[nn.Module]:
        """The modules that compute only levels ``< level`` (stem included)."""

    def freeze_before_level(self, level: int) -> None:
        """Stop gradients to every parameter that feeds only levels ``< level``.

        Training the affinity CNN or the CAM network on the last three levels then skips the
        backward pass through the high-resolution early layers (most of a CPU step's time),
        as IRN does by freezing the stem and the first stage.
        """
        if not -len(self.strides) <= level < len(self.strides):
            raise ValueError(f"level must index one of the {len(self.strides)} levels, got {level}")
        for module in self.modules_before_level(level % len(self.strides)):
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def classifier_modules(self) -> list[nn.Module]:
        """The modules used only by ``classify`` (the ImageNet head), none by default."""
        return []

    def freeze_classifier(self) -> None:
        """Stop gradients to the ImageNet head, which feature extraction never uses (and which
        DistributedDataParallel would otherwise wait for)."""
        for module in self.classifier_modules():
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def normalize(self, images: Tensor) -> Tensor:
        """RGB on the 0..255 scale (uint8 or float, channels at dim -3) to the network's input.

        Shapes: ``[..., 3, H, W]`` to float32 ``[..., 3, H, W]`` on the same device.
        """
        if images.ndim < 3 or images.shape[-3] != 3:
            raise ValueError(f"expected RGB images [..., 3, H, W], got shape {tuple(images.shape)}")
        mean = torch.tensor(self.pixel_mean, device=images.device).view(3, 1, 1)
        std = torch.tensor(self.pixel_std, device=images.device).view(3, 1, 1)
        return (images.float() - mean) / std

    def preprocess(self, image: np.ndarray) -> Tensor:
        """One ``[H, W, 3]`` uint8 RGB image to the float32 ``[3, H, W]`` network input."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a [H, W, 3] uint8 RGB image, got {image.dtype} "
                             f"array of shape {image.shape}")
        return self.normalize(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))


class BackboneNetwork(nn.Module):
    """A network made of a :class:`Backbone` (attribute ``backbone``) and a freshly initialised
    head (every other parameter), as the affinity CNN and the CAM network are.

    With ``freeze_batchnorm`` set, training mode leaves the backbone's batch-norm layers in
    evaluation mode: their ImageNet statistics stay fixed, the usual choice with the small
    batches these networks are trained with.
    """

    backbone: Backbone
    freeze_batchnorm: bool = True

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_batchnorm:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def head_parameters(self) -> list[nn.Parameter]:
        """The parameters outside the backbone."""
        return [p for name, p in self.named_parameters() if not name.startswith("backbone.")]


@dataclass(frozen=True)
class StageLayout:
    """Where one stage of a backbone runs, after strides were traded for dilation.

    Attributes:
        stride: stride of the stage's first block, 1 or the nominal stride.
        first_dilation: dilation of the first block's spatial convolution.
        dilation: dilation of the spatial convolutions of the other blocks.
        total_stride: stride of the stage's output with respect to the input image.
    """

    stride: int
    first_dilation: int
    dilation: int
    total_stride: int


def layout_stages(stem_stride: int, stage_strides: Sequence[int],
                  output_stride: int) -> list[StageLayout]:
    """Trade the strides that would go beyond ``output_stride`` for dilation, stage by stage.

    A stage whose stride is removed keeps the previous dilation in its first block (that block
    used to do the downsampling) and multiplies it by the removed stride for its other blocks.
    """
    layouts, total_stride, dilation = [], stem_stride, 1
    for stride in stage_strides:
        first_dilation = dilation
        if total_stride * stride > output_stride:
            dilation, stride = dilation * stride, 1
        total_stride *= stride
        layouts.append(StageLayout(stride, first_dilation, dilation, total_stride))
    if total_stride != output_stride:
        reachable = sorted(set(itertools.accumulate(stage_strides, operator.mul,
                                                    initial=stem_stride)))
        raise ValueError(f"output_stride must be one of {reachable}, got {output_stride}")
    return layouts


def load_weights(model: nn.Module, path: str | os.PathLike,
                 optional_prefixes: tuple[str, ...] = ()) -> None:
    """Load a state dict file into ``model``, every key and shape matching.

    Keys of ``model`` that start with one of ``optional_prefixes``, and the batch-norm counters
    ``*.num_batches_tracked`` (absent from checkpoints older than PyTorch 0.4.1, such as the
    first torchvision ResNets), may be absent from the file; they keep their current values.
    Raises :class:`DataError` naming the file when it is missing, unreadable, or does not
    match (listing a few of the offending keys).
    """
    state = _read_state_dict(path)
    expected = model.state_dict()
    mismatches = {
        "missing keys": [key for key in expected if key not in state
                         and not key.startswith(optional_prefixes)
                         and not key.endswith(".num_batches_tracked")],
        "unexpected keys": [key for key in state if key not in expected],
        "shape mismatches": [f"{key} {tuple(value.shape)} vs {tuple(expected[key].shape)}"
                             for key, value in state.items()
                             if key in expected and value.shape != expected[key].shape],
    }
    problems = [_summarise(what, keys) for what, keys in mismatches.items() if keys]
    if problems:
        raise DataError(path, f"state dict does not fit {type(model).__name__}: "
                              + "; ".join(problems))
    # Keys allowed to be absent from the file keep the model's current values.
    model.load_state_dict({**expected, **state}, strict=True)


def _summarise(what: str, keys: list[str], shown: int = 5) -> str:
    more = ", ..." if len(keys) > shown else ""
    return f"{what} ({len(keys)}): {', '.join(keys[:shown])}{more}"


def _read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    if not os.path.isfile(path):
        raise DataError(path, "weights file is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise DataError(path, f"cannot read the weights file ({refusal_reason(error)})") from error
    if not (isinstance(state, dict) and all(isinstance(value, Tensor) for value in state.values())):
        raise DataError(path, "the file does not hold a state dict (names mapped to tensors)")
    return state

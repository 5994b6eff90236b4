"""The backbones by name: :func:`build_backbone` and :data:`BACKBONE_NAMES`.

Apart from :mod:`graphwsss.models.backbone` (the interface the concrete backbones import), so
that the base module does not import the backbones built on it.
"""

from __future__ import annotations

import os
from typing import Callable

from graphwsss.models.backbone import IMAGENET, Backbone
from graphwsss.models.efficientnet_lite import efficientnet_lite0
from graphwsss.models.resnet import resnet50, resnet101

BUILDERS: dict[str, Callable[..., Backbone]] = {
    "efficientnet_lite0": efficientnet_lite0, "resnet50": resnet50, "resnet101": resnet101}
BACKBONE_NAMES = tuple(BUILDERS)


def build_backbone(name: str = "efficientnet_lite0", weights: str | os.PathLike | None = IMAGENET,
                   output_stride: int = 8) -> Backbone:
    """Build a backbone by name (in training mode, as every fresh ``nn.Module``).

    The levels of each backbone are tabled in the docstrings of
    :mod:`graphwsss.models.efficientnet_lite` (five levels, strides ``(2, 4, 8, 8, 8)`` at output
    stride 8) and :mod:`graphwsss.models.resnet` (layer1..layer4, strides ``(4, 8, 8, 8)``).

    Args:
        name: one of :data:`BACKBONE_NAMES`.
        weights: ``"imagenet"`` for the ImageNet weights that ship with graphwsss (only
            ``efficientnet_lite0``), a path to a state dict file, or ``None`` for random init.
        output_stride: stride of the coarsest levels, 4, 8, 16 or 32.
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONE_NAMES)}")
    return BUILDERS[name](weights=weights, output_stride=output_stride)

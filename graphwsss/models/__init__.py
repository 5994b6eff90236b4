"""Backbones: images ``[B, 3, H, W]`` to multi-level feature maps of known strides and widths."""

from graphwsss.models.backbone import Backbone
from graphwsss.models.efficientnet_lite import EfficientNetLite0, efficientnet_lite0
from graphwsss.models.registry import BACKBONE_NAMES, build_backbone
from graphwsss.models.resnet import ResNet, resnet50, resnet101

__all__ = [
    "BACKBONE_NAMES", "Backbone", "EfficientNetLite0", "ResNet", "build_backbone",
    "efficientnet_lite0", "resnet50", "resnet101",
]

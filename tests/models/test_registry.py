"""The backbone registry: every backbone by name, the default, unknown names."""

from __future__ import annotations

import ast
import inspect

import pytest

from graphwsss.models import Backbone, backbone
from graphwsss.models.registry import BACKBONE_NAMES, build_backbone


@pytest.mark.parametrize("name, strides", [("efficientnet_lite0", (2, 4, 8, 8, 8)),
                                           ("resnet50", (4, 8, 8, 8)),
                                           ("resnet101", (4, 8, 8, 8))])
def test_factory_builds_every_backbone(name, strides):
    backbone = build_backbone(name, weights=None)
    assert isinstance(backbone, Backbone)
    assert backbone.strides == strides
    assert len(backbone.channels) == len(strides)


def test_factory_default_is_pretrained_efficientnet_at_stride_8():
    backbone = build_backbone()
    assert backbone.strides[-3:] == (8, 8, 8)
    assert backbone.channels[-3:] == (40, 112, 320)
    assert backbone._bn0.running_var.ne(1).any()  # loaded, not freshly initialised


def test_unknown_name_lists_the_known_names():
    with pytest.raises(ValueError, match="known backbones: " + ", ".join(BACKBONE_NAMES)):
        build_backbone("vgg16")


def test_the_base_module_does_not_import_the_backbones():
    # No import circle: the backbones import the base module, the registry imports both.
    tree = ast.parse(inspect.getsource(backbone))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"graphwsss.models.efficientnet_lite", "graphwsss.models.resnet",
                           "graphwsss.models.registry"}

"""The backbone interface: preprocessing, the stage layout, weight-file errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphwsss.data.errors import DataError
from graphwsss.models import build_backbone
from graphwsss.models.backbone import StageLayout, layout_stages, load_weights


def test_unreachable_output_stride_is_rejected():
    with pytest.raises(ValueError, match=r"output_stride must be one of \[4, 8, 16, 32\], got 12"):
        build_backbone("resnet50", weights=None, output_stride=12)


def test_layout_trades_strides_for_dilation():
    assert layout_stages(4, (1, 2, 2, 2), output_stride=8) == [
        StageLayout(stride=1, first_dilation=1, dilation=1, total_stride=4),
        StageLayout(stride=2, first_dilation=1, dilation=1, total_stride=8),
        StageLayout(stride=1, first_dilation=1, dilation=2, total_stride=8),
        StageLayout(stride=1, first_dilation=2, dilation=4, total_stride=8)]
    assert [layout.stride for layout in layout_stages(4, (1, 2, 2, 2), output_stride=32)] == [
        1, 2, 2, 2]


@pytest.mark.parametrize("name, expected", [("efficientnet_lite0", (255 - 127) / 128),
                                            ("resnet50", (255 - 123.675) / 58.395)])
def test_preprocess_applies_the_backbone_statistics(name, expected):
    backbone = build_backbone(name, weights=None)
    image = np.full((5, 7, 3), 255, dtype=np.uint8)
    tensor = backbone.preprocess(image)
    assert tensor.shape == (3, 5, 7) and tensor.dtype == torch.float32
    assert torch.allclose(tensor[0], torch.full((5, 7), expected))


def test_normalize_accepts_batched_uint8_and_float():
    backbone = build_backbone("efficientnet_lite0", weights=None)
    images = torch.randint(0, 256, (2, 3, 4, 6), dtype=torch.uint8)
    assert torch.equal(backbone.normalize(images), backbone.normalize(images.float()))
    image = images[1].permute(1, 2, 0).numpy()
    assert torch.equal(backbone.normalize(images)[1], backbone.preprocess(image))


@pytest.mark.parametrize("image", [np.zeros((5, 7, 3), np.float32), np.zeros((5, 7), np.uint8)])
def test_preprocess_rejects_anything_but_uint8_rgb(image):
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8 RGB"):
        build_backbone("efficientnet_lite0", weights=None).preprocess(image)


def test_unreadable_weights_file_is_named(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="garbage.pth: cannot read the weights file"):
        load_weights(torch.nn.Linear(2, 2), path)


def test_file_without_a_state_dict_is_named(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(DataError, match="list.pth: the file does not hold a state dict"):
        load_weights(torch.nn.Linear(2, 2), path)

"""ResNet-50/101: torchvision-format state dict files, dilation for output strides 8 and 16."""

from __future__ import annotations

import math
import re

import pytest
import torch

from graphwsss.data.errors import DataError
from graphwsss.models.resnet import ResNet, resnet50, resnet101

SMALL_INPUT = (1, 3, 45, 61)


@pytest.fixture(scope="module")
def trained_resnet50() -> ResNet:
    """A random ResNet-50 whose batch-norm statistics moved away from their initial values."""
    torch.manual_seed(0)
    model = resnet50(weights=None)
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))  # training mode: updates the running statistics
    return model.eval()


@pytest.fixture(scope="module")
def weights_file(trained_resnet50, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(trained_resnet50.state_dict(), path)
    return path


def test_weights_file_round_trip_gives_identical_outputs(trained_resnet50, weights_file):
    loaded = resnet50(weights=weights_file).eval()
    images = torch.randn(SMALL_INPUT)
    with torch.no_grad():
        for expected, actual in zip(trained_resnet50(images), loaded(images), strict=True):
            assert torch.equal(expected, actual)


@pytest.mark.parametrize("left_out", ["fc.", "num_batches_tracked"])
def test_weights_file_may_leave_out_fc_and_batch_counters(trained_resnet50, tmp_path, left_out):
    path = tmp_path / "partial.pth"
    torch.save({key: value for key, value in trained_resnet50.state_dict().items()
                if left_out not in key}, path)
    loaded = resnet50(weights=path)
    assert torch.equal(loaded.layer4[2].bn3.running_var, trained_resnet50.layer4[2].bn3.running_var)


@pytest.mark.parametrize("output_stride, strides", [(8, (4, 8, 8, 8)), (16, (4, 8, 16, 16)),
                                                    (32, (4, 8, 16, 32))])
def test_levels_have_the_declared_strides_and_channels(output_stride, strides):
    model = resnet50(weights=None, output_stride=output_stride).eval()
    assert model.strides == strides
    assert model.channels == (256, 512, 1024, 2048)
    with torch.no_grad():
        levels = model(torch.randn(SMALL_INPUT))
    height, width = SMALL_INPUT[2:]
    assert [tuple(level.shape) for level in levels] == [
        (1, channels, math.ceil(height / stride), math.ceil(width / stride))
        for channels, stride in zip(model.channels, model.strides)]


def test_dilation_replaces_the_strides_of_layer3_and_layer4():
    model = resnet50(weights=None, output_stride=8)
    assert [(block.conv2.stride, block.conv2.dilation) for block in model.layer3[:2]] == [
        ((1, 1), (1, 1)), ((1, 1), (2, 2))]
    assert [(block.conv2.stride, block.conv2.dilation) for block in model.layer4[:2]] == [
        ((1, 1), (2, 2)), ((1, 1), (4, 4))]


def test_missing_weights_file_is_named(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(DataError, match=re.escape(str(path))):
        resnet50(weights=path)


def test_renamed_key_is_reported_as_missing_and_unexpected(trained_resnet50, tmp_path):
    state = trained_resnet50.state_dict()
    state["layer1.0.conv_one.weight"] = state.pop("layer1.0.conv1.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(DataError) as error:
        resnet50(weights=path)
    message = str(error.value)
    assert str(path) in message
    assert "missing keys (1): layer1.0.conv1.weight" in message
    assert "unexpected keys (1): layer1.0.conv_one.weight" in message


def test_wrong_shape_is_reported(trained_resnet50, tmp_path):
    state = trained_resnet50.state_dict()
    state["fc.weight"] = torch.zeros(10, 2048)
    path = tmp_path / "ten_classes.pth"
    torch.save(state, path)
    with pytest.raises(DataError, match=r"shape mismatches \(1\): fc.weight \(10, 2048\)"):
        resnet50(weights=path)


def test_imagenet_weights_are_not_shipped():
    with pytest.raises(ValueError, match="torchvision-format state dict"):
        resnet50(weights="imagenet")


def test_resnet101_builds_with_dilated_levels():
    model = resnet101(weights=None, output_stride=8).eval()
    assert len(model.layer3) == 23
    with torch.no_grad():
        levels = model(torch.randn(1, 3, 32, 32))
    assert [tuple(level.shape) for level in levels] == [
        (1, 256, 8, 8), (1, 512, 4, 4), (1, 1024, 4, 4), (1, 2048, 4, 4)]

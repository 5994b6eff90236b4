"""EfficientNet-Lite0: the shipped ImageNet weights, "SAME" padding, level strides and shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data, transform

from graphwsss.models.efficientnet_lite import (
    Conv2dSame, DilatedDepthwiseConv2d, EfficientNetLite0, efficientnet_lite0,
    imagenet_weights_path)

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def centre_crop_224(image: np.ndarray) -> np.ndarray:
    """The TF EfficientNet evaluation crop: the central 87.5% square, resized to 224×224."""
    height, width = image.shape[:2]
    side = round(0.875 * min(height, width))
    top, left = (height - side) // 2, (width - side) // 2
    crop = image[top:top + side, left:left + side]
    resized = transform.resize(crop, (224, 224), order=3, anti_aliasing=True, preserve_range=True)
    return resized.round().clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("output_stride", [32, 8, 4])
def test_classifies_chelsea_as_a_cat(output_stride):
    # At output stride 8 the last stages run dilated; wrong dilations lose the cat entirely.
    model = efficientnet_lite0(weights="imagenet", output_stride=output_stride).eval()
    image = model.preprocess(centre_crop_224(data.chelsea()))
    with torch.no_grad():
        probabilities = model.classify(image[None]).softmax(dim=1)[0]
    assert int(probabilities.argmax()) in IMAGENET_CATS
    assert float(probabilities[IMAGENET_CATS].sum()) > 0.8


def test_imagenet_weights_match_every_key_and_shape():
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    model_state = efficientnet_lite0(weights="imagenet").state_dict()
    assert model_state.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(model_state[key], value), key


@pytest.mark.parametrize("output_stride, strides", [(32, (2, 4, 8, 16, 32)),
                                                    (16, (2, 4, 8, 16, 16)),
                                                    (8, (2, 4, 8, 8, 8))])
def test_levels_have_the_declared_strides_and_channels(output_stride, strides):
    model = EfficientNetLite0(output_stride).eval()
    assert model.strides == strides
    assert model.channels == (16, 24, 40, 112, 320)
    with torch.no_grad():
        levels = model(torch.randn(1, 3, 97, 130))
    assert [tuple(level.shape) for level in levels] == [
        (1, channels, math.ceil(97 / stride), math.ceil(130 / stride))
        for channels, stride in zip(model.channels, model.strides)]


def test_same_padding_puts_the_odd_pixel_at_the_bottom_right():
    conv = Conv2dSame(1, 1, 3, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    # 4 pixels at stride 2 need one pixel of padding; TF puts it after the image, so the
    # first window covers pixels 0..2 entirely and the second has one padded row/column.
    out = conv(torch.ones(1, 1, 4, 4))
    assert out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]
    assert tuple(conv(torch.ones(1, 1, 5, 7)).shape) == (1, 1, 3, 4)


@pytest.mark.parametrize("kernel_size,dilation,size", [(5, 2, (28, 28)), (3, 4, (13, 22)),
                                                       (5, 4, (7, 9)), (3, 2, (1, 5))])
def test_dilated_depthwise_conv_equals_nn_conv2d_in_values_and_gradients(kernel_size, dilation,
                                                                         size):
    torch.manual_seed(0)
    reference = torch.nn.Conv2d(6, 6, kernel_size, padding=dilation * (kernel_size // 2),
                                dilation=dilation, groups=6, bias=False)
    phased = DilatedDepthwiseConv2d(6, 6, kernel_size, padding=dilation * (kernel_size // 2),
                                    dilation=dilation, groups=6, bias=False)
    phased.load_state_dict(reference.state_dict())
    x = torch.randn(2, 6, *size, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    expected, actual = reference(x), phased(x2)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    upstream = torch.randn_like(expected)
    expected.backward(upstream)
    actual.backward(upstream)
    torch.testing.assert_close(x2.grad, x.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(phased.weight.grad, reference.weight.grad, atol=1e-4, rtol=1e-4)


def test_output_stride_8_uses_the_phase_form_for_dilated_depthwise_convolutions():
    model = EfficientNetLite0(output_stride=8)
    dilated = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.dilation[0] > 1]
    assert dilated and all(isinstance(m, DilatedDepthwiseConv2d) for m in dilated)


def test_dilated_depthwise_conv_rejects_what_the_phase_form_does_not_compute():
    with pytest.raises(ValueError, match="stride-1 depthwise"):
        DilatedDepthwiseConv2d(6, 6, 3, stride=2, padding=2, dilation=2, groups=6, bias=False)
    with pytest.raises(ValueError, match="stride-1 depthwise"):
        DilatedDepthwiseConv2d(6, 12, 3, padding=2, dilation=2, groups=6, bias=False)
    with pytest.raises(ValueError, match="stride-1 depthwise"):
        DilatedDepthwiseConv2d(6, 6, 3, padding=1, dilation=2, groups=6, bias=False)

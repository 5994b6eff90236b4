"""The segmentation network (docs/method.md §9): shapes, the τ-scaled cosine classifier."""

import pytest
import torch
import torch.nn.functional as F

from graphwsss.models.registry import build_backbone
from graphwsss.models.segmenter import Segmenter

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return Segmenter(build_backbone("efficientnet_lite0", None), num_classes=4, head_channels=16,
                     tau=20.0).eval()


def test_cosines_on_the_stride_8_grid_within_unit_range(network):
    cosines = network(torch.randn(2, 3, 64, 48))
    assert cosines.shape == (2, 4, 8, 6)
    assert cosines.abs().max() <= 1.0 + 1e-5


def test_classifier_is_tau_scaled_cosine_without_bias(network):
    images = torch.randn(1, 3, 32, 32)
    features = network.features(images)
    expected = torch.einsum("bdhw,cd->bchw", F.normalize(features, dim=1),
                            F.normalize(network.classifier, dim=1))
    assert torch.allclose(network(images), expected, atol=1e-5)
    probs = network.probabilities(images)
    manual = F.interpolate(20.0 * expected, size=(32, 32), mode="bilinear",
                           align_corners=False).softmax(dim=1)
    assert torch.allclose(probs, manual, atol=1e-5)
    assert network.tau == 20.0
    # Scaling the classifier weights changes nothing: cosine, no bias.
    with torch.no_grad():
        network.classifier.mul_(3.0)
    assert torch.allclose(network(images), expected, atol=1e-5)
    assert not any(name.endswith("classifier.bias") for name, _ in network.named_parameters())


def test_head_is_two_dilated_3x3_convolutions(network):
    convs = [m for m in network.head if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.dilation, c.out_channels) for c in convs] == \
        [((3, 3), (12, 12), 16)] * 2
    assert sum(isinstance(m, torch.nn.Dropout2d) for m in network.head) == 2


def test_needs_background_and_a_class():
    with pytest.raises(ValueError, match="num_classes"):
        Segmenter(build_backbone("efficientnet_lite0", None), num_classes=1)

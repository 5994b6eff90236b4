r"""The segmentation network trained on pseudo labels (docs/method.md §9).

The run's backbone at output stride 8, a DeepLab-V1-style head and a cosine classifier:

* head :math:`\phi`: two 3×3 convolutions with dilation 12 (``head_channels`` each, 256 on CPU,
  512 in the GPU config), each followed by ReLU and dropout (0.5);
* classifier over the ``K + 1`` classes (background included), without bias:
  :math:`H_c(p) = \mathrm{softmax}_c(\tau \cos(\phi(p), W_c))`, :math:`\tau = 20`.

:meth:`Segmenter.forward` returns the cosines :math:`\cos(\phi(p), W_c)` (``[B, C, h, w]`` on
the stride-8 grid); the logits are ``tau * cosines`` (:attr:`Segmenter.tau`). The noise-aware
loss (:mod:`graphwsss.losses.noise_aware`) needs the cosines themselves.

As the affinity CNN and the CAM network, the layers that compute only the first levels of the
backbone get no gradient (``freeze_before_level=-3``: on EfficientNet-Lite0 the stem and the first
two stages) and the backbone's batch-norm statistics stay at their ImageNet values in training;
the ImageNet classifier of the backbone is frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphwsss.models.backbone import Backbone, BackboneNetwork

HEAD_DILATION = 12


class Segmenter(BackboneNetwork):
    """Backbone + DeepLab-V1-style head + cosine classifier (docs/method.md §9).

    Args:
        backbone: any :class:`~graphwsss.models.backbone.Backbone`; its last level is used.
        num_classes: ``K + 1``, the classes including the background.
        head_channels: channels of the two head convolutions.
        dropout: dropout probability after each head convolution.
        tau: scale :math:`\\tau` of the cosine classifier.
        freeze_before_level: see :meth:`~graphwsss.models.backbone.Backbone.freeze_before_level`
            (``None``: train every backbone layer).
    """

    def __init__(self, backbone: Backbone, num_classes: int, head_channels: int = 256,
                 dropout: float = 0.5, tau: float = 20.0,
                 freeze_before_level: int | None = -3) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background too and must be >= 2, "
                             f"got {num_classes}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.tau = float(tau)
        channels = backbone.channels[-1]
        self.head = nn.Sequential(
            nn.Conv2d(channels, head_channels, 3, padding=HEAD_DILATION, dilation=HEAD_DILATION),
            nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(head_channels, head_channels, 3, padding=HEAD_DILATION,
                      dilation=HEAD_DILATION),
            nn.ReLU(inplace=True), nn.Dropout2d(dropout))
        # W_c, one row per class; no bias.
        self.classifier = nn.Parameter(torch.empty(num_classes, head_channels))
        nn.init.normal_(self.classifier, std=0.01)
        for module in self.head:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        backbone.freeze_classifier()
        if freeze_before_level is not None:
            backbone.freeze_before_level(freeze_before_level)

    def features(self, images: Tensor) -> Tensor:
        """:math:`\\phi`: ``[B, 3, H, W]`` normalised images to ``[B, D, ceil(H/8), ceil(W/8)]``."""
        return self.head(self.backbone(images)[-1])

    def cosines(self, features: Tensor) -> Tensor:
        """:math:`\\cos(\\phi(p), W_c)`: ``[B, D, h, w]`` to ``[B, C, h, w]`` in ``[-1, 1]``."""
        return torch.einsum("bdhw,cd->bchw", F.normalize(features, dim=1),
                            F.normalize(self.classifier, dim=1))

    def forward(self, images: Tensor) -> Tensor:
        """Cosines ``[B, C, h, w]`` of the stride-8 grid; logits are ``tau`` times them."""
        return self.cosines(self.features(images))

    @torch.no_grad()
    def probabilities(self, images: Tensor) -> Tensor:
        """:math:`H_c(p)`: softmax of ``tau * cosines``, upsampled bilinearly to the input size;
        ``[B, C, H, W]``."""
        cosines = self.forward(images)
        logits = F.interpolate(self.tau * cosines, size=images.shape[-2:], mode="bilinear",
                               align_corners=False)
        return logits.softmax(dim=1)

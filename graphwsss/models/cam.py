r"""The CAM seed network of docs/method.md §3: a backbone and a 1×1 classifier without bias.

The last backbone level (stride 8 at ``output_stride=8``; at 16 or 32 it is upsampled
bilinearly to the stride-8 grid) gives the features :math:`f \in \mathbb{R}^{D \times h \times w}`
and a 1×1 convolution without bias the class logits :math:`s`:

* ``activation="sigmoid"`` (``gap``, ``is_binomial``): ``K`` channels, one per foreground class,
  each an independent sigmoid classifier; the class activation is :math:`\mathrm{ReLU}(s_k)`.
* ``activation="softmax"`` (``gmp``, ``is``, ``bap``): ``K + 1`` channels with a **learned
  background logit** at channel 0 (a ``K+1``-th row of the same 1×1 convolution, trained as a
  class that is present in every image). A constant-zero background logit was the other option;
  the learned channel lets the background score vary with the image content, so that the softmax
  :math:`a = \operatorname{softmax}(s)` the losses of §3 sample from and the FSL compares can
  put background pixels on the background class instead of forcing every foreground logit
  below a fixed level. The class activation is :math:`a_k` of the softmax over the background
  and the image's tags (absent classes masked out, :meth:`CAMNet.class_activations`).

``classifier="cosine"`` (BAP, §3) replaces the dot product by :math:`\tau \cos(f, w_k)` with
:math:`\tau = 20`.

The network's logits all sit on the grid of ``h = ceil(H / 8)`` by ``w = ceil(W / 8)`` cells
(:mod:`graphwsss.postprocess.upsample` brings them back to image size).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphwsss.models.backbone import Backbone, BackboneNetwork
from graphwsss.utils.shapes import check_shape, describe

Activation = Literal["sigmoid", "softmax"]
Classifier = Literal["linear", "cosine"]
COSINE_SCALE = 20.0
GRID_STRIDE = 8


class CAMOutput(NamedTuple):
    """What :class:`CAMNet` returns.

    Attributes:
        logits: ``[B, C, h, w]`` class logits :math:`s`, ``C = K`` (sigmoid) or ``K + 1``
            (softmax, background at channel 0).
        features: ``[B, D, h, w]`` the last backbone level on the same grid (BAP pools them).
    """

    logits: Tensor
    features: Tensor


class CAMNet(BackboneNetwork):
    r"""Backbone + 1×1 classifier without bias giving class logits on the stride-8 grid (§3).

    Args:
        backbone: any :class:`~graphwsss.models.backbone.Backbone`; its last level is used.
        num_classes: ``K``, the number of foreground classes.
        activation: ``"sigmoid"`` (``K`` logits) or ``"softmax"`` (``K + 1`` logits, learned
            background at channel 0); see the module docstring.
        classifier: ``"linear"`` (:math:`s_k = \langle w_k, f \rangle`) or ``"cosine"``
            (:math:`s_k = \tau \cos(w_k, f)`, BAP).
        cosine_scale: :math:`\tau` of the cosine classifier (20).
        grid_stride: stride of the logit grid (8); a coarser last level is upsampled to it.
        freeze_before_level: layers computing only the levels before this one get no
            gradient (:meth:`~graphwsss.models.backbone.Backbone.freeze_before_level`); ``-3``
            (the default, as :class:`~graphwsss.models.affinity.AffinityNet`) keeps the stem and
            the high-resolution stages at their ImageNet weights, which skips most of a CPU
            step's backward pass; ``None`` trains the whole backbone.
        freeze_batchnorm: keep the backbone's batch-norm statistics fixed in training (the
            small batches a CAM network is trained with here give poor statistics).
        fsl: the :class:`~graphwsss.losses.FeatureSimilarityLoss` module when the FSL is used:
            held here so that learnable :math:`\sigma, \mu` are optimised and saved with the
            weights (a fixed one has no state). The network never calls it.

    The ImageNet classifier of the backbone is frozen
    (:meth:`~graphwsss.models.backbone.Backbone.freeze_classifier`).

    Shapes:
        - input: ``[B, 3, H, W]`` normalised by ``backbone.normalize``
        - output: :class:`CAMOutput` with logits ``[B, C, h, w]`` and features
          ``[B, D, h, w]``, ``h = ceil(H / grid_stride)``, ``w = ceil(W / grid_stride)``.
    """

    def __init__(self, backbone: Backbone, num_classes: int, activation: Activation = "softmax",
                 classifier: Classifier = "linear", cosine_scale: float = COSINE_SCALE,
                 grid_stride: int = GRID_STRIDE, freeze_before_level: int | None = -3,
                 freeze_batchnorm: bool = True, fsl: nn.Module | None = None) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive number of foreground classes, "
                             f"got {num_classes!r}")
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")
        if classifier not in ("linear", "cosine"):
            raise ValueError(f"classifier must be 'linear' or 'cosine', got {classifier!r}")
        if backbone.strides[-1] < grid_stride:
            raise ValueError(f"the backbone's last level has stride {backbone.strides[-1]}, finer "
                             f"than the logit grid stride {grid_stride}")
        self.backbone = backbone
        if freeze_before_level is not None:
            backbone.freeze_before_level(freeze_before_level)
        backbone.freeze_classifier()
        self.freeze_batchnorm = freeze_batchnorm
        self.num_classes = int(num_classes)
        self.activation = activation
        self.classifier_kind = classifier
        self.cosine_scale = float(cosine_scale)
        self.stride = int(grid_stride)
        self.channels = backbone.channels[-1]
        outputs = self.num_classes + (1 if activation == "softmax" else 0)
        self.classifier = nn.Conv2d(self.channels, outputs, 1, bias=False)
        self.fsl = fsl
        self.reset_head()

    @property
    def has_background(self) -> bool:
        """Whether the logits carry a background channel (at index 0)."""
        return self.activation == "softmax"

    def reset_head(self) -> None:
        nn.init.normal_(self.classifier.weight, std=0.01)

    def classifier_weight(self) -> Tensor:
        """``[C, D]`` the class vectors :math:`w_k` (background first with softmax)."""
        return self.classifier.weight.flatten(1)

    def classify(self, features: Tensor) -> Tensor:
        r"""Logits of feature vectors: ``[..., D]`` to ``[..., C]`` (pixels of a map moved to
        the last dimension, or BAP's pooled features and prototypes)."""
        weight = self.classifier_weight()
        if features.shape[-1] != weight.shape[1]:
            raise ValueError(f"features must be a [..., D] = [..., {weight.shape[1]}] tensor, got "
                             f"{describe(features)}")
        if self.classifier_kind == "cosine":
            return self.cosine_scale * F.normalize(features, dim=-1) @ F.normalize(weight, dim=1).T
        return features @ weight.T

    def forward(self, images: Tensor) -> CAMOutput:
        check_shape("images", images, "[B, 3, H, W]", shape=(None, 3, None, None))
        features = self.backbone(images)[-1]
        grid = (-(-images.shape[-2] // self.stride), -(-images.shape[-1] // self.stride))
        if tuple(features.shape[-2:]) != grid:
            features = F.interpolate(features, size=grid, mode="bilinear", align_corners=False)
        logits = self.classify(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return CAMOutput(logits, features)

    def class_activations(self, logits: Tensor, labels: Tensor | None = None) -> Tensor:
        r"""Non-negative foreground class activations from logits (CAM inference, §3).

        * sigmoid: :math:`\mathrm{ReLU}(s_k)`;
        * softmax: :math:`a_k` of the softmax over the background and the classes tagged in
          ``labels`` (every class when ``labels`` is ``None``).

        Absent classes (``labels == 0``) are zero.

        Shapes:
            - logits: ``[B, C, h, w]``; labels: ``[B, K]`` multi-hot or ``None``
            - output: ``[B, K, h, w]``
        """
        expected = self.num_classes + (1 if self.has_background else 0)
        check_shape("logits", logits, f"[B, C, h, w] = [B, {expected}, h, w]",
                    shape=(None, expected, None, None))
        present = None
        if labels is not None:
            check_shape("labels", labels, f"[B, K] = [{logits.shape[0]}, {self.num_classes}]",
                        shape=(logits.shape[0], self.num_classes))
            present = labels.to(device=logits.device, dtype=torch.bool)[:, :, None, None]
        if self.has_background:
            foreground = logits[:, 1:]
            if present is not None:
                foreground = foreground.masked_fill(~present, float("-inf"))
            return torch.softmax(torch.cat([logits[:, :1], foreground], dim=1), dim=1)[:, 1:]
        activations = torch.relu(logits)
        return activations if present is None else activations * present

r"""The affinity CNN of DESIGN.md §4 (eqs. 3.6–3.8): a backbone and the embedding head ``F_A``.

The backbone's last three levels (all at the output stride, 8 by default) are reduced by
1×1 convolutions to 64, 128 and 256 channels, concatenated and mixed by a 1×1 convolution into
the ``d_A = 448``-dimensional embedding ``F_A``. Pixel affinities are

.. math::
    D(i, j) = \exp\!\big(-\lVert F_A(i) - F_A(j) \rVert_1 / d_A\big)    \qquad (3.8)

(:func:`graphwsss.graphs.affinity_from_embedding`). The same network also gives the A²GNN's node
features: the concatenated backbone levels (post-ReLU, §5).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphwsss.models.backbone import Backbone, BackboneNetwork

REDUCED_CHANNELS = (64, 128, 256)
EMBEDDING_DIM = 448


def concat_levels(levels: list[Tensor]) -> Tensor:
    """Concatenate feature levels ``[B, C_l, h_l, w_l]`` at the size of the first (finest) one.

    Coarser levels are resized bilinearly (at output stride 8 the last three levels of every
    backbone already share one size, so nothing is resized).
    """
    size = levels[0].shape[-2:]
    return torch.cat([level if level.shape[-2:] == size else
                      F.interpolate(level, size=size, mode="bilinear", align_corners=False)
                      for level in levels], dim=1)


class AffinityNet(BackboneNetwork):
    """Backbone + affinity embedding head.

    Args:
        backbone: any :class:`~graphwsss.models.backbone.Backbone`; its last three levels are
            used.
        reduced_channels: output channels of the three 1×1 reductions (64, 128, 256).
        embedding_dim: ``d_A`` (448).
        freeze_batchnorm: keep the backbone's batch-norm statistics fixed in training (the
            usual choice with the small batches affinity training can afford).

    The layers before the last three levels and the ImageNet classifier are frozen
    (:meth:`~graphwsss.models.backbone.Backbone.freeze_before_level`).

    Shapes:
        - input: ``[B, 3, H, W]`` normalised by ``backbone.normalize``
        - output: ``(features [B, C, h, w], embedding [B, d_A, h, w])`` with ``h = ceil(H / s)``,
          ``s`` the stride of the last three levels, ``C`` the sum of their channels; the
          features are post-ReLU (non-negative, as eq. 3.15 expects).
    """

    def __init__(self, backbone: Backbone, reduced_channels: tuple[int, int, int] = REDUCED_CHANNELS,
                 embedding_dim: int = EMBEDDING_DIM, freeze_batchnorm: bool = True) -> None:
        super().__init__()
        if len(reduced_channels) != 3:
            raise ValueError(f"reduced_channels must have 3 entries, got {reduced_channels}")
        self.backbone = backbone
        backbone.freeze_before_level(-3)
        backbone.freeze_classifier()
        self.freeze_batchnorm = freeze_batchnorm
        self.stride = min(backbone.strides[-3:])
        self.channels = sum(backbone.channels[-3:])
        self.embedding_dim = embedding_dim
        self.reduce = nn.ModuleList(nn.Conv2d(channels, reduced, 1, bias=False)
                                    for channels, reduced in zip(backbone.channels[-3:],
                                                                 reduced_channels))
        self.reduce_norm = nn.ModuleList(nn.GroupNorm(4, reduced) for reduced in reduced_channels)
        self.mix = nn.Conv2d(sum(reduced_channels), embedding_dim, 1, bias=True)
        self.reset_head()

    def reset_head(self) -> None:
        for conv in self.reduce:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        nn.init.xavier_uniform_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        levels = self.backbone(images)[-3:]
        features = torch.relu(concat_levels(levels))
        size = levels[0].shape[-2:]
        reduced = []
        for level, conv, norm in zip(levels, self.reduce, self.reduce_norm):
            level = level if level.shape[-2:] == size else F.interpolate(
                level, size=size, mode="bilinear", align_corners=False)
            reduced.append(F.elu(norm(conv(level))))
        embedding = self.mix(torch.cat(reduced, dim=1))
        return features, embedding

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> tuple[Tensor, Tensor]:
        """One ``[H, W, 3]`` uint8 image to ``(features [C, h, w], embedding [d_A, h, w])``.

        Runs in evaluation mode on the network's device; the caller's mode is restored.
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        features, embedding = self(self.backbone.preprocess(image).unsqueeze(0).to(device))
        self.train(was_training)
        return features[0], embedding[0]

"""Node features from a backbone: the last three levels at the output stride (method §4–5)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from graphwsss.models.affinity import concat_levels
from graphwsss.models.registry import build_backbone
from graphwsss.settings import BackboneSettings


class FeatureExtractor:
    """Image ``[H, W, 3]`` uint8 to node features ``[C, ceil(H/s), ceil(W/s)]`` (s = stride).

    The last three backbone levels are concatenated (docs/method.md §4: "the concatenation of the
    backbone's last three stages at stride 8"); a coarser level is resized to the finest of the
    three. The values are post-ReLU (non-negative), as eq. 3.15's L1 normalisation expects.
    """

    def __init__(self, settings: BackboneSettings, device: torch.device) -> None:
        self.backbone = build_backbone(settings.name, weights=settings.weights,
                                       output_stride=settings.output_stride).eval().to(device)
        self.stride = min(self.backbone.strides[-3:])
        self.channels = sum(self.backbone.channels[-3:])
        self.device = device

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Tensor:
        inputs = self.backbone.preprocess(image).unsqueeze(0).to(self.device)
        return torch.relu(concat_levels(self.backbone(inputs)[-3:]))[0]

    def extract(self, image: np.ndarray) -> tuple[Tensor, None]:
        """``(features [C, h, w], None)``: the node source interface (no affinity embedding)."""
        return self(image), None

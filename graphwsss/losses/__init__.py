"""Losses of the A²GNN (docs/method.md §6, eqs. 3.20–3.28), one image at a time.

:math:`L = L_{ce} + L_{mp} + \\lambda_1 L_{reg}` (eq. 3.20): every function takes one image's
prediction grid of ``h x w`` nodes (node ``n = row * w + col``); a training loop sums them over
images. Consistency checking (eqs. 3.27–3.28) edits the seeds between steps.
"""

from graphwsss.losses.cam_loss import CAMLoss
from graphwsss.losses.consistency import consistency_check
from graphwsss.losses.cross_entropy import seed_cross_entropy, upsampled_seed_cross_entropy
from graphwsss.losses.feature_similarity import (FeatureSimilarityLoss, feature_similarity_loss,
                                                 fsl_activations)
from graphwsss.losses.multi_point import (boxes_to_grid, check_grid_boxes, multi_point_loss,
                                          select_multi_points)
from graphwsss.losses.regularization import PottsKernel, potts_kernel, potts_regularization

__all__ = [
    "seed_cross_entropy",
    "upsampled_seed_cross_entropy",
    "potts_kernel",
    "potts_regularization",
    "PottsKernel",
    "boxes_to_grid",
    "check_grid_boxes",
    "select_multi_points",
    "multi_point_loss",
    "consistency_check",
    "feature_similarity_loss",
    "fsl_activations",
    "FeatureSimilarityLoss",
    "CAMLoss",
]

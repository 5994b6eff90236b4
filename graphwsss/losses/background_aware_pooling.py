r"""Background-aware pooling (BAP, Oh et al. 2021; docs/method.md §3): box features pooled away
from background prototypes, and the BAP training loss of the CAM network on boxes."""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from graphwsss.utils.shapes import check_shape

__all__ = ["BAPPooled", "BoxMasks", "background_aware_pooling", "bap_loss"]


class BoxMasks(NamedTuple):
    """The boxes of a batch on the logit grid (BAP).

    Attributes:
        masks: ``[B, M, h, w]`` float in ``[0, 1]``: the share of each cell inside box ``m``
            (boxes padded to ``M`` per image with all-zero masks).
        classes: ``[B, M]`` long class id of each box (1..K), ``0`` for padding.
        background: ``[B, h, w]`` float in ``[0, 1]``: the share of each cell outside every box
            (and inside the image, not on a crop's padding).
    """

    masks: Tensor
    classes: Tensor
    background: Tensor


class BAPPooled(NamedTuple):
    """:func:`background_aware_pooling` results.

    Attributes:
        foreground: ``[B, M, D]`` :math:`(1 - A)`-weighted mean feature of each box.
        foreground_valid: ``[B, M]`` bool, the box covers some cell.
        prototypes: ``[B, N^2, D]`` mean background feature of each grid cell.
        prototype_valid: ``[B, N^2]`` bool, the cell holds some background.
        attention: ``[B, h, w]`` background attention :math:`A` in ``[0, 1]``.
    """

    foreground: Tensor
    foreground_valid: Tensor
    prototypes: Tensor
    prototype_valid: Tensor
    attention: Tensor


def background_aware_pooling(features: Tensor, box_masks: Tensor, background: Tensor,
                             grid_size: int = 4, eps: float = 1e-6) -> BAPPooled:
    r"""Background-aware pooling (BAP, Oh et al. 2021; docs/method.md §3).

    The logit grid is split into ``N x N`` cells :math:`G_j` (adaptive pooling bins). With the
    background weights :math:`b_i` (share of cell ``i`` outside all boxes), the background
    prototype of cell ``j`` and the background attention at cell ``i`` are

    .. math::
        q_j = \frac{\sum_{i \in G_j} b_i f_i}{\sum_{i \in G_j} b_i}, \qquad
        A_i = \frac{1}{|J|} \sum_{j \in J} \mathrm{ReLU}\bigl(\cos(f_i, q_j)\bigr)

    over the cells :math:`J` that hold background (:math:`A = 0` in an image without any). The
    foreground feature of box ``m`` with mask :math:`m_i` is the :math:`(1 - A)`-weighted mean

    .. math::
        r_m = \frac{\sum_i m_i (1 - A_i + \varepsilon) f_i}{\sum_i m_i (1 - A_i + \varepsilon)}

    (:math:`\varepsilon` keeps it defined where the whole box looks like background). Gradients
    flow through :math:`A` and the prototypes.

    Args:
        features: ``[B, D, h, w]``.
        box_masks: ``[B, M, h, w]`` float in ``[0, 1]`` (:attr:`BoxMasks.masks`).
        background: ``[B, h, w]`` float in ``[0, 1]`` (:attr:`BoxMasks.background`).
        grid_size: ``N`` (4 in training, 1 for pseudo labels, §3).
        eps: :math:`\varepsilon`.

    Returns:
        :class:`BAPPooled`.
    """
    check_shape("features", features, "[B, D, h, w]", dims=4, dtype="float")
    batch, _, height, width = features.shape
    check_shape("box_masks", box_masks, f"[B, M, h, w] = [{batch}, M, {height}, {width}]",
                shape=(batch, None, height, width))
    check_shape("background", background, f"[B, h, w] = [{batch}, {height}, {width}]",
                shape=(batch, height, width))
    if isinstance(grid_size, bool) or int(grid_size) != grid_size or grid_size < 1:
        raise ValueError(f"grid_size must be a positive integer, got {grid_size!r}")
    box_masks = box_masks.to(features.dtype)
    background = background.to(features.dtype)[:, None]                      # [B, 1, h, w]

    cell_background = F.adaptive_avg_pool2d(background, grid_size).flatten(1)  # [B, J]
    cell_sums = F.adaptive_avg_pool2d(features * background, grid_size).flatten(2)  # [B, D, J]
    prototype_valid = cell_background > 0
    prototypes = (cell_sums / cell_background.clamp_min(eps)[:, None]).transpose(1, 2)

    cosine = torch.einsum("bdhw,bjd->bjhw", F.normalize(features, dim=1),
                          F.normalize(prototypes, dim=2))
    counted = prototype_valid.to(features.dtype)[:, :, None, None]
    attention = ((torch.relu(cosine) * counted).sum(dim=1)
                 / counted.sum(dim=1).clamp_min(1.0))                        # [B, h, w]

    weights = box_masks * (1.0 - attention + eps)[:, None]                   # [B, M, h, w]
    foreground = (torch.einsum("bmhw,bdhw->bmd", weights, features)
                  / weights.sum(dim=(2, 3)).clamp_min(eps)[..., None])
    foreground_valid = box_masks.sum(dim=(2, 3)) > 0
    return BAPPooled(foreground, foreground_valid, prototypes, prototype_valid, attention)


def bap_loss(features: Tensor, boxes: BoxMasks, classify: Callable[[Tensor], Tensor],
             grid_size: int = 4) -> tuple[Tensor, dict[str, float]]:
    r"""BAP training loss (§3): cross-entropy of the cosine classifier on each box's foreground
    feature (target its class) plus cross-entropy on each background prototype (target 0), each
    averaged over its items.

    Args:
        features: ``[B, D, h, w]``.
        boxes: :class:`BoxMasks` on the same grid.
        classify: ``[..., D] -> [..., K + 1]`` logits, e.g. :meth:`CAMNet.classify` with its
            cosine classifier (:math:`\tau \cos(\cdot, w_k)`, :math:`\tau = 20`).
        grid_size: ``N`` of :func:`background_aware_pooling`.

    Returns:
        ``(loss, {"foreground": ..., "background": ...})``.
    """
    if not isinstance(boxes, BoxMasks):
        raise ValueError(f"boxes must be a BoxMasks, got {type(boxes).__name__}")
    if tuple(boxes.classes.shape) != tuple(boxes.masks.shape[:2]):
        raise ValueError(f"box classes {tuple(boxes.classes.shape)} do not match the masks "
                         f"{tuple(boxes.masks.shape)} ([B, M])")
    pooled = background_aware_pooling(features, boxes.masks, boxes.background, grid_size)
    classes = boxes.classes.to(features.device).long()
    used = pooled.foreground_valid & (classes > 0)
    foreground_logits = classify(pooled.foreground)                          # [B, M, K + 1]
    background_logits = classify(pooled.prototypes)                          # [B, J, K + 1]
    if foreground_logits.shape[-1] < 2:
        raise ValueError("classify must return K + 1 >= 2 logits (background at 0)")
    foreground = _mean_cross_entropy(foreground_logits, classes, used)
    background = _mean_cross_entropy(background_logits, torch.zeros_like(
        pooled.prototype_valid, dtype=torch.long), pooled.prototype_valid)
    return foreground + background, {"foreground": float(foreground.detach()),
                                     "background": float(background.detach())}


def _mean_cross_entropy(logits: Tensor, targets: Tensor, used: Tensor) -> Tensor:
    """Mean cross-entropy over the ``used`` items; a zero still tied to the graph when there is
    none (so that every parameter gets a gradient, as DistributedDataParallel requires)."""
    if not bool(used.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[used], targets[used])

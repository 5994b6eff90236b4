r"""Losses of the affinity CNN (docs/method.md §4, eqs. 3.9–3.13).

Pairs are the pixels ``i`` and their neighbours ``j`` within radius ``r`` on the stride-8 grid
(window offsets ``o``, :func:`graphwsss.graphs.radius_offsets`, self pair excluded).

* Classification (3.9–3.10), over pairs whose seeds are both known:

  .. math::
      L_{Ac} = \tfrac14 \operatorname{mean}_{P^+_{bg}} -\log D
             + \tfrac14 \operatorname{mean}_{P^+_{fg}} -\log D
             + \tfrac12 \operatorname{mean}_{P^-} -\log (1 - D)

  with ``P+_bg`` the pairs of two background seeds, ``P+_fg`` two seeds of the same class,
  ``P-`` two different seeds.

* Regularisation (3.11–3.12), over all pairs within the radius:

  .. math::
      L_{Ar} = \frac{1}{|P|} \sum_{(i,j) \in P} G(i, j)\, \lVert F_A(i) - F_A(j) \rVert_1 / d_A

  with ``G`` the RGB-XY Gaussian kernel (3.12, :func:`graphwsss.graphs.rgbxy_kernel`).

* Total (3.13): :math:`L_{Aff} = L_{Ac} + \lambda L_{Ar}`, ``λ = 3``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from graphwsss.graphs.grid import check_offsets, neighbor_valid, pairwise_grid, shift
from graphwsss.graphs.radius import embedding_distance
from graphwsss.graphs.rgbxy import rgbxy_kernel

IGNORE_INDEX = 255


def _check_grid_batch(name: str, value: Tensor, ndim: int = 4) -> None:
    if not isinstance(value, Tensor) or value.ndim != ndim:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a {ndim}-d tensor, got {shape}")


def affinity_pair_masks(seed_labels: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Label the pairs ``(i, i + o)`` of every node and offset (3.6–3.7).

    Args:
        seed_labels: ``[B, h, w]`` long seeds on the grid (255 = unknown).
        offsets: ``[O, 2]`` window without the self offset.

    Returns:
        ``(background_positive, foreground_positive, negative)``, each ``[B, O, h, w]`` bool;
        pairs with an unknown seed or a neighbour outside the grid are in none of them.
    """
    _check_grid_batch("seed_labels", seed_labels, 3)
    check_offsets(offsets)
    if seed_labels.is_floating_point():
        raise ValueError(f"seed_labels must be an integer tensor, got {seed_labels.dtype}")
    labels = seed_labels.long()
    neighbours = torch.stack([shift(labels, int(dy), int(dx), fill=IGNORE_INDEX)
                              for dy, dx in offsets.tolist()], dim=1)
    centres = labels.unsqueeze(1)
    known = (centres != IGNORE_INDEX) & (neighbours != IGNORE_INDEX)
    same = known & (centres == neighbours)
    return same & (centres == 0), same & (centres != 0), known & (centres != neighbours)


def affinity_classification_loss(affinity: Tensor, seed_labels: Tensor, offsets: Tensor,
                                 eps: float = 1e-5) -> Tensor:
    r""":math:`L_{Ac}` of eq. 3.10: background/4 + foreground/4 + negative/2.

    Args:
        affinity: ``[B, O, h, w]`` :math:`D(i, i + o)` in ``(0, 1]``.
        seed_labels: ``[B, h, w]`` long.
        offsets: ``[O, 2]`` (no self offset).
        eps: clamp of ``D`` away from 0 and 1 inside the logarithms.

    Returns:
        Scalar; a term with no pairs in the batch contributes 0.
    """
    _check_grid_batch("affinity", affinity)
    if affinity.shape[1] != offsets.shape[0] or affinity.shape[-2:] != seed_labels.shape[-2:]:
        raise ValueError(f"affinity {tuple(affinity.shape)} does not match offsets "
                         f"{tuple(offsets.shape)} and seeds {tuple(seed_labels.shape)}")
    background, foreground, negative = affinity_pair_masks(seed_labels, offsets)
    affinity = affinity.clamp(eps, 1 - eps)
    positive_loss = -torch.log(affinity)
    negative_loss = -torch.log1p(-affinity)
    return (_masked_mean(positive_loss, background) / 4 + _masked_mean(positive_loss, foreground) / 4
            + _masked_mean(negative_loss, negative) / 2)


def affinity_regularization(distance: Tensor, image_grid: Tensor, offsets: Tensor,
                            sigma_xy: float = 6.0, sigma_rgb: float = 0.1,
                            valid_mask: Tensor | None = None) -> Tensor:
    r""":math:`L_{Ar}` of eq. 3.11: the kernel-weighted mean embedding distance over all pairs.

    Args:
        distance: ``[B, O, h, w]`` :math:`\lVert F_A(i) - F_A(i+o) \rVert_1 / d_A`.
        image_grid: ``[B, 3, h, w]`` RGB in ``[0, 1]`` on the grid.
        offsets: ``[O, 2]`` (no self offset).
        sigma_xy, sigma_rgb: kernel bandwidths of eq. 3.12.
        valid_mask: optional ``[B, h, w]`` bool, ``False`` on padding (pairs touching it drop).

    Returns:
        Scalar: the sum over pairs divided by the number of pairs (inside the grid and valid).
    """
    _check_grid_batch("distance", distance)
    _check_grid_batch("image_grid", image_grid)
    kernel = rgbxy_kernel(image_grid, offsets, sigma_xy=sigma_xy, sigma_rgb=sigma_rgb)
    pairs = neighbor_valid(*distance.shape[-2:], offsets, distance.device).expand_as(distance)
    if valid_mask is not None:
        valid = valid_mask.to(distance.dtype).unsqueeze(1)
        pairs = pairs & (pairwise_grid(lambda c, n: (c * n)[..., 0, :, :], valid, offsets) > 0)
    kernel = kernel * pairs
    return (kernel.detach() * distance).sum() / pairs.sum().clamp_min(1)


def affinity_loss(embedding: Tensor, seed_labels: Tensor, image_grid: Tensor, offsets: Tensor,
                  reg_weight: float = 3.0, sigma_xy: float = 6.0, sigma_rgb: float = 0.1,
                  valid_mask: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    r""":math:`L_{Aff} = L_{Ac} + \lambda L_{Ar}` (3.13) from the embedding.

    Args:
        embedding: ``[B, d_A, h, w]`` :math:`F_A`.
        seed_labels: ``[B, h, w]`` long seeds on the grid (255 unknown, also on padding).
        image_grid: ``[B, 3, h, w]`` RGB in ``[0, 1]`` on the grid.
        offsets: ``[O, 2]`` window; the self offset is dropped here.
        reg_weight: ``λ`` (3).

    Returns:
        ``(loss, {"classification": ..., "regularization": ...})``.
    """
    _check_grid_batch("embedding", embedding)
    offsets = offsets[(offsets != 0).any(dim=1)]
    distance = embedding_distance(embedding, offsets)
    affinity = torch.exp(-distance)
    classification = affinity_classification_loss(affinity, seed_labels, offsets)
    regularization = affinity_regularization(distance, image_grid, offsets, sigma_xy, sigma_rgb,
                                             valid_mask)
    loss = classification + reg_weight * regularization
    return loss, {"classification": float(classification.detach()),
                  "regularization": float(regularization.detach())}


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    count = mask.sum()
    return torch.where(count > 0, (values * mask).sum() / count.clamp_min(1), values.new_zeros(()))

r"""Seed cross-entropy :math:`L_{ce}` of the A²GNN loss (docs/method.md §6, eq. 3.20–3.21).

With :math:`O = \mathrm{softmax}(Z)` the class probabilities of the logits :math:`Z`, :math:`S_0`
the background seeds (label 0) and :math:`S_+` the foreground seeds (labels ``1..K-1``), the
reference code form averages the two groups separately and sums them:

.. math::
    L_{ce} = -\frac{1}{|S_0|}\sum_{i \in S_0} \log O_i^{0}
             -\frac{1}{|S_+|}\sum_{i \in S_+} \log O_i^{y_i}

An empty group contributes 0. With ``split_background=False`` it is the plain mean over
:math:`S_0 \cup S_+`. Seeds labelled ``ignore_index`` (255) are unlabeled nodes.

With ``gce_q`` :math:`= q > 0` each seed's term :math:`-\log O_i^{y_i}` becomes the generalized
cross-entropy :math:`(1 - (O_i^{y_i})^q) / q` (Zhang and Sabuncu, NeurIPS 2018): its gradient is
that of the cross-entropy scaled by :math:`(O_i^{y_i})^q`, so seeds the model finds unlikely (the
wrong ones of a noisy seed map, once the rest are fitted) pull less. :math:`q \to 0` gives the
cross-entropy, :math:`q = 1` the mean absolute error.

The reference code computes :math:`L_{ce}` at image size: the grid logits are upsampled
bilinearly (``align_corners=False``) to the full-resolution seed map first (``image_size``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphwsss.data.records import BACKGROUND, IGNORE_INDEX
from graphwsss.utils.shapes import check_shape

__all__ = ["seed_cross_entropy", "upsampled_seed_cross_entropy"]


def seed_cross_entropy(logits: Tensor, seeds: Tensor, split_background: bool = True,
                       image_size: tuple[int, int] | None = None,
                       ignore_index: int = IGNORE_INDEX, gce_q: float = 0.0) -> Tensor:
    r"""Cross-entropy on the seeded nodes of one image (eq. 3.21, reference code form).

    Args:
        logits: ``[K, h, w]`` class logits :math:`Z` on the prediction grid (before softmax).
        seeds: ``[h, w]`` integer seed labels (0 background, ``1..K-1`` classes,
            ``ignore_index`` unlabeled); ``[H, W]`` when ``image_size`` is given.
        split_background: average background and foreground seeds separately and sum the two
            means (default, reference code); ``False`` gives the mean over all seeds.
        image_size: ``(H, W)``: upsample the logits bilinearly (``align_corners=False``) to
            this size before the loss, as the reference code does; ``seeds`` must be ``[H, W]``.
            ``None`` (default) computes the loss on the grid.
        ignore_index: the label of unlabeled nodes (default 255).
        gce_q: 0 (default) for the cross-entropy, ``q`` in ``(0, 1]`` for the generalized
            cross-entropy ``(1 - O^q) / q`` per seed.

    Returns:
        A scalar tensor; 0 (still attached to ``logits``' graph) when there are no seeds.

    Shapes:
        - logits: ``[K, h, w]`` float
        - seeds: ``[h, w]`` (or ``[H, W]`` = ``image_size``) integer
        - output: ``[]``
    """
    check_shape("logits", logits, "[K, h, w]", dims=3)
    check_shape("seeds", seeds, "[h, w]", dims=2, dtype="integer")
    if image_size is not None:
        image_size = (int(image_size[0]), int(image_size[1]))
        if tuple(seeds.shape) != image_size:
            raise ValueError(f"seeds shape {tuple(seeds.shape)} must equal image_size {image_size}")
        if tuple(logits.shape[1:]) != image_size:
            logits = F.interpolate(logits[None], size=image_size, mode="bilinear",
                                   align_corners=False)[0]
    if tuple(seeds.shape) != tuple(logits.shape[1:]):
        raise ValueError(f"seeds shape {tuple(seeds.shape)} does not match the logits grid "
                         f"{tuple(logits.shape[1:])}")

    target = seeds.to(device=logits.device, dtype=torch.long)
    # Per-node loss, 0 on unlabeled nodes; masked sums keep the graph and need no host sync.
    node_loss = F.cross_entropy(logits[None], target[None], ignore_index=ignore_index,
                                reduction="none")[0]
    if gce_q > 0:        # (1 - O^q) / q with O = exp(-CE); unlabeled nodes stay 0
        node_loss = -torch.expm1(-gce_q * node_loss) / gce_q
    labeled = target != ignore_index
    if not split_background:
        return _masked_mean(node_loss, labeled)
    background = target == BACKGROUND
    return _masked_mean(node_loss, background) + _masked_mean(node_loss, labeled & ~background)


def upsampled_seed_cross_entropy(logits: Tensor, seeds_full: Tensor,
                                 image_size: tuple[int, int] | None = None,
                                 split_background: bool = True,
                                 ignore_index: int = IGNORE_INDEX) -> Tensor:
    """:func:`seed_cross_entropy` at image size (reference code): ``logits`` ``[K, h, w]`` are
    upsampled bilinearly to ``image_size`` (default ``seeds_full.shape``) and compared with the
    full-resolution seeds ``seeds_full`` ``[H, W]``. Returns a scalar tensor."""
    if image_size is None:
        image_size = tuple(seeds_full.shape[-2:])
    return seed_cross_entropy(logits, seeds_full, split_background=split_background,
                              image_size=image_size, ignore_index=ignore_index)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask``; 0 (with gradient graph) when the mask is empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)

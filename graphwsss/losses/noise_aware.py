r"""Cross-entropy and the noise-aware loss (NAL, BANA) of the segmentation network
(docs/method.md §9).

Per training pixel ``p``: ``Y(p)`` the pseudo label (after CRF; 255 ignored) and ``Y'(p)`` a
second estimate (the propagation's arg-max before CRF). Reliable pixels
:math:`S = \{p : Y(p) = Y'(p)\}`, unreliable :math:`\bar S` the other labelled pixels.

* CE: :math:`L = L_{ce}` over every labelled pixel of ``Y``.
* NAL: :math:`L = L_{ce}(S) + \lambda L_{wce}(\bar S)` with

  .. math::

     L_{wce}(\bar S) = \frac{1}{|\bar S|} \sum_{p \in \bar S} \sigma(p) \cdot
         \bigl(-\log H_{Y(p)}(p)\bigr), \qquad \sigma(p) = \alpha(p)^\gamma, \qquad
     \alpha(p) = \frac{D_{c^*}(p)}{\max_c D_c(p)}, \qquad D_c(p) = 1 + \cos(\phi(p), W_c),

  :math:`c^* = Y(p)`; :math:`\sigma` carries no gradient. Both means are over pixels (a set with
  no pixel contributes 0). Defaults :math:`\gamma = 7`, :math:`\lambda = 0.1`.

When ``Y' = Y`` everywhere :math:`\bar S` is empty and NAL equals CE.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from graphwsss.data.records import IGNORE_INDEX


def confidence(cosines: Tensor, labels: Tensor, gamma: float) -> Tensor:
    """:math:`\\sigma = \\alpha^\\gamma` per pixel, detached.

    Args:
        cosines: ``[B, C, H, W]`` :math:`\\cos(\\phi(p), W_c)`.
        labels: ``[B, H, W]`` int64 class ids (255 anywhere: its value there is meaningless).
        gamma: the exponent :math:`\\gamma`.

    Returns:
        ``[B, H, W]`` float in ``[0, 1]``.
    """
    distances = 1.0 + cosines.detach()
    index = labels.clamp(0, cosines.shape[1] - 1).unsqueeze(1)
    alpha = distances.gather(1, index).squeeze(1) / distances.amax(dim=1).clamp_min(1e-12)
    return alpha.clamp(0.0, 1.0) ** gamma


def segmentation_loss(cosines: Tensor, labels: Tensor, second: Tensor | None, tau: float,
                      loss: str = "nal", gamma: float = 7.0, weight: float = 0.1
                      ) -> tuple[Tensor, dict[str, float]]:
    """CE or NAL of one batch (module docstring).

    Args:
        cosines: ``[B, C, h, w]`` cosines of the network; upsampled bilinearly to the labels'
            size when it differs.
        labels: ``[B, H, W]`` int64 pseudo labels ``Y`` (255 ignored).
        second: ``[B, H, W]`` int64 second estimate ``Y'``, or ``None`` (``Y' = Y``).
        tau: scale of the logits (``tau * cosines``).
        loss: ``"ce"`` or ``"nal"``.
        gamma, weight: :math:`\\gamma` and :math:`\\lambda` of NAL.

    Returns:
        ``(loss, logs)``; logs hold ``ce`` (the reliable part under NAL), ``wce`` and
        ``unreliable`` (the share of labelled pixels outside S) for NAL.
    """
    if loss not in ("ce", "nal"):
        raise ValueError(f"loss must be 'ce' or 'nal', got {loss!r}")
    if cosines.shape[-2:] != labels.shape[-2:]:
        cosines = F.interpolate(cosines, size=labels.shape[-2:], mode="bilinear",
                                align_corners=False)
    log_probs = F.log_softmax(tau * cosines, dim=1)
    labelled = labels != IGNORE_INDEX
    pixel_loss = F.nll_loss(log_probs, labels.masked_fill(~labelled, 0), reduction="none")
    if loss == "ce" or second is None:
        value = _mean(pixel_loss, labelled)
        return value, {"ce": float(value.detach())}
    reliable = labelled & (labels == second)
    unreliable = labelled & ~reliable
    sigma = confidence(cosines, labels, gamma)
    ce = _mean(pixel_loss, reliable)
    wce = _mean(sigma * pixel_loss, unreliable)
    share = float(unreliable.sum()) / max(1, int(labelled.sum()))
    return ce + weight * wce, {"ce": float(ce.detach()), "wce": float(wce.detach()),
                               "unreliable": share}


def _mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask``; 0 (with a gradient path) when the mask is empty."""
    count = mask.sum()
    return (values * mask).sum() / count.clamp_min(1)

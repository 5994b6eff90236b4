r"""Global pooling of CAM logits and its losses (docs/method.md §3): GAP and GMP, and the targets
and checks every CAM pooling shares.

A CAM network gives logits :math:`s \in \mathbb{R}^{C \times h \times w}` per image, trained
against the image's tags :math:`y \in \{0, 1\}^K` (foreground classes; ``labels[:, k]`` is class
id ``k + 1``):

* ``gap``: :math:`\hat y_k = \sigma(\mathrm{mean}_{ij} s_{ijk})`, ``K`` sigmoid logits (or
  ``K + 1``, the background then a class with target 1);
* ``gmp``: :math:`\hat y_k = \max_{ij} a_{ijk}`, :math:`a = \mathrm{softmax}(s)` over ``K + 1``
  classes, background at channel 0 with target 1.

Every function takes an optional ``valid`` mask ``[B, h, w]`` (``False`` on the padding of a
training crop): averages and maxima then use the valid cells only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphwsss.utils.shapes import check_shape

__all__ = ["binary_targets", "check_logits", "check_valid", "gap", "gap_loss", "gmp", "gmp_loss",
           "softmax_binary_cross_entropy"]


def gap(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    r"""Global average pooling of the logits, :math:`\bar s_k = \mathrm{mean}_{ij} s_{ijk}` (§3).

    Shapes:
        - logits: ``[B, C, h, w]``; valid: ``[B, h, w]`` bool or ``None``
        - output: ``[B, C]`` (the GAP prediction is :math:`\sigma(\bar s)`)
    """
    check_logits(logits)
    if valid is None:
        return logits.mean(dim=(2, 3))
    weight = check_valid(valid, logits).to(logits.dtype)[:, None]
    return (logits * weight).sum(dim=(2, 3)) / weight.sum(dim=(2, 3)).clamp_min(1.0)


def gmp(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    r"""Global max pooling of the softmax, :math:`\hat y_k = \max_{ij} a_{ijk}` with
    :math:`a = \operatorname{softmax}(s)` over the ``K + 1`` classes, background included (§3).

    Shapes:
        - logits: ``[B, K + 1, h, w]``; valid: ``[B, h, w]`` bool or ``None``
        - output: ``[B, K + 1]`` probabilities (background at 0)
    """
    check_logits(logits, minimum_channels=2)
    probabilities = torch.softmax(logits, dim=1)
    if valid is not None:
        probabilities = probabilities * check_valid(valid, logits)[:, None]
    return probabilities.amax(dim=(2, 3))


def gap_loss(logits: Tensor, labels: Tensor, valid: Tensor | None = None) -> Tensor:
    r"""GAP baseline (§3): :math:`\mathrm{BCE}(y, \sigma(\bar s))` averaged over classes and
    images. With ``K + 1`` (softmax) logits the background is a class with target 1.

    Shapes: logits ``[B, K(+1), h, w]``; labels ``[B, K]`` multi-hot; output ``[]``.
    """
    targets = binary_targets(labels, logits)
    return F.binary_cross_entropy_with_logits(gap(logits, valid), targets)


def gmp_loss(logits: Tensor, labels: Tensor, valid: Tensor | None = None) -> Tensor:
    r"""GMP (§3): :math:`\mathrm{BCE}(y, \max_{ij} a_{ij})` over the ``K + 1`` softmax classes,
    background target 1.

    The maximum's gradient reaches only its cell, so the loss is evaluated there in log space
    (:func:`softmax_binary_cross_entropy`): a softmax saturated to 1 in float32 would otherwise
    give ``1 / (1 - a)`` gradients of 1e12 and blow the training up.

    Shapes: logits ``[B, K + 1, h, w]``; labels ``[B, K]``; output ``[]``.
    """
    check_logits(logits, minimum_channels=2)
    targets = binary_targets(labels, logits, background=True)
    probabilities = torch.softmax(logits.detach(), dim=1)
    if valid is not None:
        probabilities = probabilities * check_valid(valid, logits)[:, None]
    strongest = probabilities.flatten(2).argmax(dim=2, keepdim=True)         # [B, K + 1, 1]
    classes = torch.arange(logits.shape[1], device=logits.device)
    return softmax_binary_cross_entropy(logits, strongest, classes, targets)


def binary_targets(labels: Tensor, logits: Tensor, background: bool | None = None) -> Tensor:
    """Float targets on the logits' device: ``[B, K]``, or ``[B, K + 1]`` with background 1 in
    front when the logits have one more channel than ``labels`` (or ``background`` says so)."""
    targets = labels.to(device=logits.device, dtype=logits.dtype)
    if background is None:
        background = logits.shape[1] == labels.shape[1] + 1
    if background:
        targets = torch.cat([torch.ones_like(targets[:, :1]), targets], dim=1)
    if targets.shape[1] != logits.shape[1]:
        raise ValueError(f"labels [B, {labels.shape[1]}] do not fit logits with "
                         f"{logits.shape[1]} channels")
    return targets


def softmax_binary_cross_entropy(logits: Tensor, indices: Tensor, classes: Tensor,
                                  targets: Tensor) -> Tensor:
    r"""Mean binary cross-entropy of softmax probabilities :math:`a_c` at given cells, in log
    space: :math:`\log a_c = s_c - \operatorname{LSE}(s)` and
    :math:`\log(1 - a_c) = \operatorname{LSE}_{j \ne c}(s_j) - \operatorname{LSE}(s)`.

    Args:
        logits: ``[B, C, h, w]``.
        indices: ``[B, R, S]`` flat cells (``row * w + col``), ``S`` per row ``r``.
        classes: ``[R]`` the channel ``c`` of each row.
        targets: ``[B, R]`` in ``[0, 1]``.
    """
    batch, channels = logits.shape[:2]
    rows, samples = indices.shape[1:]
    flat = logits.flatten(2)                                                  # [B, C, N]
    at_cells = flat.unsqueeze(1).expand(batch, rows, channels, flat.shape[2]).gather(
        3, indices.unsqueeze(2).expand(batch, rows, channels, samples))      # [B, R, C, S]
    own = F.one_hot(classes, channels).to(torch.bool)[None, :, :, None]      # [1, R, C, 1]
    total = torch.logsumexp(at_cells, dim=2)                                  # [B, R, S]
    log_probability = (at_cells * own).sum(dim=2) - total
    log_complement = torch.logsumexp(at_cells.masked_fill(own, float("-inf")), dim=2) - total
    targets = targets.to(logits.dtype)[:, :, None]
    return -(targets * log_probability + (1.0 - targets) * log_complement).mean()


def check_logits(logits: Tensor, minimum_channels: int = 1) -> None:
    """Raise ``ValueError`` unless ``logits`` is a float ``[B, C, h, w]`` tensor with at least
    ``minimum_channels`` channels and a non-empty grid."""
    check_shape("logits", logits, "[B, C, h, w]", dims=4, dtype="float")
    if logits.shape[1] < minimum_channels or 0 in logits.shape:
        raise ValueError(f"logits need at least {minimum_channels} channel(s) and a non-empty "
                         f"grid, got shape {tuple(logits.shape)}")


def check_valid(valid: Tensor, logits: Tensor) -> Tensor:
    """``valid`` checked to be ``[B, h, w]`` for ``logits`` ``[B, C, h, w]``, as a bool mask on
    the logits' device."""
    expected = (logits.shape[0], *logits.shape[2:])
    check_shape("valid", valid, f"[B, h, w] = {list(expected)}", shape=expected, what="mask")
    return valid.to(device=logits.device, dtype=torch.bool)

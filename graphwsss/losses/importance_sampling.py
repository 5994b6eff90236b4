r"""Importance sampling of CAM logits and its losses (docs/method.md §3).

* ``is`` (multinomial, the icam code): for each foreground class ``k``, cells
  :math:`i^* \sim a_{\cdot k}`, :math:`a = \mathrm{softmax}(s)` over ``K + 1`` classes;
  :math:`\tilde y_k = a_{i^* k}`;
* ``is_binomial`` (the hfpl code): cells :math:`i^* \sim \sigma(s_{\cdot k}) + 10^{-5}` for each
  of ``K`` sigmoid logits; :math:`s_{i^* k}` goes into BCE-with-logits.

Each loss is :math:`(1 - \lambda)` times the GAP loss plus :math:`\lambda` times the loss at the
samples. Sampling draws from an optional ``torch.Generator`` (on the logits' device) so that it
is reproducible, and never draws a cell outside the optional ``valid`` mask ``[B, h, w]``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from graphwsss.losses.global_pooling import (binary_targets, check_logits, check_valid, gap_loss,
                                             softmax_binary_cross_entropy)

__all__ = ["IS_DEFAULTS", "SampledScores", "binomial_importance_sampling",
           "binomial_importance_sampling_loss", "importance_sampling", "importance_sampling_loss",
           "pooling_defaults"]

# λ and the number of samples of each variant when the settings leave them unset (cam.is_lambda
# and cam.is_samples None): the published codes' values (method §3: icam / hfpl).
IS_DEFAULTS: dict[str, tuple[float, int]] = {"is": (0.8, 100), "is_binomial": (0.2, 10)}
# Not a method parameter: the hfpl code's floor of the binomial sampling weights, which keeps a
# class whose sigmoid underflows everywhere sampleable.
BINOMIAL_FLOOR = 1e-5


class SampledScores(NamedTuple):
    """Scores at sampled cells: ``values`` ``[B, K, S]`` (with gradient) and the flat cell
    ``indices`` ``[B, K, S]`` (long, ``row * w + col``, no gradient)."""

    values: Tensor
    indices: Tensor


def pooling_defaults(pooling: str, is_lambda: float | None = None,
                     is_samples: int | None = None) -> tuple[float, int]:
    """``(λ, samples)`` of an importance-sampling pooling: the given values, or §3's defaults
    (``is``: 0.8, 100; ``is_binomial``: 0.2, 10)."""
    if pooling not in IS_DEFAULTS:
        raise ValueError(f"pooling {pooling!r} does not sample; sampling poolings: "
                         f"{sorted(IS_DEFAULTS)}")
    default_lambda, default_samples = IS_DEFAULTS[pooling]
    return (default_lambda if is_lambda is None else float(is_lambda),
            default_samples if is_samples is None else int(is_samples))


def importance_sampling(logits: Tensor, num_samples: int = 100,
                        generator: torch.Generator | None = None,
                        valid: Tensor | None = None) -> SampledScores:
    r"""Multinomial importance sampling (§3): for each foreground class ``k``, ``S`` cells
    :math:`i^* \sim p_k(i) = a_{ik} / \sum_j a_{jk}` drawn with replacement
    (``torch.multinomial``), with :math:`a = \operatorname{softmax}(s)` over the ``K + 1``
    classes; :math:`\tilde y_k = a_{i^* k}`.

    The sampling distribution is detached, so the sampled index carries no gradient; the
    gathered :math:`a_{i^* k}` does (through the softmax, to every class logit of cell
    :math:`i^*` and only there).

    Args:
        logits: ``[B, K + 1, h, w]``, background at channel 0.
        num_samples: ``S >= 1`` (100 by default; one sample works as well, §3).
        generator: a ``torch.Generator`` on the logits' device, for reproducible draws.
        valid: ``[B, h, w]`` bool; invalid cells are never drawn.

    Returns:
        :class:`SampledScores`: probabilities ``[B, K, S]`` in ``[0, 1]`` and cell indices.
    """
    check_logits(logits, minimum_channels=2)
    probabilities = torch.softmax(logits, dim=1)[:, 1:]
    return _sample(probabilities, probabilities.detach(), num_samples, generator, valid)


def binomial_importance_sampling(logits: Tensor, num_samples: int = 10,
                                 generator: torch.Generator | None = None,
                                 valid: Tensor | None = None) -> SampledScores:
    r"""Binomial importance sampling (§3, hfpl): for each class ``k`` independently, ``S`` cells
    drawn with replacement with probability proportional to :math:`\sigma(s_{ik}) + 10^{-5}`;
    the logits :math:`s_{i^* k}` at the samples are returned (they go into BCE-with-logits).

    The index carries no gradient, the gathered logit does.

    Args:
        logits: ``[B, K, h, w]`` (sigmoid classifier, no background channel).
        num_samples: ``S >= 1`` (10 by default).
        generator, valid: as :func:`importance_sampling`.

    Returns:
        :class:`SampledScores`: logits ``[B, K, S]`` and cell indices.
    """
    check_logits(logits)
    weights = torch.sigmoid(logits.detach()) + BINOMIAL_FLOOR
    return _sample(logits, weights, num_samples, generator, valid)


def _sample(scores: Tensor, weights: Tensor, num_samples: int,
            generator: torch.Generator | None, valid: Tensor | None) -> SampledScores:
    """Draw ``num_samples`` cells per (image, class) from ``weights`` and gather ``scores``."""
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if generator is not None and generator.device != scores.device:
        raise ValueError(f"generator is on {generator.device}, the logits on {scores.device}; "
                         f"create it with torch.Generator(device=logits.device)")
    batch, classes = scores.shape[:2]
    if valid is not None:
        weights = weights * check_valid(valid, scores)[:, None].to(weights.dtype)
    weights = weights.flatten(2).reshape(batch * classes, -1)
    # A row without mass (an all-invalid crop, or underflow) falls back to uniform.
    weights = weights + (weights.sum(dim=1, keepdim=True) <= 0).to(weights.dtype)
    indices = torch.multinomial(weights, int(num_samples), replacement=True, generator=generator)
    indices = indices.view(batch, classes, int(num_samples))
    return SampledScores(scores.flatten(2).gather(2, indices), indices)


def importance_sampling_loss(logits: Tensor, labels: Tensor, is_lambda: float = 0.8,
                             num_samples: int = 100, generator: torch.Generator | None = None,
                             valid: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    r"""Multinomial IS loss (§3): :math:`L = (1 - \lambda) L_{ce}(y, \hat y_{GAP}) +
    \lambda L_{ce}(y, \tilde y)`.

    The GAP term is :func:`gap_loss` over the ``K + 1`` logits (background target 1); the IS term
    is the binary cross-entropy of every foreground class (present and absent) at each of the
    ``S`` samples of :func:`importance_sampling`, averaged over the samples (the Monte-Carlo
    estimate of its expectation under :math:`p_k`), computed in log space from the logits at the
    samples (:func:`softmax_binary_cross_entropy`; the same value as the BCE of
    :math:`\tilde y`, without its float32 overflow where the softmax saturates).

    Returns:
        ``(loss, {"gap": ..., "sampled": ...})``.
    """
    _check_lambda(is_lambda)
    gap_term = gap_loss(logits, labels, valid)
    indices = importance_sampling(logits, num_samples, generator, valid).indices
    classes = torch.arange(1, logits.shape[1], device=logits.device)
    sampled_term = softmax_binary_cross_entropy(logits, indices, classes,
                                                 binary_targets(labels, logits)[:, 1:])
    loss = (1.0 - is_lambda) * gap_term + is_lambda * sampled_term
    return loss, {"gap": float(gap_term.detach()), "sampled": float(sampled_term.detach())}


def binomial_importance_sampling_loss(logits: Tensor, labels: Tensor, is_lambda: float = 0.2,
                                      num_samples: int = 10,
                                      generator: torch.Generator | None = None,
                                      valid: Tensor | None = None
                                      ) -> tuple[Tensor, dict[str, float]]:
    r"""Binomial IS loss (§3, hfpl): :math:`(1 - \lambda)\, \mathrm{BCE}(y, \sigma(\bar s)) +
    \lambda\, \mathrm{BCE}(y, \sigma(s_{i^*}))`, the second averaged over the ``S`` samples of
    :func:`binomial_importance_sampling` (defaults λ = 0.2, S = 10).

    Returns:
        ``(loss, {"gap": ..., "sampled": ...})``.
    """
    _check_lambda(is_lambda)
    gap_term = gap_loss(logits, labels, valid)
    sampled = binomial_importance_sampling(logits, num_samples, generator, valid).values
    targets = binary_targets(labels, logits)[:, :, None].expand_as(sampled)
    sampled_term = F.binary_cross_entropy_with_logits(sampled, targets)
    loss = (1.0 - is_lambda) * gap_term + is_lambda * sampled_term
    return loss, {"gap": float(gap_term.detach()), "sampled": float(sampled_term.detach())}


def _check_lambda(is_lambda: float) -> None:
    if not 0.0 <= is_lambda <= 1.0:
        raise ValueError(f"is_lambda must lie in [0, 1], got {is_lambda}")

r"""Pixel-to-image aggregations of the CAM seed network and their losses (docs/method.md §3).

A CAM network gives logits :math:`s \in \mathbb{R}^{C \times h \times w}` per image; these
functions turn them into image-level predictions trained against the image's tags
:math:`y \in \{0, 1\}^K` (foreground classes; ``labels[:, k]`` is class id ``k + 1``):

==================  =========================================================  ============
pooling             image-level prediction                                     logits
==================  =========================================================  ============
``gap``             :math:`\hat y_k = \sigma(\mathrm{mean}_{ij} s_{ijk})`      ``K``
``gmp``             :math:`\hat y_k = \max_{ij} a_{ijk}`, :math:`a = \mathrm{softmax}(s)`   ``K + 1``
``is``              :math:`\tilde y_k = a_{i^* k}`, :math:`i^* \sim a_{\cdot k}` (multinomial)   ``K + 1``
``is_binomial``     :math:`s_{i^* k}`, :math:`i^* \sim \sigma(s_{\cdot k}) + 10^{-5}`     ``K``
``bap``             cosine classifier on box features and background prototypes  ``K + 1``
==================  =========================================================  ============

With a softmax (``K + 1`` logits, background at channel 0) the background is a class present in
every image: its target is 1 wherever background enters a loss (the GAP term of ``is`` and the
GMP loss); the sampling term of ``is`` covers the foreground classes only, as §3 states.

Every function takes an optional ``valid`` mask ``[B, h, w]`` (``False`` on the padding of a
training crop): averages, maxima and sampling distributions then use the valid cells only.
Sampling draws from an optional ``torch.Generator`` (on the logits' device) so that it is
reproducible. :func:`cam_loss` dispatches on the pooling name and adds the feature similarity
loss (eqs. 9–12, :mod:`graphwsss.losses.feature_similarity`).
"""

from __future__ import annotations

from typing import Callable, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphwsss.losses.feature_similarity import FSL_VARIANT_WEIGHTS, fsl_activations

__all__ = [
    "POOLINGS",
    "SOFTMAX_POOLINGS",
    "BoxMasks",
    "BAPPooled",
    "SampledScores",
    "background_aware_pooling",
    "bap_loss",
    "binomial_importance_sampling",
    "binomial_importance_sampling_loss",
    "cam_loss",
    "gap",
    "gap_loss",
    "gmp",
    "gmp_loss",
    "importance_sampling",
    "importance_sampling_loss",
    "pooling_defaults",
]

Pooling = Literal["gap", "gmp", "is", "is_binomial", "bap"]
POOLINGS: tuple[str, ...] = ("gap", "gmp", "is", "is_binomial", "bap")
# Poolings whose network has K + 1 logits with a softmax over classes (background at 0).
SOFTMAX_POOLINGS: frozenset[str] = frozenset({"gmp", "is", "bap"})
# λ and the number of samples of each importance-sampling variant (method §3: icam / hfpl code).
IS_DEFAULTS: dict[str, tuple[float, int]] = {"is": (0.8, 100), "is_binomial": (0.2, 10)}
BINOMIAL_FLOOR = 1e-5
BAP_SCALE = 20.0
BAP_GRID = 4


class SampledScores(NamedTuple):
    """Scores at sampled cells: ``values`` ``[B, K, S]`` (with gradient) and the flat cell
    ``indices`` ``[B, K, S]`` (long, ``row * w + col``, no gradient)."""

    values: Tensor
    indices: Tensor


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


# --------------------------------------------------------------------------------------------
# Aggregations
# --------------------------------------------------------------------------------------------

def gap(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    r"""Global average pooling of the logits, :math:`\bar s_k = \mathrm{mean}_{ij} s_{ijk}` (§3).

    Shapes:
        - logits: ``[B, C, h, w]``; valid: ``[B, h, w]`` bool or ``None``
        - output: ``[B, C]`` (the GAP prediction is :math:`\sigma(\bar s)`)
    """
    _check_logits(logits)
    if valid is None:
        return logits.mean(dim=(2, 3))
    weight = _check_valid(valid, logits).to(logits.dtype)[:, None]
    return (logits * weight).sum(dim=(2, 3)) / weight.sum(dim=(2, 3)).clamp_min(1.0)


def gmp(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    r"""Global max pooling of the softmax, :math:`\hat y_k = \max_{ij} a_{ijk}` with
    :math:`a = \operatorname{softmax}(s)` over the ``K + 1`` classes, background included (§3).

    Shapes:
        - logits: ``[B, K + 1, h, w]``; valid: ``[B, h, w]`` bool or ``None``
        - output: ``[B, K + 1]`` probabilities (background at 0)
    """
    _check_logits(logits, minimum_channels=2)
    probabilities = torch.softmax(logits, dim=1)
    if valid is not None:
        probabilities = probabilities * _check_valid(valid, logits)[:, None]
    return probabilities.amax(dim=(2, 3))


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
    _check_logits(logits, minimum_channels=2)
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
    _check_logits(logits)
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
        weights = weights * _check_valid(valid, scores)[:, None].to(weights.dtype)
    weights = weights.flatten(2).reshape(batch * classes, -1)
    # A row without mass (an all-invalid crop, or underflow) falls back to uniform.
    weights = weights + (weights.sum(dim=1, keepdim=True) <= 0).to(weights.dtype)
    indices = torch.multinomial(weights, int(num_samples), replacement=True, generator=generator)
    indices = indices.view(batch, classes, int(num_samples))
    return SampledScores(scores.flatten(2).gather(2, indices), indices)


def background_aware_pooling(features: Tensor, box_masks: Tensor, background: Tensor,
                             grid_size: int = BAP_GRID, eps: float = 1e-6) -> BAPPooled:
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
    if not isinstance(features, Tensor) or features.ndim != 4 or not features.is_floating_point():
        raise ValueError(f"features must be a float [B, D, h, w] tensor, got {_describe(features)}")
    batch, _, height, width = features.shape
    if (not isinstance(box_masks, Tensor) or box_masks.ndim != 4
            or box_masks.shape[0] != batch or tuple(box_masks.shape[2:]) != (height, width)):
        raise ValueError(f"box_masks must be [B, M, h, w] = [{batch}, M, {height}, {width}], got "
                         f"{_describe(box_masks)}")
    if not isinstance(background, Tensor) or tuple(background.shape) != (batch, height, width):
        raise ValueError(f"background must be [B, h, w] = [{batch}, {height}, {width}], got "
                         f"{_describe(background)}")
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


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------

def gap_loss(logits: Tensor, labels: Tensor, valid: Tensor | None = None) -> Tensor:
    r"""GAP baseline (§3): :math:`\mathrm{BCE}(y, \sigma(\bar s))` averaged over classes and
    images. With ``K + 1`` (softmax) logits the background is a class with target 1.

    Shapes: logits ``[B, K(+1), h, w]``; labels ``[B, K]`` multi-hot; output ``[]``.
    """
    targets = _targets(labels, logits)
    return F.binary_cross_entropy_with_logits(gap(logits, valid), targets)


def gmp_loss(logits: Tensor, labels: Tensor, valid: Tensor | None = None) -> Tensor:
    r"""GMP (§3): :math:`\mathrm{BCE}(y, \max_{ij} a_{ij})` over the ``K + 1`` softmax classes,
    background target 1.

    The maximum's gradient reaches only its cell, so the loss is evaluated there in log space
    (:func:`_softmax_binary_cross_entropy`): a softmax saturated to 1 in float32 would otherwise
    give ``1 / (1 - a)`` gradients of 1e12 and blow the training up.

    Shapes: logits ``[B, K + 1, h, w]``; labels ``[B, K]``; output ``[]``.
    """
    _check_logits(logits, minimum_channels=2)
    targets = _targets(labels, logits, background=True)
    probabilities = torch.softmax(logits.detach(), dim=1)
    if valid is not None:
        probabilities = probabilities * _check_valid(valid, logits)[:, None]
    strongest = probabilities.flatten(2).argmax(dim=2, keepdim=True)         # [B, K + 1, 1]
    classes = torch.arange(logits.shape[1], device=logits.device)
    return _softmax_binary_cross_entropy(logits, strongest, classes, targets)


def importance_sampling_loss(logits: Tensor, labels: Tensor, is_lambda: float = 0.8,
                             num_samples: int = 100, generator: torch.Generator | None = None,
                             valid: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    r"""Multinomial IS loss (§3): :math:`L = (1 - \lambda) L_{ce}(y, \hat y_{GAP}) +
    \lambda L_{ce}(y, \tilde y)`.

    The GAP term is :func:`gap_loss` over the ``K + 1`` logits (background target 1); the IS term
    is the binary cross-entropy of every foreground class (present and absent) at each of the
    ``S`` samples of :func:`importance_sampling`, averaged over the samples (the Monte-Carlo
    estimate of its expectation under :math:`p_k`), computed in log space from the logits at the
    samples (:func:`_softmax_binary_cross_entropy`; the same value as the BCE of
    :math:`\tilde y`, without its float32 overflow where the softmax saturates).

    Returns:
        ``(loss, {"gap": ..., "sampled": ...})``.
    """
    _check_lambda(is_lambda)
    gap_term = gap_loss(logits, labels, valid)
    indices = importance_sampling(logits, num_samples, generator, valid).indices
    classes = torch.arange(1, logits.shape[1], device=logits.device)
    sampled_term = _softmax_binary_cross_entropy(logits, indices, classes,
                                                 _targets(labels, logits)[:, 1:])
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
    targets = _targets(labels, logits)[:, :, None].expand_as(sampled)
    sampled_term = F.binary_cross_entropy_with_logits(sampled, targets)
    loss = (1.0 - is_lambda) * gap_term + is_lambda * sampled_term
    return loss, {"gap": float(gap_term.detach()), "sampled": float(sampled_term.detach())}


def bap_loss(features: Tensor, boxes: BoxMasks, classify: Callable[[Tensor], Tensor],
             grid_size: int = BAP_GRID) -> tuple[Tensor, dict[str, float]]:
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


def cam_loss(logits: Tensor, labels: Tensor, pooling: Pooling, *,
             is_lambda: float | None = None, is_samples: int | None = None,
             generator: torch.Generator | None = None, valid: Tensor | None = None,
             features: Tensor | None = None, boxes: BoxMasks | None = None,
             classify: Callable[[Tensor], Tensor] | None = None, bap_grid: int = BAP_GRID,
             fsl: nn.Module | None = None, fsl_variant: str = "none",
             fsl_weight: float | None = None, image: Tensor | None = None
             ) -> tuple[Tensor, dict[str, float]]:
    r"""The CAM network's loss (§3): the classification loss of ``pooling`` plus, optionally,
    the feature similarity loss :math:`w_{fs} L_{fs}` (eqs. 9–12).

    Args:
        logits: ``[B, C, h, w]``; ``C = K + 1`` (background at 0) for ``gmp``, ``is`` and
            ``bap``, ``C = K`` for ``gap`` and ``is_binomial``.
        labels: ``[B, K]`` multi-hot foreground tags.
        pooling: ``"gap"``, ``"gmp"``, ``"is"``, ``"is_binomial"`` or ``"bap"``.
        is_lambda, is_samples: λ and the number of samples of ``is`` / ``is_binomial``
            (``None``: §3's defaults, :func:`pooling_defaults`).
        generator: sampling generator on the logits' device.
        valid: ``[B, h, w]`` bool mask of the cells inside the image.
        features, boxes, classify, bap_grid: ``bap`` only (:func:`bap_loss`).
        fsl: a :class:`~graphwsss.losses.FeatureSimilarityLoss` (or any
            ``(activations, image) -> loss`` module); ``None`` or ``fsl_variant="none"``
            leaves the FSL out.
        fsl_variant: ``"none"``, ``"multinomial"`` (softmax CAM, needs ``K + 1`` logits) or
            ``"binomial"`` (max-normalised, label-masked sigmoid CAM, needs ``K`` logits), see
            :func:`~graphwsss.losses.fsl_activations`.
        fsl_weight: :math:`w_{fs}`; ``None``: 0.5 multinomial, 1.0 binomial.
        image: ``[B, 3, H', W']`` RGB in ``[0, 1]`` (any size; brought to the grid) for the FSL.

    Returns:
        ``(loss, logs)``, ``logs`` the float value of each term.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
    _check_logits(logits, minimum_channels=2 if pooling in SOFTMAX_POOLINGS else 1)
    foreground = logits.shape[1] - (1 if pooling in SOFTMAX_POOLINGS else 0)
    _check_labels(labels, logits.shape[0], foreground, pooling)
    logs: dict[str, float] = {}
    if pooling == "gap":
        loss = gap_loss(logits, labels, valid)
    elif pooling == "gmp":
        loss = gmp_loss(logits, labels, valid)
    elif pooling == "is":
        lam, samples = pooling_defaults(pooling, is_lambda, is_samples)
        loss, logs = importance_sampling_loss(logits, labels, lam, samples, generator, valid)
    elif pooling == "is_binomial":
        lam, samples = pooling_defaults(pooling, is_lambda, is_samples)
        loss, logs = binomial_importance_sampling_loss(logits, labels, lam, samples, generator,
                                                       valid)
    else:
        if features is None or boxes is None or classify is None:
            raise ValueError("pooling 'bap' needs features, boxes (BoxMasks) and classify")
        loss, logs = bap_loss(features, boxes, classify, bap_grid)
    logs = {"classification": float(loss.detach()), **logs}

    if fsl is not None and fsl_variant != "none":
        if fsl_variant not in FSL_VARIANT_WEIGHTS:
            raise ValueError(f"fsl_variant must be 'none' or one of {sorted(FSL_VARIANT_WEIGHTS)}, "
                             f"got {fsl_variant!r}")
        softmax = pooling in SOFTMAX_POOLINGS
        if (fsl_variant == "multinomial") != softmax:
            raise ValueError(f"the {fsl_variant} FSL does not fit pooling {pooling!r}: the "
                             f"multinomial FSL needs softmax logits with a background channel "
                             f"(gmp, is, bap), the binomial one sigmoid logits (gap, is_binomial)")
        if image is None:
            raise ValueError("the FSL needs the image [B, 3, H, W] in [0, 1]")
        weight = FSL_VARIANT_WEIGHTS[fsl_variant] if fsl_weight is None else float(fsl_weight)
        activations = fsl_activations(logits, labels if fsl_variant == "binomial" else None,
                                      fsl_variant)
        similarity = fsl(activations, image)
        loss = loss + weight * similarity
        logs["fsl"] = float(similarity.detach())
    return loss, logs


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _targets(labels: Tensor, logits: Tensor, background: bool | None = None) -> Tensor:
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


def _softmax_binary_cross_entropy(logits: Tensor, indices: Tensor, classes: Tensor,
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


def _mean_cross_entropy(logits: Tensor, targets: Tensor, used: Tensor) -> Tensor:
    """Mean cross-entropy over the ``used`` items; a zero still tied to the graph when there is
    none (so that every parameter gets a gradient, as DistributedDataParallel requires)."""
    if not bool(used.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[used], targets[used])


def _check_logits(logits: Tensor, minimum_channels: int = 1) -> None:
    if not isinstance(logits, Tensor) or logits.ndim != 4 or not logits.is_floating_point():
        raise ValueError(f"logits must be a float [B, C, h, w] tensor, got {_describe(logits)}")
    if logits.shape[1] < minimum_channels or 0 in logits.shape:
        raise ValueError(f"logits need at least {minimum_channels} channel(s) and a non-empty "
                         f"grid, got shape {tuple(logits.shape)}")


def _check_labels(labels: Tensor, batch: int, classes: int, pooling: str) -> None:
    if not isinstance(labels, Tensor) or tuple(labels.shape) != (batch, classes):
        raise ValueError(f"labels must be [B, K] = [{batch}, {classes}] foreground tags for "
                         f"pooling {pooling!r} (its logits have "
                         f"{classes + (1 if pooling in SOFTMAX_POOLINGS else 0)} channels), got "
                         f"{_describe(labels)}")


def _check_valid(valid: Tensor, logits: Tensor) -> Tensor:
    expected = (logits.shape[0], *logits.shape[2:])
    if not isinstance(valid, Tensor) or tuple(valid.shape) != expected:
        raise ValueError(f"valid must be a [B, h, w] = {list(expected)} mask, got "
                         f"{_describe(valid)}")
    return valid.to(device=logits.device, dtype=torch.bool)


def _check_lambda(is_lambda: float) -> None:
    if not 0.0 <= is_lambda <= 1.0:
        raise ValueError(f"is_lambda must lie in [0, 1], got {is_lambda}")


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__

r"""The CAM network's loss (docs/method.md §3): one object, built from the settings.

A CAM network gives logits :math:`s \in \mathbb{R}^{C \times h \times w}` per image; a *pooling*
turns them into image-level predictions trained against the image's tags
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

implemented in :mod:`~graphwsss.losses.global_pooling` (``gap``, ``gmp``),
:mod:`~graphwsss.losses.importance_sampling` (``is``, ``is_binomial``) and
:mod:`~graphwsss.losses.background_aware_pooling` (``bap``). With a softmax (``K + 1`` logits,
background at channel 0) the background is a class present in every image: its target is 1
wherever background enters a loss (the GAP term of ``is`` and the GMP loss); the sampling term of
``is`` covers the foreground classes only, as §3 states. :class:`CAMLoss` adds the feature
similarity loss (eqs. 9–12, :mod:`graphwsss.losses.feature_similarity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

import torch
from torch import Tensor, nn

from graphwsss.losses.background_aware_pooling import BoxMasks, bap_loss
from graphwsss.losses.feature_similarity import FSL_VARIANT_WEIGHTS, fsl_activations
from graphwsss.losses.global_pooling import check_logits, gap_loss, gmp_loss
from graphwsss.losses.importance_sampling import (binomial_importance_sampling_loss,
                                                  importance_sampling_loss, pooling_defaults)
from graphwsss.utils.shapes import check_shape

if TYPE_CHECKING:
    from graphwsss.settings import CAMSettings

__all__ = ["POOLINGS", "SOFTMAX_POOLINGS", "CAMLoss"]

Pooling = Literal["gap", "gmp", "is", "is_binomial", "bap"]
POOLINGS: tuple[str, ...] = ("gap", "gmp", "is", "is_binomial", "bap")
# Poolings whose network has K + 1 logits with a softmax over classes (background at 0).
SOFTMAX_POOLINGS: frozenset[str] = frozenset({"gmp", "is", "bap"})


@dataclass
class CAMLoss:
    r"""The CAM network's loss (§3): the classification loss of ``pooling`` plus, optionally, the
    feature similarity loss :math:`w_{fs} L_{fs}` (eqs. 9–12). Build it with
    :meth:`from_settings`; call it on a batch.

    Attributes:
        pooling: ``"gap"``, ``"gmp"``, ``"is"``, ``"is_binomial"`` or ``"bap"``.
        num_classes: ``K`` foreground classes; the logits have ``K + 1`` channels (background at
            0) for ``gmp``, ``is`` and ``bap``, ``K`` for ``gap`` and ``is_binomial``.
        is_lambda, is_samples: λ and the number of samples of ``is`` / ``is_binomial``
            (``None``: §3's defaults, :func:`~graphwsss.losses.importance_sampling.pooling_defaults`).
        bap_grid: ``N`` of the ``N x N`` background prototype grid of ``bap``.
        fsl: a :class:`~graphwsss.losses.FeatureSimilarityLoss` (or any
            ``(activations, image) -> loss`` module); ``None`` or ``fsl_variant="none"`` leaves
            the FSL out.
        fsl_variant: ``"none"``, ``"multinomial"`` (softmax CAM, ``K + 1`` logits) or
            ``"binomial"`` (max-normalised, label-masked sigmoid CAM, ``K`` logits), see
            :func:`~graphwsss.losses.fsl_activations`.
        fsl_weight: :math:`w_{fs}`; ``None``: 0.5 multinomial, 1.0 binomial.
    """

    pooling: Pooling
    num_classes: int
    is_lambda: float | None = None
    is_samples: int | None = None
    bap_grid: int = 4
    fsl: nn.Module | None = None
    fsl_variant: str = "none"
    fsl_weight: float | None = None

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")
        if self.pooling in ("is", "is_binomial"):
            self.is_lambda, self.is_samples = pooling_defaults(self.pooling, self.is_lambda,
                                                               self.is_samples)
        if self.fsl_variant != "none":
            if self.fsl_variant not in FSL_VARIANT_WEIGHTS:
                raise ValueError(f"fsl_variant must be 'none' or one of "
                                 f"{sorted(FSL_VARIANT_WEIGHTS)}, got {self.fsl_variant!r}")
            if (self.fsl_variant == "multinomial") != self.softmax:
                raise ValueError(f"the {self.fsl_variant} FSL does not fit pooling "
                                 f"{self.pooling!r}: the multinomial FSL needs softmax logits "
                                 f"with a background channel (gmp, is, bap), the binomial one "
                                 f"sigmoid logits (gap, is_binomial)")
            if self.fsl_weight is None:
                self.fsl_weight = FSL_VARIANT_WEIGHTS[self.fsl_variant]

    @classmethod
    def from_settings(cls, cam: "CAMSettings", num_classes: int,
                      fsl: nn.Module | None = None) -> "CAMLoss":
        """The loss of ``settings.cam`` for ``num_classes`` foreground classes; ``fsl`` the
        network's FSL module (it holds σ and μ when they are learnable), ``None`` without."""
        return cls(cam.pooling, num_classes, is_lambda=cam.is_lambda, is_samples=cam.is_samples,
                   bap_grid=cam.bap_grid, fsl=fsl, fsl_variant=cam.fsl, fsl_weight=cam.fsl_weight)

    @property
    def softmax(self) -> bool:
        """Whether the pooling's network has ``K + 1`` softmax logits (background at 0)."""
        return self.pooling in SOFTMAX_POOLINGS

    @property
    def channels(self) -> int:
        """The logits' channels: ``K + 1`` with a softmax, else ``K``."""
        return self.num_classes + (1 if self.softmax else 0)

    def __call__(self, logits: Tensor, labels: Tensor, *,
                 generator: torch.Generator | None = None, valid: Tensor | None = None,
                 features: Tensor | None = None, boxes: BoxMasks | None = None,
                 classify: Callable[[Tensor], Tensor] | None = None,
                 image: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """The loss of one batch.

        Args:
            logits: ``[B, C, h, w]``, ``C`` = :attr:`channels`.
            labels: ``[B, K]`` multi-hot foreground tags.
            generator: sampling generator on the logits' device (``is``, ``is_binomial``).
            valid: ``[B, h, w]`` bool mask of the cells inside the image.
            features, boxes, classify: ``bap`` only
                (:func:`~graphwsss.losses.background_aware_pooling.bap_loss`).
            image: ``[B, 3, H', W']`` RGB in ``[0, 1]`` (any size; brought to the grid) for the
                FSL.

        Returns:
            ``(loss, logs)``, ``logs`` the float value of each term.
        """
        check_logits(logits, minimum_channels=2 if self.softmax else 1)
        batch = logits.shape[0]
        check_shape("labels", labels, f"[B, K] = [{batch}, {self.num_classes}]",
                    shape=(batch, self.num_classes), what="tensor of foreground tags")
        if logits.shape[1] != self.channels:
            raise ValueError(f"pooling {self.pooling!r} with K = {self.num_classes} classes needs "
                             f"{self.channels} logit channels, got shape {tuple(logits.shape)}")
        logs: dict[str, float] = {}
        if self.pooling == "gap":
            loss = gap_loss(logits, labels, valid)
        elif self.pooling == "gmp":
            loss = gmp_loss(logits, labels, valid)
        elif self.pooling == "is":
            loss, logs = importance_sampling_loss(logits, labels, self.is_lambda, self.is_samples,
                                                  generator, valid)
        elif self.pooling == "is_binomial":
            loss, logs = binomial_importance_sampling_loss(logits, labels, self.is_lambda,
                                                           self.is_samples, generator, valid)
        else:
            if features is None or boxes is None or classify is None:
                raise ValueError("pooling 'bap' needs features, boxes (BoxMasks) and classify")
            loss, logs = bap_loss(features, boxes, classify, self.bap_grid)
        logs = {"classification": float(loss.detach()), **logs}

        if self.fsl is not None and self.fsl_variant != "none":
            if image is None:
                raise ValueError("the FSL needs the image [B, 3, H, W] in [0, 1]")
            activations = fsl_activations(
                logits, labels if self.fsl_variant == "binomial" else None, self.fsl_variant)
            similarity = self.fsl(activations, image)
            loss = loss + self.fsl_weight * similarity
            logs["fsl"] = float(similarity.detach())
        return loss, logs

r"""Contour F-score, the DAVIS boundary measure, accumulated over a dataset (docs/method.md §8).

For each class ``c`` and image, the binary masks ``pred == c`` and ``gt == c`` are turned into
boundary maps ``B_pred`` and ``B_gt`` (:func:`boundary_map`). With ``D(B)`` the dilation of ``B``
by a disc of radius :math:`r = \lceil 0.008 \cdot \sqrt{H^2 + W^2} \rceil` pixels
(:func:`tolerance_radius`), the dataset sums per class are

.. math::
    P_c = \frac{\sum |B_\mathrm{pred} \cap D(B_\mathrm{gt})|}{\sum |B_\mathrm{pred}|},
    \qquad
    R_c = \frac{\sum |B_\mathrm{gt} \cap D(B_\mathrm{pred})|}{\sum |B_\mathrm{gt}|},
    \qquad
    F_c = \frac{2 P_c R_c}{P_c + R_c}

and the reported contour F is the mean of ``F_c`` over the foreground classes (background is
excluded) that have any boundary pixel in the ground truth or the prediction. A class with ground
truth boundary but no predicted boundary (or the reverse) scores ``F_c = 0``; a class with
neither is excluded (NaN).

Void (``gt == ignore_index``) counts as "not the class" in both masks, and boundary pixels that
lie on void are dropped from both boundary maps, so a prediction is neither rewarded nor
penalised for what it does inside the void band.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from graphwsss.metrics.confusion import (check_class_names, check_label_pair, check_label_range,
                                         check_num_classes, percent_or_none)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary mask (docs/method.md §8).

    A pixel is boundary if its value differs from its right, bottom or bottom-right neighbour;
    pixels on the last row or column compare only with the neighbours that exist. Both sides of
    an edge can be marked (e.g. a ``k x k`` square away from the border has ``4k`` boundary
    pixels).

    Args:
        mask: ``[H, W]`` boolean (or 0/1) array.

    Returns:
        ``[H, W]`` boolean boundary map.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    boundary = np.zeros_like(mask)
    boundary[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    boundary[:-1, :] |= mask[:-1, :] != mask[1:, :]
    boundary[:-1, :-1] |= mask[:-1, :-1] != mask[1:, 1:]
    return boundary


def tolerance_radius(height: int, width: int, tolerance: float = 0.008) -> int:
    """Matching radius in pixels, ``ceil(tolerance * sqrt(H^2 + W^2))`` (docs/method.md §8)."""
    return int(math.ceil(tolerance * math.hypot(height, width)))


def disk(radius: int) -> np.ndarray:
    """``[2r+1, 2r+1]`` uint8 disc, 1 where ``dy^2 + dx^2 <= r^2`` (as ``skimage.morphology.disk``).

    OpenCV's ``MORPH_ELLIPSE`` is not used: for ``r >= 2`` it differs from a disc.
    """
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)


def dilate(boundary: np.ndarray, radius: int) -> np.ndarray:
    """``[H, W]`` boolean dilation of a boolean map by :func:`disk` of ``radius``."""
    return cv2.dilate(boundary.astype(np.uint8), disk(radius)).astype(bool)


class ContourFScore:
    """Per-class boundary precision, recall and F over a dataset (docs/method.md §8).

    See the module docstring for the formulas and the handling of void.

    Args:
        num_classes: ``K``, the number of classes including background (class ids ``0..K-1``).
        ignore_index: the void label (default 255); must not be a class id.
        background: class id left out of the scores (default 0); ``None`` keeps every class.
        tolerance: the matching radius as a fraction of the image diagonal (default 0.008).

    Shapes:
        - update inputs: ``pred`` and ``gt`` ``[H, W]`` integer arrays, values in ``[0, K)`` or
          ``ignore_index``.
        - counts :attr:`pred_total`, :attr:`pred_matched`, :attr:`gt_total`,
          :attr:`gt_matched`: ``[K]`` int64.
        - :meth:`precision`, :meth:`recall`, :meth:`per_class`: ``[K]`` float64, NaN where the
          class is excluded.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, background: int | None = 0,
                 tolerance: float = 0.008) -> None:
        check_num_classes(num_classes, ignore_index)
        if background is not None and not 0 <= background < num_classes:
            raise ValueError(f"background={background} is not a class id in [0, {num_classes})")
        if not tolerance > 0:
            raise ValueError(f"tolerance must be positive, got {tolerance}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.background = background
        self.tolerance = float(tolerance)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.pred_total = np.zeros(self.num_classes, dtype=np.int64)
        self.pred_matched = np.zeros(self.num_classes, dtype=np.int64)
        self.gt_total = np.zeros(self.num_classes, dtype=np.int64)
        self.gt_matched = np.zeros(self.num_classes, dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: ``pred`` and ``gt`` are ``[H, W]`` integer label maps.

        Raises:
            ValueError: shapes differ, or a value is outside ``[0, K)`` and not ``ignore_index``.
        """
        pred, gt = check_label_pair(pred, gt)
        check_label_range(gt, self.num_classes, self.ignore_index, "gt")
        check_label_range(pred, self.num_classes, self.ignore_index, "pred")
        void = gt == self.ignore_index
        pred = np.where(void, self.ignore_index, pred)  # void is "not the class" in both masks
        radius = tolerance_radius(*gt.shape, tolerance=self.tolerance)
        for label in self._classes_in(pred, gt, void):
            gt_boundary = boundary_map(gt == label) & ~void
            pred_boundary = boundary_map(pred == label) & ~void
            self.gt_total[label] += np.count_nonzero(gt_boundary)
            self.pred_total[label] += np.count_nonzero(pred_boundary)
            near_pred, near_gt = dilate(pred_boundary, radius), dilate(gt_boundary, radius)
            self.gt_matched[label] += np.count_nonzero(gt_boundary & near_pred)
            self.pred_matched[label] += np.count_nonzero(pred_boundary & near_gt)

    def _classes_in(self, pred: np.ndarray, gt: np.ndarray, void: np.ndarray) -> list[int]:
        """Scored class ids present in ``gt`` or ``pred`` outside void (others have no boundary)."""
        pred_labels = pred[~void]
        pred_labels = pred_labels[pred_labels != self.ignore_index]
        present = (np.bincount(gt[~void], minlength=self.num_classes)
                   + np.bincount(pred_labels, minlength=self.num_classes)) > 0
        if self.background is not None:
            present[self.background] = False
        return np.flatnonzero(present).tolist()

    def merge(self, other: "ContourFScore") -> "ContourFScore":
        """Add the counts of ``other`` (e.g. gathered from another process); returns ``self``."""
        if not isinstance(other, ContourFScore):
            raise TypeError(f"can only merge a ContourFScore, got {type(other).__name__}")
        mine = (self.num_classes, self.ignore_index, self.background, self.tolerance)
        theirs = (other.num_classes, other.ignore_index, other.background, other.tolerance)
        if mine != theirs:
            raise ValueError(f"cannot merge: settings (num_classes, ignore_index, background, "
                             f"tolerance) {theirs} differ from {mine}")
        self.pred_total += other.pred_total
        self.pred_matched += other.pred_matched
        self.gt_total += other.gt_total
        self.gt_matched += other.gt_matched
        return self

    def _scored(self) -> np.ndarray:
        """``[K]`` bool: foreground classes with any boundary pixel in gt or prediction."""
        scored = (self.pred_total + self.gt_total) > 0
        if self.background is not None:
            scored[self.background] = False
        return scored

    def precision(self) -> np.ndarray:
        """``[K]`` boundary precision ``P_c``; 0 without predicted boundary, NaN if excluded."""
        return self._ratio(self.pred_matched, self.pred_total)

    def recall(self) -> np.ndarray:
        """``[K]`` boundary recall ``R_c``; 0 without gt boundary, NaN if excluded."""
        return self._ratio(self.gt_matched, self.gt_total)

    def _ratio(self, matched: np.ndarray, total: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(total > 0, matched / total, 0.0)
        return np.where(self._scored(), ratio, np.nan)

    def per_class(self) -> np.ndarray:
        """``[K]`` float64 ``F_c = 2 P R / (P + R)`` in ``[0, 1]`` (0 when ``P + R = 0``);
        NaN for background and for classes without any boundary pixel."""
        precision, recall = self.precision(), self.recall()
        with np.errstate(divide="ignore", invalid="ignore"):
            f_score = np.where(precision + recall > 0,
                               2 * precision * recall / (precision + recall), 0.0)
        return np.where(self._scored(), f_score, np.nan)

    def mean(self) -> float:
        """Mean ``F_c`` in ``[0, 1]`` over the scored classes; NaN if there is none."""
        per_class = self.per_class()
        scored = ~np.isnan(per_class)
        return float(per_class[scored].mean()) if scored.any() else float("nan")

    def summary(self, class_names: Sequence[str] | None = None) -> dict:
        """Scores in percent: ``{"contour_f", "per_class_contour_f": {name: pct or None}}``;
        excluded classes and an undefined mean are ``None``.

        ``class_names`` (length ``K``) defaults to ``"0", "1", ...``.
        """
        names = check_class_names(class_names, self.num_classes)
        return {
            "contour_f": percent_or_none(self.mean()),
            "per_class_contour_f": {name: percent_or_none(value)
                                    for name, value in zip(names, self.per_class())},
        }

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.num_classes}, "
                f"ignore_index={self.ignore_index}, background={self.background}, "
                f"tolerance={self.tolerance})")

r"""Dataset-level confusion matrix, per-class IoU and mIoU (docs/method.md §8).

For ``K`` classes, ``M[g, p]`` counts the labelled pixels whose ground truth is ``g`` and whose
prediction is ``p``, summed over the whole dataset. With ``TP_c = M[c, c]``:

.. math::
    \mathrm{IoU}_c = \frac{TP_c}{TP_c + FP_c + FN_c}
                 = \frac{M_{cc}}{G_c + \sum_g M_{gc} - M_{cc}},
    \qquad
    \mathrm{mIoU} = \frac{1}{|\mathcal{C}|} \sum_{c \in \mathcal{C}} \mathrm{IoU}_c

where ``G_c`` is the number of labelled pixels of class ``c`` in the ground truth and
``\mathcal{C}`` the classes whose union is non-empty, i.e. that occur in the ground truth or
in the prediction. Classes with an empty union are left out of the mean (their IoU is NaN), they
count neither as 0 nor as 1.

Ignore handling: pixels whose ground truth is ``ignore_index`` (255, void) are skipped. A
prediction of ``ignore_index`` on a labelled pixel names no class: it is wrong, so it adds to
``FN`` of the ground-truth class (and to no class's ``FP``). Such pixels are kept apart from the
``[K, K]`` matrix, in :attr:`ConfusionMatrix.void_predictions`, and ``G_c`` includes them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def check_label_pair(pred: np.ndarray, gt: np.ndarray,
                     names: tuple[str, str] = ("pred", "gt")) -> tuple[np.ndarray, np.ndarray]:
    """Validate two label maps of one image and return them as ``int64`` arrays.

    Args:
        pred, gt: ``[H, W]`` integer ``np.ndarray`` label maps of the same shape.
        names: what to call the two arrays in error messages.

    Raises:
        TypeError: an argument is not an ``np.ndarray`` or not of an integer dtype.
        ValueError: an argument is not 2-D, or the two shapes differ (both are stated).
    """
    for name, labels in zip(names, (pred, gt)):
        if not isinstance(labels, np.ndarray):
            raise TypeError(f"{name} must be an np.ndarray label map [H, W], got "
                            f"{type(labels).__name__} (convert tensors with .cpu().numpy())")
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"{name} must have an integer dtype, got {labels.dtype}")
        if labels.ndim != 2:
            raise ValueError(f"{name} must be a 2-D label map [H, W], got shape {labels.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: {names[0]} has shape {pred.shape}, "
                         f"{names[1]} has shape {gt.shape}")
    return pred.astype(np.int64, copy=False), gt.astype(np.int64, copy=False)


def check_label_range(labels: np.ndarray, num_classes: int, ignore_index: int, name: str) -> None:
    """Raise ``ValueError`` unless every value is in ``[0, num_classes)`` or ``ignore_index``."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        values = np.unique(labels[bad])[:10].tolist()
        raise ValueError(f"{name} holds values outside [0, {num_classes}) that are not "
                         f"ignore_index={ignore_index}: {values}")


def check_num_classes(num_classes: int, ignore_index: int) -> None:
    """Raise ``ValueError`` for fewer than one class or an ``ignore_index`` that is a class id."""
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index={ignore_index} collides with the class ids "
                         f"[0, {num_classes})")


def check_class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """The class names to report under: ``class_names`` checked for length, or ``"0".."K-1"``."""
    if class_names is None:
        return [str(index) for index in range(num_classes)]
    names = list(class_names)
    if len(names) != num_classes:
        raise ValueError(f"expected {num_classes} class names, got {len(names)}")
    return names


def percent_or_none(value: float) -> float | None:
    """``100 * value`` as a Python float, or ``None`` where the value is undefined (NaN)."""
    return None if np.isnan(value) else float(100.0 * value)


class ConfusionMatrix:
    """Accumulates a ``[K, K]`` confusion matrix over a dataset; IoU and mIoU (docs/method.md §8).

    Rows are ground truth, columns are prediction. See the module docstring for the formulas
    and for how ``ignore_index`` is treated in the ground truth and in the prediction.

    Args:
        num_classes: ``K``, the number of classes including background (class ids ``0..K-1``).
        ignore_index: the void label (default 255); must not be a class id.

    Shapes:
        - update inputs: ``pred`` and ``gt`` ``[H, W]`` integer arrays.
        - :attr:`matrix`: ``[K, K]`` int64; :attr:`void_predictions`: ``[K]`` int64.
        - :meth:`iou`: ``[K]`` float64, NaN for classes absent from both gt and prediction.

    Example:
        >>> scores = ConfusionMatrix(num_classes=21)
        >>> for pred, gt in pairs:            # doctest: +SKIP
        ...     scores.update(pred, gt)
        >>> scores.summary(class_names)["miou"]  # doctest: +SKIP
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        check_num_classes(num_classes, ignore_index)
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        # Column K holds labelled pixels predicted as ignore_index (no class).
        self._counts = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image.

        Args:
            pred: ``[H, W]`` integer predicted labels in ``[0, K)`` or ``ignore_index``.
            gt: ``[H, W]`` integer ground truth in ``[0, K)`` or ``ignore_index``.

        Raises:
            ValueError: shapes differ, or a value of either map is outside ``[0, K)`` and not
                ``ignore_index``.
        """
        pred, gt = check_label_pair(pred, gt)
        check_label_range(gt, self.num_classes, self.ignore_index, "gt")
        check_label_range(pred, self.num_classes, self.ignore_index, "pred")
        labelled = gt != self.ignore_index
        pred_column = np.where(pred[labelled] == self.ignore_index, self.num_classes,
                               pred[labelled])
        width = self.num_classes + 1
        flat = np.bincount(gt[labelled] * width + pred_column, minlength=self.num_classes * width)
        self._counts += flat.reshape(self.num_classes, width)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add the counts of ``other`` (e.g. gathered from another process); returns ``self``."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(f"cannot merge: num_classes/ignore_index {other.num_classes}/"
                             f"{other.ignore_index} differ from {self.num_classes}/"
                             f"{self.ignore_index}")
        self._counts += other._counts
        return self

    @property
    def matrix(self) -> np.ndarray:
        """``[K, K]`` int64 counts, rows = ground truth, columns = prediction (a copy)."""
        return self._counts[:, : self.num_classes].copy()

    @property
    def void_predictions(self) -> np.ndarray:
        """``[K]`` int64: labelled pixels of each gt class that were predicted ``ignore_index``."""
        return self._counts[:, self.num_classes].copy()

    def iou(self) -> np.ndarray:
        """``[K]`` float64 per-class IoU in ``[0, 1]``; NaN where the union is empty."""
        true_positive = np.diag(self._counts).astype(np.float64)
        gt_total = self._counts.sum(axis=1)
        pred_total = self._counts[:, : self.num_classes].sum(axis=0)
        union = (gt_total + pred_total).astype(np.float64) - true_positive
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, true_positive / union, np.nan)

    def miou(self) -> float:
        """Mean IoU in ``[0, 1]`` over classes with a non-empty union; NaN if there is none."""
        per_class = self.iou()
        present = ~np.isnan(per_class)
        return float(per_class[present].mean()) if present.any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Correct pixels / labelled pixels in ``[0, 1]``; NaN when no pixel was labelled."""
        labelled = self._counts.sum()
        return float(np.trace(self._counts) / labelled) if labelled else float("nan")

    def summary(self, class_names: Sequence[str] | None = None) -> dict:
        """Scores in percent: ``{"miou", "per_class_iou": {name: pct or None},
        "pixel_accuracy"}``; undefined values (nothing evaluated) are ``None``.

        ``class_names`` (length ``K``) defaults to ``"0", "1", ...``.
        """
        names = check_class_names(class_names, self.num_classes)
        return {
            "miou": percent_or_none(self.miou()),
            "per_class_iou": {name: percent_or_none(value)
                              for name, value in zip(names, self.iou())},
            "pixel_accuracy": percent_or_none(self.pixel_accuracy()),
        }

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.num_classes}, "
                f"ignore_index={self.ignore_index}, pixels={int(self._counts.sum())})")

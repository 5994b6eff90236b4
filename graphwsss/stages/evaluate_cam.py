r"""CAM evaluation (docs/method.md §3, §8): the CAMs a run wrote, scored against the ground truth.

For CAMs :math:`A \in [0, 1]^{K \times H \times W}` (``<run>/cams/<id>.npy``) and a constant
background score ``t``, the prediction is

.. math:: P_t(p) = \begin{cases} 0 & \max_k A_k(p) < t \\ 1 + \arg\max_k A_k(p) & \text{else}
          \end{cases}

(:func:`graphwsss.stages.cam.cam_seeds`). ``t`` is swept over 0.00, 0.01, ..., 0.59 with one
dataset-level :class:`~graphwsss.metrics.ConfusionMatrix` per threshold, filled in one pass
over the images; the best ``t`` (highest mIoU, the lowest such ``t`` on ties) is reported with
its per-class IoU, and a second pass scores the contour F (:class:`~graphwsss.metrics.
ContourFScore`) at that ``t``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from graphwsss.data.errors import DataError
from graphwsss.data.voc import VOCDataset
from graphwsss.metrics import ConfusionMatrix, ContourFScore
from graphwsss.stages.cam import CAMS_FOLDER, cam_seeds, read_cams
from graphwsss.utils.runtime import get_logger

log = get_logger(__name__)

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.01 * step, 2) for step in range(60))


def _cam_files(dataset: VOCDataset, run_dir: Path, split: str) -> list[tuple[str, Path]]:
    """``(image id, path)`` of every ``<run>/cams/*.npy``, each checked to be an image of
    the split."""
    folder = run_dir / CAMS_FOLDER
    if not folder.is_dir():
        raise DataError(folder, "no CAM folder: run CAM inference (scripts/train_cam.py) first")
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise DataError(folder, "holds no <id>.npy CAM files")
    known = set(dataset.ids)
    for path in files:
        if path.stem not in known:
            raise DataError(path, f"image {path.stem!r} is not in split {split!r} of "
                                  f"{dataset.root}")
    return [(path.stem, path) for path in files]


def evaluate_cams(data_root: str | os.PathLike, run_dir: str | os.PathLike,
                  split: str = "train", thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                  show_progress: bool = True) -> dict:
    """Score ``<run_dir>/cams/*.npy`` against ``<data_root>/SegmentationClass``.

    Args:
        data_root: data set in the Pascal VOC layout, with ground truth.
        run_dir: the folder holding ``cams/``.
        split: ``ImageSets/Segmentation/<split>.txt``; every CAM must be an image of it.
        thresholds: background thresholds to sweep (default 0.00..0.59, step 0.01).

    Returns:
        ``{"miou", "contour_f", "best_threshold", "per_class_iou", "per_class_contour_f",
        "pixel_accuracy", "sweep": [{"threshold", "miou"}], "images", "cams"}``, scores in
        percent (``None`` where undefined).

    Raises:
        DataError: naming the folder or file that is missing, unreadable, of the wrong shape
            (``[K, H, W]``, ``K`` foreground classes, ``H x W`` of the ground truth) or not of
            the split.
    """
    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise ValueError("thresholds must not be empty")
    dataset = VOCDataset(data_root, split=split)
    if not dataset.has_ground_truth:
        raise DataError(dataset.root / "SegmentationClass", "no ground truth to evaluate against")
    run_dir = Path(run_dir)
    files = _cam_files(dataset, run_dir, split)
    num_classes = dataset.num_classes
    log.info("evaluate-cam: %d CAMs in %s, %d background thresholds", len(files),
             run_dir / CAMS_FOLDER, len(thresholds))

    sweep = [ConfusionMatrix(num_classes) for _ in thresholds]
    for image_id, path in tqdm(files, desc="evaluate-cam sweep", disable=not show_progress):
        ground_truth = dataset.ground_truth(image_id)
        cams = read_cams(path, num_classes - 1, ground_truth.shape)
        strongest = cams.max(axis=0)
        labels = cams.argmax(axis=0).astype(np.uint8) + 1
        for threshold, confusion in zip(thresholds, sweep):
            confusion.update(np.where(strongest < threshold, 0, labels), ground_truth)

    mious = np.array([confusion.miou() for confusion in sweep])
    best = int(np.nanargmax(mious)) if np.isfinite(mious).any() else 0
    best_threshold = thresholds[best]

    contour = ContourFScore(num_classes)
    for image_id, path in tqdm(files, desc="evaluate-cam contour", disable=not show_progress):
        ground_truth = dataset.ground_truth(image_id)
        contour.update(cam_seeds(read_cams(path, num_classes - 1, ground_truth.shape),
                                 best_threshold), ground_truth)

    result = sweep[best].summary(dataset.class_names)
    result.update(contour.summary(dataset.class_names))
    result["best_threshold"] = best_threshold
    result["sweep"] = [{"threshold": threshold,
                        "miou": None if np.isnan(value) else float(100.0 * value)}
                       for threshold, value in zip(thresholds, mious)]
    result["images"] = len(files)
    result["cams"] = str(run_dir / CAMS_FOLDER)
    return result

"""Evaluation stage: pseudo labels in a folder against a data set's ground truth (method §8)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm import tqdm

from graphwsss.data.errors import DataError
from graphwsss.data.palette import read_label_png
from graphwsss.data.voc import VOCDataset
from graphwsss.metrics import ConfusionMatrix, ContourFScore
from graphwsss.utils.io import atomic_write
from graphwsss.utils.runtime import get_logger

log = get_logger(__name__)


class SegmentationEvaluator:
    """Accumulates mIoU and contour F over images; ``merge`` combines per-process partials."""

    def __init__(self, class_names: list[str]) -> None:
        self.class_names = list(class_names)
        self.confusion = ConfusionMatrix(len(class_names))
        self.contour = ContourFScore(len(class_names))
        self.images = 0

    def update(self, prediction, ground_truth) -> None:
        self.confusion.update(prediction, ground_truth)
        self.contour.update(prediction, ground_truth)
        self.images += 1

    def merge(self, other: "SegmentationEvaluator") -> None:
        self.confusion.merge(other.confusion)
        self.contour.merge(other.contour)
        self.images += other.images

    def summary(self) -> dict:
        """``miou``, ``per_class_iou``, ``contour_f``, ``per_class_contour_f`` (percent), ``images``."""
        result = self.confusion.summary(self.class_names)
        result.update(self.contour.summary(self.class_names))
        result["images"] = self.images
        return result


def evaluate_folder(data_root: str | os.PathLike, prediction_dir: str | os.PathLike,
                    split: str = "train", ids: list[str] | None = None,
                    show_progress: bool = True, partial: bool = False,
                    limit: int | None = None) -> dict:
    """Score every ``<prediction_dir>/<id>.png`` against ``<data_root>/SegmentationClass``.

    Every image of the split (or of ``ids``; the first ``limit`` of them when given, 0: all)
    needs a prediction of the same size; a missing or mis-sized prediction is a
    :class:`DataError` naming the file. With ``partial``, images without a prediction are
    skipped instead (counted as ``images_without_prediction``), so that a run made with
    ``limit=N`` can be scored; a folder with none of the images is still an error.
    """
    dataset = VOCDataset(data_root, split=split, ids=ids)
    if not dataset.has_ground_truth:
        raise DataError(dataset.root / "SegmentationClass", "no ground truth to evaluate against")
    prediction_dir = Path(prediction_dir)
    if not prediction_dir.is_dir():
        raise DataError(prediction_dir, "prediction folder does not exist")
    image_ids = list(dataset.ids[:limit] if limit else dataset.ids)
    skipped = 0
    if partial:
        present = [image_id for image_id in image_ids
                   if (prediction_dir / f"{image_id}.png").is_file()]
        skipped = len(image_ids) - len(present)
        if not present:
            raise DataError(prediction_dir, f"holds no <id>.png of the {len(image_ids)} images "
                                            f"of split {split!r} to score")
        image_ids = present
    evaluator = SegmentationEvaluator(dataset.class_names)
    for image_id in tqdm(image_ids, desc="evaluate", disable=not show_progress):
        gt_path = dataset.ground_truth_path(image_id)
        ground_truth = dataset.ground_truth(image_id)
        pred_path = prediction_dir / f"{image_id}.png"
        if not pred_path.is_file():
            raise DataError(pred_path, "prediction is missing (graphwsss evaluate --partial "
                                       "scores only the images that have one)")
        prediction = read_label_png(pred_path)
        if prediction.shape != ground_truth.shape:
            raise DataError(pred_path, f"size {prediction.shape[1]}x{prediction.shape[0]} differs "
                                       f"from the ground truth's {ground_truth.shape[1]}x"
                                       f"{ground_truth.shape[0]} ({gt_path})")
        evaluator.update(prediction, ground_truth)
    return {**evaluator.summary(), "images_without_prediction": skipped}


def format_table(metrics: dict) -> str:
    """Per-class IoU and contour F as a text table, with the means on the last line."""
    contour = metrics.get("per_class_contour_f", {})
    lines = [f"{'class':<16}{'IoU':>8}{'contour F':>11}"]
    for name, iou in metrics["per_class_iou"].items():
        boundary = contour.get(name)
        lines.append(f"{name:<16}{_fmt(iou):>8}{_fmt(boundary):>11}")
    lines.append(f"{'mean':<16}{_fmt(metrics['miou']):>8}{_fmt(metrics.get('contour_f')):>11}")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_metrics(path: str | os.PathLike, metrics: dict) -> Path:
    """Write metrics as indented JSON, atomically."""
    return atomic_write(path, json.dumps(metrics, indent=2) + "\n")

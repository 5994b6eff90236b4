"""The evaluate stage (docs/method.md §8): pseudo labels against a data set's ground truth.

In a run, :func:`run` scores ``pseudo_labels/`` (mIoU, contour F per class), ``seeds/`` (seed
precision and coverage) and counts single-class labels and seeds; with the run's timing and the
refinement rounds (``segmenter/rounds.json``) it writes ``metrics.json``. ``graphwsss evaluate``
scores any folder of label PNGs (:func:`evaluate_folder`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm import tqdm

from graphwsss.data.errors import DataError
from graphwsss.data.palette import read_label_png
from graphwsss.data.voc import VOCDataset
from graphwsss.data.resize import upscale_label
from graphwsss.metrics import (ConfusionMatrix, ContourFScore, SeedQuality,
                               SingleClassImages)
from graphwsss.stages.refine import allowed_classes
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


def run(ctx, image_ids: list[str], own_ids: list[str], context, extra: dict | None = None
        ) -> dict | None:
    """Score the run's pseudo labels and seeds of ``image_ids`` (this rank: ``own_ids``; the
    partials are gathered on rank 0 through ``context``) and write ``metrics.json`` with
    ``extra`` (timing) and the refinement rounds. Returns the metrics on rank 0 when the data
    set has ground truth, else ``None``."""
    if not ctx.dataset.has_ground_truth:
        return None
    log.info("stage evaluate: %d images", len(own_ids))
    partials = context.gather(score_run(ctx, own_ids))
    if not context.is_main:
        return None
    evaluator, seed_quality, single_class = partials[0]
    for other_evaluator, other_seeds, other_single in partials[1:]:
        evaluator.merge(other_evaluator)
        seed_quality.merge(other_seeds)
        single_class.merge(other_single)
    rounds = ctx.paths.root / "segmenter" / "rounds.json"
    metrics = {**evaluator.summary(), **seed_quality.summary(), **single_class.summary(),
               **(extra or {}),
               **({"rounds": json.loads(rounds.read_text())} if rounds.is_file() else {})}
    write_metrics(ctx.paths.root / "metrics.json", metrics)
    log.info("mIoU %.2f, contour F %.2f, seed precision %s, coverage %s -> %s",
             metrics["miou"], metrics["contour_f"], metrics["seed_precision"],
             metrics["seed_coverage"], ctx.paths.root / "metrics.json")
    if single_class.labels:
        log.warning("%d of %d pseudo labels are one class over the whole image (%s); "
                    "%d images' seeds hold fewer than two classes (metrics.json)",
                    len(single_class.labels), metrics["images"],
                    ", ".join(metrics["single_class_label_ids"]), len(single_class.seeds))
    return metrics


def score_run(ctx, image_ids: list[str]
              ) -> tuple[SegmentationEvaluator, SeedQuality, SingleClassImages]:
    """The accumulators of :func:`run` over ``image_ids`` (mergeable across ranks)."""
    evaluator = SegmentationEvaluator(ctx.dataset.class_names)
    seed_quality = SeedQuality()
    single_class = SingleClassImages()
    for image_id in ctx.progress(image_ids, "evaluate"):
        ground_truth = ctx.dataset.ground_truth(image_id)
        label = read_label_png(ctx.paths.pseudo_label(image_id))
        seeds = read_label_png(ctx.paths.seed(image_id))
        seeds = upscale_label(seeds, ground_truth.shape)   # seeds at max_side: full size
        evaluator.update(label, ground_truth)
        seed_quality.update(seeds, ground_truth)
        named = allowed_classes(ctx.dataset.load(image_id), ctx.settings.supervision)
        single_class.update(image_id, label, seeds, classes_named=len(named))
    return evaluator, seed_quality, single_class


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

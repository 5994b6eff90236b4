"""Refine-stage variants scored on a finished run's saved node probabilities, in seconds.

Reads ``RUN/probabilities/<id>.npy`` and ``RUN/seeds/<id>.png`` of a box run and scores, per
variant, the pseudo labels it would give (mIoU, contour F) without writing any label. For
variants that are settings (``crf.*``) rerun ``graphwsss run ... --force`` on a copy of the
run instead; this script also tries what is not a setting, to decide whether it should be:

* ``crf:0``            no CRF
* ``ubg:F``            background probability multiplied by F on the unknown pixels of boxes
* ``tubg:F``           the same, only in boxes whose seeds already cross every row and column
                       of the box (tightness; ``tcov:C``, default 0.95, the share required) and
                       in no other box: ``refine.tight_background`` (base: 1 here, off)
* ``temp:T``           probabilities raised to T (T < 1 softens the CRF's unary)
* ``seedmix:W``        seeded pixels take (1 - W)·P + W·one-hot(seed)
* ``gsxy:, gc:, bsxy:, bsrgb:, bc:``  CRF kernel widths and compatibilities
* ``col:W``            an image-wide colour model as a second expert before the CRF:
                       P <- P * P_colour^W, P_colour(k | p) from RGB histograms (``bins:B`` per
                       channel, default 16) of the pixels whose arg-max is k
* ``sp:N``             superpixel-resolution refinement: before the CRF, each pixel's
                       probabilities become the mean over its SLIC superpixel (about N × N
                       pixels; ``spc:C`` compactness, default 10; ``spw:W`` share of the mean
                       mixed in, default 1); ``spafter:1``: on the CRF's output instead
* ``gcut:I``           GrabCut (I iterations) per box instead of the last arg-max inside boxes,
                       its mask initialised from that arg-max (probable foreground / background),
                       definite background outside the box; the smaller box wins overlaps;
                       ``gagree:T``: a box keeps its label where GrabCut's foreground has an
                       IoU below T with it; ``gtight:C``: where GrabCut's foreground crosses
                       fewer than C of the box's rows or columns; ``gband:D``: GrabCut
                       changes only pixels within D pixels of the label's edge; ``gonly:add``
                       / ``gonly:remove``: GrabCut may only add / only remove foreground;
                       ``gunk:1``: GrabCut changes only the seeds' unknown pixels;
                       ``gsure:T``: definite where the pre-CRF probability of the arg-max is >= T

A variant is a comma-separated list, e.g. ``ubg:2,bc:5``.

    python scripts/refine_variants.py --data DIR --run RUN --variants base crf:0 temp:0.5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from graphwsss.data.palette import read_label_png
from graphwsss.data.records import IGNORE_INDEX
from graphwsss.data.voc import VOCDataset
from graphwsss.graphs.superpixel import superpixel_labels
from graphwsss.postprocess import (clear_outside_boxes, dense_crf, meets_box,
                                   tight_box_background, upsample_probs)
from graphwsss.seeds.box import paint_order
from graphwsss.seeds.grabcut import run_grabcut
from graphwsss.stages.evaluate import SegmentationEvaluator
from graphwsss.stages.refine import node_stride


def colour_posterior(image: np.ndarray, probs: np.ndarray, bins: int) -> np.ndarray:
    """``[K, H, W]`` P_colour(k | p): each class's RGB histogram over the pixels whose arg-max
    is k (add-one smoothed), normalised over the classes present in ``probs`` at p."""
    num_classes = probs.shape[0]
    quantised = (image.astype(np.int64) * bins) // 256
    index = (quantised[..., 0] * bins + quantised[..., 1]) * bins + quantised[..., 2]
    label = probs.argmax(0)
    likelihood = np.zeros(probs.shape, np.float32)
    for k in range(num_classes):
        counts = np.bincount(index[label == k], minlength=bins ** 3).astype(np.float32) + 1
        likelihood[k] = (counts / counts.sum())[index]
    likelihood *= probs > 0              # classes cleared here (outside their boxes) stay cleared
    return likelihood / np.maximum(likelihood.sum(0, keepdims=True), 1e-12)


def superpixel_mean(image: np.ndarray, probs: np.ndarray, size: float, compactness: float,
                    weight: float) -> np.ndarray:
    """``[K, H, W]`` probabilities mixed with their mean over SLIC superpixels of about
    ``size`` × ``size`` pixels (:func:`~graphwsss.graphs.superpixel.superpixel_labels`):
    (1 - weight)·P + weight·mean_superpixel(P)."""
    height, width = image.shape[:2]
    pixels = torch.from_numpy(image).permute(2, 0, 1).double() / 255.0
    labels = superpixel_labels(pixels, "slic", segments=max(1, round(height * width / size ** 2)),
                               compactness=compactness).numpy()
    counts = np.bincount(labels.ravel()).astype(np.float32)
    means = np.stack([np.bincount(labels.ravel(), weights=channel.ravel()) for channel in probs])
    mean = (means / np.maximum(counts, 1))[:, labels].astype(probs.dtype)
    return (1 - weight) * probs + weight * mean


def grabcut_variant(image: np.ndarray, label: np.ndarray, boxes, iterations: int,
                       sure: np.ndarray | None = None, agree: float = 0.0,
                       tight: float = 0.0, band: float = 0.0, only: str = "",
                       free: np.ndarray | None = None) -> np.ndarray:
    """GrabCut per box, initialised from ``label`` (probable foreground where it is the box's
    class, probable background elsewhere in the box, background outside); smaller boxes win."""
    import cv2
    bgr = np.ascontiguousarray(image[..., ::-1])
    out = np.zeros(label.shape, np.uint8)
    for box in (boxes[index] for index in paint_order(boxes)):
        mask = np.full(label.shape, cv2.GC_BGD, np.uint8)
        rows, cols = box.slices()
        inside = label[rows, cols] == box.class_id
        mask[rows, cols] = np.where(inside, cv2.GC_PR_FGD, cv2.GC_PR_BGD)
        if sure is not None:
            region = mask[rows, cols]
            region[sure[rows, cols] & inside] = cv2.GC_FGD
            region[sure[rows, cols] & ~inside] = cv2.GC_BGD
        if inside.all() or not inside.any():
            fg = inside
        else:
            run_grabcut(bgr, mask, iterations)
            fg = (mask[rows, cols] & 1).astype(bool)
            if band:
                near = np.maximum(
                    cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 3),
                    cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 3)) <= band
                fg = np.where(near, fg, inside)
            if free is not None:
                fg = np.where(free[rows, cols], fg, inside)
            if only == "add":
                fg = fg | inside
            elif only == "remove":
                fg = fg & inside
            if (fg & inside).sum() < agree * (fg | inside).sum():
                fg = inside          # GrabCut disagrees with the propagation: keep the label
            if not meets_box(fg, tight):
                fg = inside          # GrabCut's foreground no longer meets the box's sides
        out[rows, cols][fg] = box.class_id
    return out


def refine(sample, probs: np.ndarray, seeds: np.ndarray, variant: str) -> np.ndarray:
    options = dict(item.split(":") for item in variant.split(",") if ":" in item)
    value = lambda key, default: float(options.get(key, default))  # noqa: E731
    size = (sample.height, sample.width)
    probs = torch.from_numpy(probs.astype(np.float32))
    full = upsample_probs(probs, size, stride=node_stride(size, tuple(probs.shape[-2:])))
    full = clear_outside_boxes(full.numpy(), sample.boxes)
    unknown = seeds == IGNORE_INDEX
    if "ubg" in options:
        full[0][unknown] *= value("ubg", 1)
    if "tubg" in options:       # = refine.tight_background, refine.tight_coverage
        full = tight_box_background(full, sample.boxes, seeds, value("tubg", 1),
                                    value("tcov", 0.95))
    if "seedmix" in options:
        weight, known = value("seedmix", 0), ~unknown
        one_hot = np.eye(full.shape[0], dtype=full.dtype)[np.where(known, seeds, 0)].transpose(2, 0, 1)
        full = np.where(known[None], (1 - weight) * full + weight * one_hot, full)
    if "temp" in options:
        full = full ** value("temp", 1)
    full = full / full.sum(0, keepdims=True)
    if "col" in options:
        full = full * colour_posterior(sample.image, full, int(value("bins", 16))) ** value("col", 1)
        full = full / np.maximum(full.sum(0, keepdims=True), 1e-12)

    def superpixels(values: np.ndarray) -> np.ndarray:   # each class stays inside its boxes
        mean = superpixel_mean(sample.image, values, value("sp", 8), value("spc", 10),
                               value("spw", 1))
        return clear_outside_boxes(mean, sample.boxes)

    if "sp" in options and "spafter" not in options:
        full = superpixels(full)
    before = full
    if options.get("crf", "1") != "0":
        full = dense_crf(sample.image, full.astype(np.float32), iterations=10,
                         gaussian_sxy=value("gsxy", 4), gaussian_compat=value("gc", 3),
                         bilateral_sxy=value("bsxy", 83), bilateral_srgb=value("bsrgb", 5),
                         bilateral_compat=value("bc", 3))
        full = clear_outside_boxes(full, sample.boxes)
    if "sp" in options and "spafter" in options:
        full = superpixels(full)
    if "gcut" in options:
        sure = before.max(0) >= value("gsure", 2) if "gsure" in options else None
        return grabcut_variant(sample.image, full.argmax(0), sample.boxes, int(value("gcut", 5)),
                               sure, value("gagree", 0), value("gtight", 0),
                               value("gband", 0), options.get("gonly", ""),
                               unknown if "gunk" in options else None)
    return full.argmax(0).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="VOC-layout data set with ground truth")
    parser.add_argument("--run", required=True, help="a finished box run (probabilities/, seeds/)")
    parser.add_argument("--variants", nargs="+", default=["base"])
    parser.add_argument("--limit", type=int, default=0, help="first N images (0: all)")
    args = parser.parse_args()
    dataset, run = VOCDataset(args.data), Path(args.run)
    ids = [i for i in dataset.ids if (run / "probabilities" / f"{i}.npy").is_file()]
    ids = ids[:args.limit] if args.limit else ids
    evaluators = {variant: SegmentationEvaluator(dataset.class_names) for variant in args.variants}
    started = time.perf_counter()
    for image_id in ids:
        sample, ground_truth = dataset.load(image_id), dataset.ground_truth(image_id)
        probs = np.load(run / "probabilities" / f"{image_id}.npy")
        seeds = read_label_png(run / "seeds" / f"{image_id}.png")
        for variant, evaluator in evaluators.items():
            evaluator.update(refine(sample, probs, seeds, variant), ground_truth)
    for variant, evaluator in evaluators.items():
        metrics = evaluator.summary()
        print(f"{len(ids)} images  {variant:32s} mIoU {metrics['miou']:.2f}  "
              f"contour F {metrics['contour_f']:.2f}")
    print(f"seconds {time.perf_counter() - started:.1f}")


if __name__ == "__main__":
    main()

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
from graphwsss.postprocess import (clear_outside_boxes, dense_crf, tight_box_background,
                                   upsample_probs)
from graphwsss.stages.evaluate import SegmentationEvaluator
from graphwsss.stages.refine import node_stride


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
    if options.get("crf", "1") != "0":
        full = dense_crf(sample.image, full.astype(np.float32), iterations=10,
                         gaussian_sxy=value("gsxy", 4), gaussian_compat=value("gc", 3),
                         bilateral_sxy=value("bsxy", 83), bilateral_srgb=value("bsrgb", 5),
                         bilateral_compat=value("bc", 3))
        full = clear_outside_boxes(full, sample.boxes)
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

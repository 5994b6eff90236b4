#!/usr/bin/env python
"""Mask AP (pycocotools ``COCOeval``, ``iouType="segm"``) of a run's ``annotations.json``
against a COCO ground-truth file with masks, and of the filled boxes (each box's full rectangle
as its mask), on the images of the run. Example::

    python scripts/coco_mask_ap.py --gt /tmp/gc_coco/annotations/instances_train.json \\
        --pred /tmp/gc_coco_run/annotations.json

Prints one JSON object: ``{"run": {"AP": ..., "AP50": ..., "AP75": ...}, "filled_boxes": ...,
"images": N}`` (AP in percent).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from graphwsss.data.coco import encode_rle


def as_results(content: dict, filled_boxes: bool = False) -> list[dict]:
    """COCO results (score 1) of a COCO file's non-crowd annotations: their ``segmentation``,
    or with ``filled_boxes`` the rectangle of their ``bbox``."""
    sizes = {image["id"]: (image["height"], image["width"]) for image in content["images"]}
    results = []
    for annotation in content["annotations"]:
        if annotation.get("iscrowd", 0):
            continue
        segmentation = annotation.get("segmentation")
        if filled_boxes:
            height, width = sizes[annotation["image_id"]]
            x, y, w, h = annotation["bbox"]
            mask = np.zeros((height, width), dtype=bool)
            mask[max(math.floor(y), 0):math.ceil(y + h), max(math.floor(x), 0):math.ceil(x + w)] = True
            segmentation = encode_rle(mask)
        results.append({"image_id": annotation["image_id"],
                        "category_id": annotation["category_id"],
                        "segmentation": segmentation, "score": 1.0})
    return results


def segm_ap(gt_file: str, results: list[dict], image_ids: list[int]) -> dict:
    """``{"AP", "AP50", "AP75"}`` in percent of ``results`` on ``image_ids``."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(gt_file)
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), iouType="segm")
        evaluation.params.imgIds = sorted(image_ids)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {name: round(100 * float(evaluation.stats[index]), 2)
            for index, name in enumerate(("AP", "AP50", "AP75"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", required=True, help="COCO file with ground-truth masks")
    parser.add_argument("--pred", required=True, help="a run's annotations.json")
    args = parser.parse_args(argv)
    with open(args.pred, encoding="utf-8") as file:
        content = json.load(file)
    image_ids = [image["id"] for image in content["images"]]
    print(json.dumps({"run": segm_ap(args.gt, as_results(content), image_ids),
                      "filled_boxes": segm_ap(args.gt, as_results(content, True), image_ids),
                      "images": len(image_ids)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

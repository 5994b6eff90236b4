#!/usr/bin/env python
"""Write a COCO copy of a data set in the Pascal VOC layout, to run ``graphwsss run`` on COCO
input (issue 15). Example::

    python scripts/voc_to_coco.py --data ../shared/data/grabcut --out /tmp/gc_coco

writes ``OUT/annotations/instances_<split>.json`` and ``OUT/images/`` (symbolic links to the
images; ``--copy`` copies them). Image ids are 1..N in the order of the split, file names the
VOC image files, category ids 1..K the classes of ``labels.txt`` (background left out).
Each box of ``Annotations/<id>.xml`` becomes one annotation (``bbox`` ``[x, y, w, h]``,
0-based), with ``segmentation`` (compressed RLE) and ``area`` from ``SegmentationObject`` and
``SegmentationClass`` when both are there: the instance of the box's class numbered as the
object (VOC order), else the one of that class with the most pixels in the box. Pixels void
(255) in ``SegmentationObject`` belong to no mask. With ``--no-masks`` (or without those
folders) annotations have boxes only: a detection file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from graphwsss.data import DataError, VOCDataset, encode_rle, read_label_png
from graphwsss.utils.io import atomic_write


def _instance_masks(boxes, objects: np.ndarray, classes: np.ndarray) -> list[np.ndarray]:
    """One mask per box from the VOC instance and class maps."""
    ids = [int(v) for v in np.unique(objects) if v not in (0, 255)]
    class_of = {}
    for value in ids:
        values, counts = np.unique(classes[objects == value], return_counts=True)
        class_of[value] = int(values[np.argmax(counts)])
    used: set[int] = set()
    masks = []
    for index, box in enumerate(boxes):
        candidates = [v for v in ids if v not in used and class_of[v] == box.class_id]
        if index + 1 in candidates:
            chosen = index + 1
        elif candidates:
            inside = objects[box.slices()]
            chosen = max(candidates, key=lambda v: int((inside == v).sum()))
        else:
            chosen = None
        if chosen is None:
            masks.append(np.zeros(objects.shape, dtype=bool))
        else:
            used.add(chosen)
            masks.append(objects == chosen)
    return masks


def convert(data: str | os.PathLike, out: str | os.PathLike, split: str = "train",
            copy: bool = False, masks: bool = True) -> Path:
    """Write the COCO copy; returns the annotation file's path."""
    dataset = VOCDataset(data, split=split, supervision="box")
    out = Path(out)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    categories = [{"id": index, "name": name, "supercategory": name}
                  for index, name in enumerate(dataset.class_names) if index]
    images, annotations = [], []
    for number, image_id in enumerate(dataset.ids, start=1):
        sample = dataset.load(image_id)
        source = sample.image_path
        target = image_dir / source.name
        if target.is_symlink() or target.exists():
            target.unlink()
        if copy:
            shutil.copyfile(source, target)
        else:
            target.symlink_to(source.resolve())
        images.append({"id": number, "file_name": source.name, "width": sample.width,
                       "height": sample.height})
        object_path = dataset.root / "SegmentationObject" / f"{image_id}.png"
        instance_masks = None
        if masks and sample.label is not None and object_path.is_file():
            instance_masks = _instance_masks(sample.boxes, read_label_png(object_path),
                                             sample.label)
        for index, box in enumerate(sample.boxes):
            annotation = {"id": len(annotations) + 1, "image_id": number,
                          "category_id": box.class_id,
                          "bbox": [box.x0, box.y0, box.width, box.height],
                          "area": box.area, "iscrowd": 0}
            if instance_masks is not None:
                annotation["segmentation"] = encode_rle(instance_masks[index])
                annotation["area"] = int(instance_masks[index].sum())
            annotations.append(annotation)
    content = {"info": {"description": f"COCO copy of {dataset.root} ({split})"},
               "licenses": [], "images": images, "annotations": annotations,
               "categories": categories}
    return atomic_write(out / "annotations" / f"instances_{split}.json", json.dumps(content))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="data set in Pascal VOC layout")
    parser.add_argument("--out", required=True, help="COCO folder to write")
    parser.add_argument("--split", default="train", help="ImageSets/Segmentation list")
    parser.add_argument("--copy", action="store_true", help="copy the images (default: links)")
    parser.add_argument("--no-masks", action="store_true",
                        help="boxes only: no segmentation, as in a detection file")
    args = parser.parse_args(argv)
    try:
        path = convert(args.data, args.out, split=args.split, copy=args.copy,
                       masks=not args.no_masks)
    except DataError as error:
        print(f"voc_to_coco: error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

r"""Instance masks from boxes (docs/method.md §7).

Given the pseudo label :math:`Y` and boxes :math:`B_1..B_M` with classes :math:`c_m`, pixel
:math:`p` belongs to instance :math:`m` when :math:`p \in B_m` and :math:`Y(p) = c_m`; a pixel
that qualifies for several boxes goes to the smallest (boxes are painted from the largest to the
smallest, :func:`~graphwsss.seeds.box.paint_order`). Instance ids are ``m + 1`` in box order
(1..M), 0 is "no instance" and 255 marks void labels, as in VOC's ``SegmentationObject``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from graphwsss.data.coco import encode_rle
from graphwsss.data.palette import write_label_png
from graphwsss.data.records import IGNORE_INDEX, Box
from graphwsss.seeds.box import paint_order

MAX_INSTANCES = 254


def _check_label(label: np.ndarray, name: str) -> None:
    if not isinstance(label, np.ndarray) or label.ndim != 2 \
            or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"{name} must be an integer [H, W] array, got "
                         f"{getattr(label, 'dtype', type(label).__name__)} "
                         f"shape {getattr(label, 'shape', None)}")


def instances_from_boxes(label: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Instance map of a pseudo label: class pixels inside a box of their class.

    Args:
        label: ``[H, W]`` integer class map (255 void).
        boxes: the image's boxes, at most 254.

    Returns:
        ``[H, W]`` uint8: ``m + 1`` for box ``m``'s pixels, 0 elsewhere, 255 where ``label`` is
        255.
    """
    _check_label(label, "label")
    if len(boxes) > MAX_INSTANCES:
        raise ValueError(f"{len(boxes)} boxes do not fit an 8-bit instance map "
                         f"({MAX_INSTANCES} at most)")
    instance = np.zeros(label.shape, dtype=np.uint8)
    for index in paint_order(list(boxes)):
        box = boxes[index]
        region = instance[box.slices()]          # a view: writes go to ``instance``
        region[label[box.slices()] == box.class_id] = index + 1
    instance[label == IGNORE_INDEX] = IGNORE_INDEX
    return instance


def write_instance_png(path: str | os.PathLike, instance: np.ndarray) -> Path:
    """Write an ``[H, W]`` instance map as a VOC-palette PNG like ``SegmentationObject``."""
    _check_label(instance, "instance")
    return write_label_png(path, instance)


def instances_to_coco(image_id: str, instance: np.ndarray, label: np.ndarray,
                      boxes: Sequence[Box], height: int, width: int) -> list[dict]:
    """COCO-style result dicts, one per box, in box order.

    Each has ``image_id``, ``category_id`` (the class id), ``segmentation`` (compressed RLE
    ``{"size": [H, W], "counts": str}`` of the instance mask), ``bbox`` ``[x, y, w, h]`` of the
    mask (of the box when the mask is empty), ``area`` (mask pixels) and ``score`` 1.0.

    Args:
        image_id: the image's id, copied into every dict.
        instance: ``[H, W]`` instance map (:func:`instances_from_boxes`).
        label: ``[H, W]`` class map it came from; every instance pixel must carry its box's
            class there (checked, so that a stale instance map cannot slip through).
        boxes: the boxes the instance ids refer to.
        height, width: the image size, checked against both maps.

    Returns:
        ``len(boxes)`` dicts, JSON-serialisable.
    """
    _check_label(instance, "instance")
    _check_label(label, "label")
    if instance.shape != (height, width) or label.shape != (height, width):
        raise ValueError(f"instance {instance.shape} and label {label.shape} must both be "
                         f"({height}, {width})")
    results = []
    for index, box in enumerate(boxes):
        mask = instance == index + 1
        if (label[mask] != box.class_id).any():
            raise ValueError(f"instance {index + 1} of {image_id!r} covers pixels whose label "
                             f"is not its box's class {box.class_id}")
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if rows.size:
            bbox = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1),
                    int(rows[-1] - rows[0] + 1)]
        else:
            bbox = [box.x0, box.y0, box.width, box.height]
        results.append({"image_id": image_id, "category_id": int(box.class_id),
                        "segmentation": encode_rle(mask), "bbox": [float(v) for v in bbox],
                        "area": int(mask.sum()), "score": 1.0})
    return results

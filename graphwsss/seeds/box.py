"""Box seeds (docs/method.md §2, equations 3.2–3.5)."""

from __future__ import annotations

import numpy as np

from graphwsss.data.records import BACKGROUND, Box


def paint_order(boxes: list[Box]) -> list[int]:
    """Indices of ``boxes`` from the largest to the smallest area.

    Painting in this order lets the smaller box win the pixels where boxes overlap
    (docs/method.md §2); ties keep the annotation order.
    """
    return sorted(range(len(boxes)), key=lambda index: -boxes[index].area)


def fill_boxes(boxes: list[Box], height: int, width: int) -> np.ndarray:
    """The filled-box baseline: every box filled with its class, background elsewhere.

    Returns ``[H, W]`` uint8; smaller boxes are painted last, so they win overlaps.
    """
    label = np.full((height, width), BACKGROUND, dtype=np.uint8)
    for index in paint_order(boxes):
        label[boxes[index].slices()] = boxes[index].class_id
    return label

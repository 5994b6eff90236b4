r"""GrabCut from the pseudo label: pixel-exact edges inside boxes (docs/method.md §7).

The propagation decides per node (one node per 8×8 pixels); the CRF moves its edges to pixel
positions but rarely brings back parts thinner than a node. GrabCut works on pixels. Started
from the pseudo label :math:`Y` instead of from the box, its colour models begin with the
propagation's decision and its graph cut follows the image's edges. Per box :math:`B_k` of class
:math:`c_k`, largest first (so that the smaller box wins where boxes overlap):

.. math::
    \text{mask}(p) = \begin{cases}
        \text{definite background} & p \notin B_k\\
        \text{probable foreground} & p \in B_k,\ Y(p) = c_k\\
        \text{probable background} & p \in B_k,\ Y(p) \ne c_k
    \end{cases}

After ``iterations`` rounds of GrabCut its foreground :math:`G_k` replaces :math:`Y`'s
:math:`c_k` pixels in :math:`B_k` (pixels of :math:`c_k` left out become background), **only when
G_k still meets the box**: it crosses at least ``coverage`` of the box's rows and of its columns,
as the object of a tight box does (the tightness prior's test,
:func:`graphwsss.postprocess.tightness.meets_box`). Otherwise (GrabCut dropped part of the
object, found none, or failed) the box keeps its pixels of :math:`Y` (painted in the same
order, so the smaller box still wins its overlaps). A box without any :math:`c_k` pixel in
``Y`` or narrower than 3 pixels is left as it is.

Shapes: ``image`` ``[H, W, 3]`` uint8 RGB, ``label`` ``[H, W]`` uint8 class ids.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from graphwsss.data.records import BACKGROUND, Box
from graphwsss.postprocess.tightness import meets_box
from graphwsss.seeds.box import paint_order
from graphwsss.seeds.grabcut import run_grabcut

MIN_BOX_SIDE = 3


def _grabcut_box(bgr: np.ndarray, box: Box, own: np.ndarray, iterations: int
                 ) -> np.ndarray | None:
    """``[box.height, box.width]`` bool GrabCut foreground of one box started from ``own`` (the
    box's pixels of its class in Y); ``None`` when OpenCV fails."""
    mask = np.full(bgr.shape[:2], cv2.GC_BGD, np.uint8)
    mask[box.slices()] = np.where(own, cv2.GC_PR_FGD, cv2.GC_PR_BGD)
    if run_grabcut(bgr, mask, iterations) is not None:
        return None
    return (mask[box.slices()] & 1).astype(bool)        # GC_FGD and GC_PR_FGD are odd


def grabcut_from_label(image: np.ndarray, label: np.ndarray, boxes: Sequence[Box],
                       iterations: int, coverage: float) -> tuple[np.ndarray, int]:
    """``label`` with each box's object redrawn by GrabCut started from it (module docstring).

    Returns:
        The new ``[H, W]`` uint8 label and the number of boxes whose GrabCut result was taken.
    """
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    out, taken = label.copy(), 0
    for index in paint_order(list(boxes)):
        box = boxes[index]
        rows, cols = box.slices()
        own = label[rows, cols] == box.class_id
        if min(box.width, box.height) < MIN_BOX_SIDE or not own.any():
            continue
        foreground = _grabcut_box(bgr, box, own, iterations)
        if foreground is not None and meets_box(foreground, coverage):
            taken += 1
        else:                                   # not taken: the box keeps its pixels of Y
            foreground = own
        region = out[rows, cols]
        region[(region == box.class_id) & ~foreground] = BACKGROUND
        region[foreground] = box.class_id
    return out, taken

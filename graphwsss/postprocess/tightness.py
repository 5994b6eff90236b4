r"""The tightness prior of boxes as a background prior (docs/method.md §7).

A box drawn tight around an object meets the object in every row and every column. When the
seeds of a box already do (its own-class seeds cross at least ``coverage`` of the box's rows and
of its columns), nothing in the weak label asks for more foreground in it, and its unknown pixels
(inside the box, neither seeded foreground nor background) are more likely background. Where the
seeds leave rows or columns empty, the seeds missed part of the object and the unknown pixels
keep the propagation's probabilities. On the unknown pixels of tight-met boxes (and of no other
box), the background probability is multiplied by ``factor`` and each pixel renormalised:

.. math::
    P_0(p) \leftarrow \frac{f\,P_0(p)}{f\,P_0(p) + \sum_{c \ge 1} P_c(p)}

Shapes: ``probs`` ``[K, H, W]`` float, ``seeds`` ``[H, W]`` integer (255 unknown).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from graphwsss.data.records import IGNORE_INDEX, Box


def meets_box(mask: np.ndarray, coverage: float) -> bool:
    """Whether the ``[h, w]`` bool ``mask`` of a box's object crosses at least ``coverage`` of
    the box's rows and of its columns (the tightness prior's test)."""
    return mask.size > 0 and min(mask.any(axis=1).mean(), mask.any(axis=0).mean()) >= coverage


def tight_box_mask(boxes: Sequence[Box], seeds: np.ndarray, coverage: float) -> np.ndarray:
    """``[H, W]`` bool: pixels inside a box whose own-class seeds cross at least ``coverage`` of
    its rows and of its columns, and inside no box that does not."""
    met = np.zeros(seeds.shape, bool)
    unmet = np.zeros(seeds.shape, bool)
    for box in boxes:
        tight = meets_box(seeds[box.slices()] == box.class_id, coverage)
        (met if tight else unmet)[box.slices()] = True
    return met & ~unmet


def tight_box_background(probs: np.ndarray, boxes: Sequence[Box], seeds: np.ndarray,
                         factor: float, coverage: float) -> np.ndarray:
    """``probs`` with the background of the unknown pixels of tight-met boxes multiplied by
    ``factor`` and renormalised (a new array; ``factor`` 1 returns ``probs`` unchanged)."""
    if factor == 1 or not boxes:
        return probs
    if seeds.shape != probs.shape[1:]:
        raise ValueError(f"seeds {seeds.shape} and probabilities {probs.shape[1:]} differ in size")
    where = (seeds == IGNORE_INDEX) & tight_box_mask(boxes, seeds, coverage)
    probs = probs.copy()
    probs[0][where] *= factor
    total = probs[:, where].sum(axis=0)
    probs[:, where] /= np.maximum(total, np.finfo(probs.dtype).tiny)
    return probs

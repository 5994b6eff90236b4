r"""Fusing box seeds with CAM seeds (docs/method.md §2, equations 3.4–3.5).

With :math:`M_B` the GrabCut box seeds (3.2–3.3), :math:`M_I` the CAM seeds and
:math:`M_{B_k}` the box seeds restricted to box :math:`B_k` of class :math:`c_k`, the fused map
(3.4) is

.. math::
    M_F(p) = \begin{cases}
        M_B(p) & p \notin \bigcup_k B_k \\
        M_B(p) & p \in B_k,\ M_B(p) = M_I(p) \\
        M_{B_k}(p) & p \in B_k,\ \nexists\, q \in B_k : M_I(q) = c_k \\
        255 & \text{otherwise}
    \end{cases}

and the confident seeds (3.5) are

.. math::
    M_g(p) = \begin{cases} M_F(p) & M_F(p) = M_B(p) \ \lor\ M_F(p) = M'_I(p) \\
        255 & \text{otherwise} \end{cases}

with :math:`M'_I` the CAM seeds restricted to each class's top 40 % most confident pixels
(:func:`top_fraction_cam_seeds`). A pixel in several boxes is decided by the smallest box
(boxes are processed from the largest to the smallest, :func:`~graphwsss.seeds.box.paint_order`).
All maps are ``[H, W]`` integer arrays: 0 background, 1..K classes, 255 unknown.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from graphwsss.data.records import BACKGROUND, IGNORE_INDEX, Box
from graphwsss.seeds.box import paint_order


def _check_label_maps(**maps: np.ndarray) -> tuple[int, int]:
    shapes = {name: getattr(array, "shape", None) for name, array in maps.items()}
    for name, array in maps.items():
        if not isinstance(array, np.ndarray) or array.ndim != 2 \
                or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} must be an integer [H, W] label map, got "
                             f"{getattr(array, 'dtype', type(array).__name__)} "
                             f"shape {shapes[name]}")
    if len(set(shapes.values())) != 1:
        raise ValueError(f"label maps differ in shape: {shapes}")
    return next(iter(maps.values())).shape


def fuse_box_and_cam_seeds(box_seeds: np.ndarray, cam_seeds: np.ndarray,
                           boxes: Sequence[Box]) -> np.ndarray:
    r"""Fused seeds :math:`M_F` (3.4) of box seeds and CAM seeds.

    Outside every box :math:`M_F = M_B`. Inside box :math:`B_k` the pixels where :math:`M_B` and
    :math:`M_I` agree keep their label and the rest is 255, unless :math:`M_I` has no pixel of
    class :math:`c_k` in :math:`B_k` (the CAM missed the object): then the box keeps its box
    seeds :math:`M_{B_k}`. Pixels in several boxes follow the smallest box.

    Args:
        box_seeds: :math:`M_B`, ``[H, W]`` integer.
        cam_seeds: :math:`M_I`, ``[H, W]`` integer.
        boxes: the image's boxes.

    Returns:
        :math:`M_F`, ``[H, W]`` uint8.
    """
    _check_label_maps(box_seeds=box_seeds, cam_seeds=cam_seeds)
    fused = box_seeds.astype(np.uint8)
    for index in paint_order(list(boxes)):
        box = boxes[index]
        box_part, cam_part = box_seeds[box.slices()], cam_seeds[box.slices()]
        if (cam_part == box.class_id).any():
            fused[box.slices()] = np.where(box_part == cam_part, box_part, IGNORE_INDEX)
        else:
            fused[box.slices()] = box_part
    return fused


def select_confident_seeds(fused_seeds: np.ndarray, box_seeds: np.ndarray,
                           cam_confident_seeds: np.ndarray) -> np.ndarray:
    r"""Confident seeds :math:`M_g` (3.5): :math:`M_F` where it equals :math:`M_B` or
    :math:`M'_I`, else 255.

    Args:
        fused_seeds: :math:`M_F`, ``[H, W]`` integer (:func:`fuse_box_and_cam_seeds`).
        box_seeds: :math:`M_B`, ``[H, W]`` integer.
        cam_confident_seeds: :math:`M'_I`, ``[H, W]`` integer (:func:`top_fraction_cam_seeds`).

    Returns:
        :math:`M_g`, ``[H, W]`` uint8.
    """
    _check_label_maps(fused_seeds=fused_seeds, box_seeds=box_seeds,
                      cam_confident_seeds=cam_confident_seeds)
    keep = (fused_seeds == box_seeds) | (fused_seeds == cam_confident_seeds)
    return np.where(keep, fused_seeds, IGNORE_INDEX).astype(np.uint8)


def top_fraction_cam_seeds(cams: np.ndarray, class_ids: Sequence[int], fraction: float = 0.4,
                           background_threshold: float | None = None) -> np.ndarray:
    r"""CAM seeds restricted to each class's most confident pixels, :math:`M'_I` of (3.5).

    Each pixel is assigned to its highest-scoring map, :math:`k(p) = \arg\max_k A_k(p)`; of the
    :math:`n_k` pixels assigned to map :math:`k`, the :math:`\lceil f\, n_k \rceil` with the
    highest :math:`A_k` get ``class_ids[k]`` (ties broken by pixel order, so exactly that many),
    everything else 255. Pixels where every map is 0 carry no evidence and stay 255.

    With ``background_threshold`` ``t`` (image-level tags, §2), pixels where every map is below
    ``t`` become confident background (0) and are left out of the classes' pixels before the
    top fraction is taken. A background map can also be passed as one of ``cams``, class id 0.

    Args:
        cams: ``[K, H, W]`` float scores in ``[0, 1]``, one map per present class.
        class_ids: ``K`` label values, ``class_ids[k]`` for map ``k``.
        fraction: the kept fraction ``f`` of each class's pixels (0.4 in §2).
        background_threshold: optional ``t``, see above.

    Returns:
        :math:`M'_I`, ``[H, W]`` uint8.
    """
    cams = np.asarray(cams)
    class_ids = [int(class_id) for class_id in class_ids]
    if cams.ndim != 3 or not np.issubdtype(cams.dtype, np.floating):
        raise ValueError(f"cams must be a float [K, H, W] array, got {cams.dtype} "
                         f"shape {cams.shape}")
    if len(class_ids) != cams.shape[0]:
        raise ValueError(f"{len(class_ids)} class ids for {cams.shape[0]} CAMs")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    if any(not 0 <= class_id < IGNORE_INDEX for class_id in class_ids):
        raise ValueError(f"class ids must lie in [0, {IGNORE_INDEX}), got {class_ids}")
    height, width = cams.shape[1:]
    seeds = np.full(height * width, IGNORE_INDEX, dtype=np.uint8)
    if cams.shape[0] == 0:
        return seeds.reshape(height, width)
    scores = cams.reshape(cams.shape[0], -1)
    assigned = scores.argmax(axis=0)
    best = scores.max(axis=0)
    candidates = best > 0
    if background_threshold is not None:
        background = best < background_threshold
        seeds[background] = BACKGROUND
        candidates &= ~background
    for k, class_id in enumerate(class_ids):
        pixels = np.flatnonzero(candidates & (assigned == k))
        keep = int(np.ceil(fraction * pixels.size - 1e-9))
        # Stable sort on the negated score: highest first, ties in pixel order.
        order = np.argsort(-scores[k, pixels], kind="stable")
        seeds[pixels[order[:keep]]] = class_id
    return seeds.reshape(height, width)

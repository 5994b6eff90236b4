r"""Background seeds that do not need a strong CAM (docs/method.md §2).

Scribble, point and image runs take their background from the CAM's confident background
(:math:`\max_k A_k < t_{bg}` in :math:`M'_I`). A weak CAM explains every pixel a little, that set
comes out empty, and a seed map without background makes every pseudo label one class over the
whole image. So when a seed map holds less background than ``min_share`` of the image, the
rule below adds some, by rank rather than by threshold, so that it works the same for weak and
strong CAMs:

1. rank the pixels by their highest foreground score :math:`s(p) = \max_k A_k(p)`, lowest first
   (ties: farther from the annotations first, then farther from the image centre);
2. keep the lowest ``fraction`` of the image's pixels, :math:`\lceil f\,HW \rceil`;
3. of those, label background the ones that are still unknown, lie farther than
   ``min_distance`` times the image diagonal from every foreground annotation (a point or a
   scribble pixel of class :math:`\geq 1`), and lie in no superpixel that holds one.

Seeds that already hold ``min_share`` background are returned unchanged, and no labelled pixel
is ever overwritten. Image-tag runs have no annotations: only step 3's "still unknown" applies.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import distance_transform_edt

from graphwsss.data.records import IGNORE_INDEX

BACKGROUND = 0


def background_share(seeds: np.ndarray) -> float:
    """The share of ``seeds``' pixels (``[H, W]``) labelled background (0)."""
    return float(np.count_nonzero(seeds == BACKGROUND)) / max(seeds.size, 1)


def add_background_seeds(seeds: np.ndarray, cams: np.ndarray,
                         annotations: np.ndarray | None = None,
                         segments: np.ndarray | None = None, *, min_share: float = 0.02,
                         fraction: float = 0.2, min_distance: float = 0.1) -> np.ndarray:
    """``seeds`` with low-CAM background seeds added far from the annotations (module docstring).

    Args:
        seeds: ``[H, W]`` uint8, 0 background, 1..K classes, 255 unknown.
        cams: ``[K, H, W]`` float CAMs (map ``k`` is class ``k + 1``); ``K`` may be 0.
        annotations: ``[H, W]`` uint8 points or scribbles (255 unlabelled), or ``None``.
        segments: ``[H, W]`` integer superpixel ids of the image, or ``None`` (no superpixel
            exclusion).
        min_share: seeds with at least this share of background pixels are left as they are
            (``seeds.background_min_share``).
        fraction: the lowest-scoring share of the image that may become background
            (``seeds.background_fraction``).
        min_distance: the least distance from every foreground annotation, as a share of the
            image diagonal (``seeds.background_min_distance``).

    Returns:
        ``[H, W]`` uint8: ``seeds`` itself when it holds enough background, else a copy with
        the new background seeds.
    """
    if seeds.ndim != 2 or cams.ndim != 3 or cams.shape[1:] != seeds.shape:
        # Imported here: it loads torch, which this numpy module otherwise does not need.
        from graphwsss.utils.shapes import describe

        raise ValueError(f"seeds must be a [H, W] array and cams a [K, H, W] array of the same "
                         f"H, W, got seeds {describe(seeds)} and cams {describe(cams)}")
    for name, other in (("annotations", annotations), ("segments", segments)):
        if other is not None and other.shape != seeds.shape:
            raise ValueError(f"{name} {other.shape} and seeds {seeds.shape} differ in size")
    if background_share(seeds) >= min_share:
        return seeds
    height, width = seeds.shape
    score = cams.max(axis=0) if cams.shape[0] else np.zeros(seeds.shape, np.float32)
    annotated = (np.zeros(seeds.shape, bool) if annotations is None
                 else (annotations != IGNORE_INDEX) & (annotations != BACKGROUND))
    if annotated.any():
        distance = distance_transform_edt(~annotated)
    else:
        distance = np.full(seeds.shape, np.inf)
    rows, cols = np.indices(seeds.shape)
    from_centre = np.hypot(rows - (height - 1) / 2, cols - (width - 1) / 2)
    # Lowest score first; ties (a flat CAM) go to pixels far from the annotations and the centre.
    order = np.lexsort((-from_centre.ravel(), -distance.ravel(), score.ravel()))
    lowest = np.zeros(seeds.size, bool)
    lowest[order[:math.ceil(fraction * seeds.size)]] = True
    candidates = (lowest.reshape(seeds.shape) & (seeds == IGNORE_INDEX)
                  & (distance > min_distance * math.hypot(height, width)))
    if segments is not None and annotated.any():
        candidates &= ~np.isin(segments, np.unique(segments[annotated]))
    return np.where(candidates, BACKGROUND, seeds).astype(np.uint8)

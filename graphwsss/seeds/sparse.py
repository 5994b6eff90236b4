"""Seeds from scribbles and points (method §2): superpixel expansion and merging with CAM seeds.

* **Expansion.** A scribble (or a clicked point) labels a few pixels; each superpixel
  (SLIC or Felzenszwalb, :func:`graphwsss.graphs.superpixel.superpixel_labels`) that the labels
  of exactly one class touch takes that class (M_S for scribbles, M_P for points). A superpixel
  touched by two classes keeps only the labelled pixels themselves, so an expansion never
  overwrites an annotation.
* **Merging.** Where the expansion says nothing, the CAM's confident seeds M'_I fill in:
  ``merge_seeds(M_S, M'_I)`` (scribble affinity seeds, point GNN seeds).
"""

from __future__ import annotations

import numpy as np
import torch

from graphwsss.data.errors import DataError
from graphwsss.data.records import IGNORE_INDEX, Point


def points_to_map(points: list[Point], height: int, width: int, image_id: str = "") -> np.ndarray:
    """``[H, W]`` uint8 map with each point's class at its pixel and 255 elsewhere."""
    label = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
    for point in points:
        if not (0 <= point.x < width and 0 <= point.y < height):
            raise ValueError(f"image {image_id!r}: point ({point.x}, {point.y}) lies outside the "
                             f"{width}x{height} image")
    if points:
        rows = np.array([point.y for point in points])
        cols = np.array([point.x for point in points])
        label[rows, cols] = np.array([point.class_id for point in points], dtype=np.uint8)
    return label


def expand_to_superpixels(sparse_labels: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Spread sparse labels over the superpixels they touch.

    Args:
        sparse_labels: ``[H, W]`` uint8, 255 where unlabelled.
        segments: ``[H, W]`` integer superpixel ids ``0..S-1``.

    Returns:
        ``[H, W]`` uint8: a superpixel touched by one class only takes it entirely; one touched
        by several classes keeps just its labelled pixels; the rest is 255.
    """
    if sparse_labels.shape != segments.shape or sparse_labels.ndim != 2:
        raise ValueError(f"sparse_labels {sparse_labels.shape} and segments {segments.shape} must "
                         "be the same [H, W]")
    segments = segments.astype(np.int64)
    num_segments = int(segments.max()) + 1 if segments.size else 0
    labelled = sparse_labels != IGNORE_INDEX
    classes = sparse_labels[labelled].astype(np.int64)
    owners = segments[labelled]
    # Distinct (segment, class) pairs: how many classes touch each segment, and which one.
    pairs = np.unique(owners * 256 + classes)
    pair_segments, pair_classes = pairs // 256, pairs % 256
    class_count = np.bincount(pair_segments, minlength=num_segments)
    segment_class = np.full(num_segments, IGNORE_INDEX, dtype=np.uint8)
    single = class_count[pair_segments] == 1
    segment_class[pair_segments[single]] = pair_classes[single]
    expanded = segment_class[segments]
    return np.where(labelled, sparse_labels, expanded).astype(np.uint8)


def image_superpixels(image: np.ndarray, method: str = "slic", segments: int = 400,
                      **options) -> np.ndarray:
    """``[H, W]`` int superpixel ids ``0..S-1`` of ``image`` (``[H, W, 3]`` uint8)."""
    from graphwsss.graphs.superpixel import superpixel_labels

    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    return superpixel_labels(pixels, method=method, segments=segments, **options).numpy()


def superpixel_expansion(image: np.ndarray, sparse_labels: np.ndarray, method: str = "slic",
                         segments: int = 400, **options) -> np.ndarray:
    """:func:`image_superpixels` of ``image``, then :func:`expand_to_superpixels`."""
    return expand_to_superpixels(sparse_labels,
                                 image_superpixels(image, method, segments, **options))


def merge_seeds(primary: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """``primary`` where it is labelled, else ``fallback`` (both ``[H, W]`` uint8, 255 unknown)."""
    if primary.shape != fallback.shape:
        raise ValueError(f"seed maps differ in size: {primary.shape} vs {fallback.shape}")
    return np.where(primary != IGNORE_INDEX, primary, fallback).astype(np.uint8)


def require_weak_label(present: bool, path, kind: str) -> None:
    """A clear error for an image without the weak label a run needs (never a silent empty
    seed map that would train on background only)."""
    if not present:
        raise DataError(path, f"no {kind} for this image; add it or drop the image from the split")

"""Training-time augmentation of an image and its label map: random scale, crop, flip and colour
jitter (docs/method.md §3–4 train the CAM and affinity networks with it).

Functions take and return numpy arrays (``[H, W, 3]`` uint8 images, ``[H, W]`` uint8 labels)
and draw from a ``numpy.random.Generator``, so that a sample's augmentation is reproducible from
``(seed, epoch, index)`` whatever the number of data-loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from graphwsss.data.records import IGNORE_INDEX
from graphwsss.utils.shapes import describe


@dataclass(frozen=True)
class Augmented:
    """One augmented training sample.

    Attributes:
        image: ``[S, S, 3]`` uint8 (zeros on padding).
        label: ``[S, S]`` uint8 (255 on padding), or ``None`` when none was given.
        valid: ``[S, S]`` bool, ``False`` on padding.
    """

    image: np.ndarray
    label: np.ndarray | None
    valid: np.ndarray


def random_scale(image: np.ndarray, label: np.ndarray | None, scale_range: tuple[float, float],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize by a factor drawn uniformly from ``scale_range`` (bilinear image, nearest label)."""
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
    factor = rng.uniform(low, high)
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    if label is not None:
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    return image, label


def random_crop(image: np.ndarray, label: np.ndarray | None, crop_size: int,
                rng: np.random.Generator) -> Augmented:
    """A ``crop_size`` square at a random position; sides shorter than it are padded (image 0,
    label 255, ``valid`` False) at a random offset."""
    height, width = image.shape[:2]
    out_image = np.zeros((crop_size, crop_size, 3), dtype=image.dtype)
    out_label = None if label is None else np.full((crop_size, crop_size), IGNORE_INDEX,
                                                   dtype=label.dtype)
    valid = np.zeros((crop_size, crop_size), dtype=bool)
    # Source window (may be the whole side) and where it lands in the output.
    src_y, dst_y, rows = _window(height, crop_size, rng)
    src_x, dst_x, cols = _window(width, crop_size, rng)
    out_image[dst_y:dst_y + rows, dst_x:dst_x + cols] = image[src_y:src_y + rows, src_x:src_x + cols]
    if label is not None:
        out_label[dst_y:dst_y + rows, dst_x:dst_x + cols] = label[src_y:src_y + rows,
                                                                  src_x:src_x + cols]
    valid[dst_y:dst_y + rows, dst_x:dst_x + cols] = True
    return Augmented(out_image, out_label, valid)


def _window(length: int, crop: int, rng: np.random.Generator) -> tuple[int, int, int]:
    if length >= crop:
        return int(rng.integers(0, length - crop + 1)), 0, crop
    return 0, int(rng.integers(0, crop - length + 1)), length


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor in ``1 ± strength``."""
    if strength <= 0:
        return image
    values = image.astype(np.float32)
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
    values = values * brightness
    values = (values - values.mean()) * contrast + values.mean()
    gray = values @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    values = (values - gray[..., None]) * saturation + gray[..., None]
    return np.clip(values, 0, 255).astype(np.uint8)


def augment(image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator, *,
            crop_size: int, scale_range: tuple[float, float] = (0.7, 1.3), flip: bool = True,
            jitter: float = 0.3) -> Augmented:
    """Scale, flip, colour-jitter and crop ``image`` (and ``label`` alike, without jitter).

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        label: ``[H, W]`` uint8 label map, or ``None``.
        rng: the sample's generator.
        crop_size: side of the square output.
        scale_range, flip, jitter: see :class:`graphwsss.settings.TrainingSettings`.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be a uint8 [H, W, 3] array, got {describe(image)}")
    if label is not None and label.shape != image.shape[:2]:
        raise ValueError(f"label {label.shape} does not match image {image.shape[:2]}")
    image, label = random_scale(image, label, scale_range, rng)
    if flip and rng.random() < 0.5:
        image = image[:, ::-1]
        label = None if label is None else label[:, ::-1]
    image = color_jitter(image, jitter, rng)
    return random_crop(np.ascontiguousarray(image),
                       None if label is None else np.ascontiguousarray(label), crop_size, rng)

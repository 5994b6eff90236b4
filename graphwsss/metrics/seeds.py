r"""Seed quality: precision and coverage of a sparse seed map against ground truth (method §8).

A seed map labels some pixels with a class id and leaves the rest ``ignore_index`` (255). Over a
dataset, with ``V`` the pixels whose ground truth is not void, ``L`` the labelled seeds among them
(``seed != 255`` and ``gt != 255``) and ``C`` those whose label equals the ground truth:

.. math::
    \mathrm{precision} = \frac{|C|}{|L|}, \qquad \mathrm{coverage} = \frac{|L|}{|V|}

Seeds lying on void ground truth cannot be judged and count in neither ratio, so coverage is at
most 1. Without seeds, precision is undefined (NaN) and coverage is 0; without non-void ground
truth, coverage is undefined (NaN) too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphwsss.metrics.confusion import check_label_pair, percent_or_none


class SeedQuality:
    """Accumulates seed precision and coverage over a dataset (docs/method.md §8).

    Args:
        ignore_index: the label of unlabelled seed pixels and of void ground truth (default 255).

    Shapes:
        - update inputs: ``seed`` and ``gt`` ``[H, W]`` integer arrays.
        - counts :attr:`correct`, :attr:`labelled`, :attr:`valid`: Python ints (``|C|``, ``|L|``,
          ``|V|`` of the module docstring).
    """

    def __init__(self, ignore_index: int = 255) -> None:
        self.ignore_index = int(ignore_index)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.correct = 0
        self.labelled = 0
        self.valid = 0

    def update(self, seed: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: ``seed`` and ``gt`` are ``[H, W]`` integer label maps.

        Raises:
            TypeError, ValueError: as :func:`~graphwsss.metrics.confusion.check_label_pair`
                (not integer arrays, not 2-D, shapes differ).
        """
        seed, gt = check_label_pair(seed, gt, names=("seed", "gt"))
        valid = gt != self.ignore_index
        labelled = valid & (seed != self.ignore_index)
        self.valid += int(np.count_nonzero(valid))
        self.labelled += int(np.count_nonzero(labelled))
        self.correct += int(np.count_nonzero(labelled & (seed == gt)))

    def merge(self, other: "SeedQuality") -> "SeedQuality":
        """Add the counts of ``other`` (e.g. gathered from another process); returns ``self``."""
        if not isinstance(other, SeedQuality):
            raise TypeError(f"can only merge a SeedQuality, got {type(other).__name__}")
        if other.ignore_index != self.ignore_index:
            raise ValueError(f"cannot merge: ignore_index {other.ignore_index} differs from "
                             f"{self.ignore_index}")
        self.correct += other.correct
        self.labelled += other.labelled
        self.valid += other.valid
        return self

    def precision(self) -> float:
        """``|C| / |L|`` in ``[0, 1]``; NaN when there are no seeds on non-void pixels."""
        return self.correct / self.labelled if self.labelled else float("nan")

    def coverage(self) -> float:
        """``|L| / |V|`` in ``[0, 1]``; NaN when every ground-truth pixel is void."""
        return self.labelled / self.valid if self.valid else float("nan")

    def summary(self) -> dict:
        """``{"seed_precision": pct or None, "seed_coverage": pct or None}``."""
        return {"seed_precision": percent_or_none(self.precision()),
                "seed_coverage": percent_or_none(self.coverage())}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(ignore_index={self.ignore_index}, "
                f"correct={self.correct}, labelled={self.labelled}, valid={self.valid})")


def seed_classes(seeds: np.ndarray, ignore_index: int = 255) -> list[int]:
    """The classes (0 background, 1..K) that a ``[H, W]`` seed map labels somewhere."""
    return [int(c) for c in np.unique(seeds) if c != ignore_index]


@dataclass
class SingleClassImages:
    """Images whose pseudo label is one class over the whole image, and images whose seeds hold
    fewer than two classes: the signs of seeds that nothing can be learned from. Images whose
    weak label names one class only are expected to be one class and are counted in
    ``one_class_named`` instead: an image without objects (no box, point or tag), or one object
    whose scribbles mark no background in a data set that scribbles background."""

    labels: list[str] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    one_class_named: int = 0

    SHOWN = 20                                # ids listed in metrics.json

    def update(self, image_id: str, label: np.ndarray, seeds: np.ndarray,
               classes_named: int = 2) -> None:
        """Count one image; ``classes_named``: how many classes (background included) its weak
        label allows."""
        if classes_named < 2:
            self.one_class_named += 1
            return
        if label.size and (label == label.flat[0]).all():
            self.labels.append(image_id)
        if len(seed_classes(seeds)) < 2:
            self.seeds.append(image_id)

    def merge(self, other: "SingleClassImages") -> "SingleClassImages":
        self.labels += other.labels
        self.seeds += other.seeds
        self.one_class_named += other.one_class_named
        return self

    def summary(self) -> dict:
        return {"single_class_labels": len(self.labels),
                "single_class_label_ids": sorted(self.labels)[:self.SHOWN],
                "seeds_single_class": len(self.seeds),
                "seeds_single_class_ids": sorted(self.seeds)[:self.SHOWN],
                "images_one_class_named": self.one_class_named}

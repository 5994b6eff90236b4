"""Where a box run's seeds are wrong, and whether its boxes' seeds meet the tightness prior.

    python scripts/box_seed_analysis.py --data DIR --run RUN [--coverage 0.95]

Reads ``RUN/seeds/<id>.png`` and ``RUN/pseudo_labels/<id>.png`` of a finished box run and the
data set's ground truth. Prints two tables (docs/results.md, issue 13):

1. **Depth of the wrong foreground seeds**: foreground seeds by their distance (px) to the edge
   of the foreground seed region, the share of the wrong ones (ground truth another class) and
   of the right ones in each band. Wrong seeds deep inside say that the seeding, not its edge,
   failed.
2. **Tightness**: boxes by the share of their rows and columns that their own-class seeds
   cross (``met`` at ``--coverage`` or more, as ``refine.tight_background`` uses it), and on
   their unknown pixels the share that is background and the share the run labels right.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

from graphwsss.data.palette import read_label_png
from graphwsss.data.records import IGNORE_INDEX
from graphwsss.data.voc import VOCDataset

DEPTHS = (4, 8, 16, 32, np.inf)


def seed_depths(seeds: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of wrong and right foreground seeds per depth band of :data:`DEPTHS`."""
    foreground = (seeds != 0) & (seeds != IGNORE_INDEX)
    depth = distance_transform_edt(foreground)
    judged = foreground & (truth != IGNORE_INDEX)
    bands = np.digitize(depth[judged], DEPTHS[:-1], right=True)
    wrong = (truth != seeds)[judged]
    return (np.bincount(bands[wrong], minlength=len(DEPTHS)),
            np.bincount(bands[~wrong], minlength=len(DEPTHS)))


def tightness_rows(sample, seeds: np.ndarray, truth: np.ndarray, label: np.ndarray,
                   coverage: float) -> list[tuple[str, int, int, int]]:
    """Per box: (bucket, unknown pixels with ground truth, background among them, right)."""
    rows = []
    for box in sample.boxes:
        own = seeds[box.slices()] == box.class_id
        if not own.size:
            continue
        share = min(own.any(axis=1).mean(), own.any(axis=0).mean())
        bucket = "met" if share >= coverage else ("0.8-met" if share >= 0.8 else "< 0.8")
        unknown = (seeds[box.slices()] == IGNORE_INDEX) & (truth[box.slices()] != IGNORE_INDEX)
        truth_box = truth[box.slices()]
        rows.append((bucket, int(unknown.sum()), int((unknown & (truth_box == 0)).sum()),
                     int((unknown & (label[box.slices()] == truth_box)).sum())))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="VOC-layout data set with ground truth")
    parser.add_argument("--run", required=True, type=Path, help="a finished box run")
    parser.add_argument("--coverage", type=float, default=0.95,
                        help="share of rows and columns for 'met' (refine.tight_coverage)")
    args = parser.parse_args(argv)
    dataset = VOCDataset(args.data)
    wrong = right = np.zeros(len(DEPTHS), np.int64)
    buckets: dict[str, np.ndarray] = {}
    images = 0
    for image_id in dataset.ids:
        seed_file = args.run / "seeds" / f"{image_id}.png"
        label_file = args.run / "pseudo_labels" / f"{image_id}.png"
        if not (seed_file.is_file() and label_file.is_file()):
            continue
        seeds, truth = read_label_png(seed_file), dataset.ground_truth(image_id)
        if seeds.shape != truth.shape:          # processed at max_side: not comparable here
            continue
        images += 1
        counts = seed_depths(seeds, truth)
        wrong, right = wrong + counts[0], right + counts[1]
        for bucket, *values in tightness_rows(dataset.load(image_id), seeds, truth,
                                              read_label_png(label_file), args.coverage):
            buckets.setdefault(bucket, np.zeros(4, np.int64))[:] += (1, *values)
    if not images:
        parser.error(f"{args.run}: no image with seeds and a pseudo label at full size")
    total = wrong.sum() + right.sum()
    share = 100 * wrong.sum() / max(total, 1)
    print(f"{images} images; foreground seeds {total}, wrong {share:.2f} %")
    low = 0
    for index, high in enumerate(DEPTHS):
        of_wrong = 100 * wrong[index] / max(wrong.sum(), 1)
        of_right = 100 * right[index] / max(right.sum(), 1)
        print(f"  depth {low:>3}-{high:<4} px: {of_wrong:5.1f} % of the wrong, "
              f"{of_right:5.1f} % of the right")
        low = high
    print("boxes by tightness: boxes, unknown px, background there, run right there")
    for bucket in ("met", "0.8-met", "< 0.8"):
        if bucket in buckets:
            boxes, unknown, background, ok = buckets[bucket]
            print(f"  {bucket:8s} {boxes:5d} {unknown:9d} "
                  f"{100 * background / max(unknown, 1):6.1f} % {100 * ok / max(unknown, 1):6.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

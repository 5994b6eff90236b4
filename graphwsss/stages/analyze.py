"""Error analysis of a run's pseudo labels: where its wrong pixels lie (``graphwsss analyze``).

Definitions (one image; ``[H, W]`` maps throughout):

* ``ground_truth`` ``[H, W]`` uint8, ``255`` void. Only non-void pixels are counted anywhere.
* ``prediction`` ``[H, W]`` uint8: ``RUN/pseudo_labels/<id>.png``. A pixel is *correct* when it
  equals the ground truth.
* ``seeds`` ``[H, W]`` uint8: ``RUN/seeds/<id>.png`` (0 background, 1..K classes, 255 unknown).
  A pixel is *seeded* when its seed is not 255, *unknown* otherwise. With ``against``, the pixels
  are split by the **first** run's seeds only (the second run's seeds may differ; the share of
  pixels whose seed differs is reported as ``against_seeds_differ``).
* *Ground-truth edge*: a pixel whose label differs from one of its 4-neighbours (void counts as a
  label here). *Band*: pixels at Euclidean distance ``<= r`` from an edge pixel, where
  ``r = ceil(0.02 * sqrt(H**2 + W**2))`` pixels (:func:`band_radius`); *interior*: the rest. An
  image without any edge has no band.
* Seed status × region give four atoms, in this order: ``seeded_band``, ``seeded_interior``,
  ``unknown_band``, ``unknown_interior``; every split of :data:`SPLITS` is a union of atoms
  (``all``, ``seeded``, ``unknown``, ``band``, ``interior`` and the four atoms themselves).

Everything is counted with one ``np.bincount`` per image into a table ``[4 atoms, K classes,
4 outcomes]`` (outcome ``2 * run_correct + against_correct``; without ``against`` the second bit
is 0), so that every number below is a ratio of sums of that table:

* ``accuracy`` of a split: correct / pixels (percent); ``share``: the split's pixels / all pixels.
* ``unknown_as_background`` (splits inside ``unknown`` only): the accuracy of labelling every
  pixel of the split background (class 0) — the GrabCut baseline for box runs.
* With ``against``: ``against_accuracy``; ``only_run`` (RUN right, RUN2 wrong) and
  ``only_against`` (RUN2 right, RUN wrong), as percent of the split's pixels.
* Per class (by ground-truth class): its pixels' accuracy (= recall) overall and per split.
* Per image: pixel accuracy overall and per split; images are ranked by **pixel accuracy**,
  worst first; with ``against``, also by ``difference`` = accuracy(RUN) - accuracy(RUN2), the
  images where RUN loses most first.

Images of the split without a pseudo label in RUN (or, with ``against``, in RUN2) are skipped and
counted; every other missing or mis-sized file is a :class:`DataError` naming it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt
from tqdm import tqdm

from graphwsss.data.errors import DataError
from graphwsss.data.palette import read_label_png
from graphwsss.data.voc import VOCDataset
from graphwsss.utils.io import atomic_write

VOID = 255
UNKNOWN = 255
BAND_FRACTION = 0.02
ATOMS = ("seeded_band", "seeded_interior", "unknown_band", "unknown_interior")
SPLITS = {
    "all": (0, 1, 2, 3),
    "seeded": (0, 1),
    "unknown": (2, 3),
    "band": (0, 2),
    "interior": (1, 3),
    "seeded_band": (0,),
    "seeded_interior": (1,),
    "unknown_band": (2,),
    "unknown_interior": (3,),
}
UNKNOWN_SPLITS = ("unknown", "unknown_band", "unknown_interior")
CLASS_SPLITS = ("seeded", "unknown", "band", "interior")


def band_radius(height: int, width: int, fraction: float = BAND_FRACTION) -> int:
    """``ceil(fraction * diagonal)`` in pixels (a hair of tolerance against float round-off)."""
    return max(0, math.ceil(fraction * math.hypot(height, width) - 1e-9))


def ground_truth_edges(ground_truth: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: pixels whose label differs from a 4-neighbour (void is a label too)."""
    edges = np.zeros(ground_truth.shape, dtype=bool)
    across = ground_truth[:, 1:] != ground_truth[:, :-1]
    edges[:, 1:] |= across
    edges[:, :-1] |= across
    down = ground_truth[1:, :] != ground_truth[:-1, :]
    edges[1:, :] |= down
    edges[:-1, :] |= down
    return edges


def boundary_band(ground_truth: np.ndarray, fraction: float = BAND_FRACTION) -> np.ndarray:
    """``[H, W]`` bool: pixels within :func:`band_radius` (Euclidean) of a ground-truth edge."""
    edges = ground_truth_edges(ground_truth)
    if not edges.any():
        return edges
    radius = band_radius(*ground_truth.shape, fraction=fraction)
    return distance_transform_edt(~edges) <= radius


def image_table(ground_truth: np.ndarray, prediction: np.ndarray, seeds: np.ndarray,
                band: np.ndarray, num_classes: int,
                against: np.ndarray | None = None) -> np.ndarray:
    """Counts ``[4 atoms, num_classes, 4 outcomes]`` (int64) of one image's non-void pixels.

    Atoms as in :data:`ATOMS`; outcome ``2 * (prediction == gt) + (against == gt)``.
    """
    valid = ground_truth != VOID
    truth = ground_truth[valid].astype(np.int64)
    outcome = 2 * (prediction[valid] == ground_truth[valid]).astype(np.int64)
    if against is not None:
        outcome += against[valid] == ground_truth[valid]
    atom = 2 * (seeds[valid] == UNKNOWN).astype(np.int64) + ~band[valid]
    code = (atom * num_classes + truth) * 4 + outcome
    return np.bincount(code, minlength=4 * num_classes * 4).reshape(4, num_classes, 4)


def _pct(numerator, denominator) -> float | None:
    return None if denominator == 0 else 100.0 * float(numerator) / float(denominator)


def _split_stats(table: np.ndarray, total: int, with_against: bool,
                 background: int | None = None) -> dict:
    """Numbers of one split from outcome counts ``[..., 4]`` (summed over the leading axes);
    ``background``: its pixels of ground-truth class 0, for ``unknown_as_background``."""
    outcomes = table.reshape(-1, 4).sum(axis=0)
    pixels = int(outcomes.sum())
    stats = {"pixels": pixels, "share": _pct(pixels, total),
             "accuracy": _pct(outcomes[2] + outcomes[3], pixels)}
    if background is not None:
        stats["unknown_as_background"] = _pct(background, pixels)
    if with_against:
        stats["against_accuracy"] = _pct(outcomes[1] + outcomes[3], pixels)
        stats["only_run"] = _pct(outcomes[2], pixels)
        stats["only_against"] = _pct(outcomes[1], pixels)
    return stats


def _read_map(path: Path, shape: tuple[int, int], what: str, gt_path: Path) -> np.ndarray:
    """A label PNG that must exist and match the ground truth's ``(H, W)``."""
    if not path.is_file():
        raise DataError(path, f"{what} is missing")
    label = read_label_png(path)
    if label.shape != shape:
        raise DataError(path, f"size {label.shape[1]}x{label.shape[0]} differs from the ground "
                              f"truth's {shape[1]}x{shape[0]} ({gt_path})")
    return label


def _pseudo_dir(run: Path) -> Path:
    if not run.is_dir():
        raise DataError(run, "run folder does not exist")
    folder = run / "pseudo_labels"
    if not folder.is_dir():
        raise DataError(folder, "pseudo_labels folder is missing (has the run finished a stage?)")
    return folder


def analyze_run(data_root: str | os.PathLike, run: str | os.PathLike,
                against: str | os.PathLike | None = None, split: str = "train",
                ids: list[str] | None = None, show_progress: bool = True) -> dict:
    """Error analysis of ``run`` (optionally against ``against``) on ``data_root``'s ``split``.

    Returns a JSON-ready dict: ``splits`` (name -> ``pixels``, ``share``, ``accuracy``, ...),
    ``per_class`` (class name -> ``pixels``, ``share``, ``accuracy``, ``splits``), ``per_image``
    (worst pixel accuracy first), with ``against`` also ``by_difference``; and the counts
    ``images``, ``skipped``, ``skipped_ids``. See the module docstring for the definitions.
    """
    dataset = VOCDataset(data_root, split=split, ids=ids)
    if not dataset.has_ground_truth:
        raise DataError(dataset.root / "SegmentationClass", "no ground truth to analyze against")
    run = Path(run)
    pseudo_dir = _pseudo_dir(run)
    against = Path(against) if against is not None else None
    against_dir = _pseudo_dir(against) if against is not None else None
    num_classes = dataset.num_classes

    missing_run = [i for i in dataset.ids if not (pseudo_dir / f"{i}.png").is_file()]
    missing_against = ([i for i in dataset.ids if not (against_dir / f"{i}.png").is_file()]
                       if against_dir is not None else [])
    skipped = set(missing_run) | set(missing_against)
    todo = [i for i in dataset.ids if i not in skipped]
    if not todo:
        if len(missing_run) == len(dataset.ids):
            raise DataError(pseudo_dir, f"no pseudo label for any image of split {split!r}")
        raise DataError(against_dir, f"no image of split {split!r} has a pseudo label both here "
                                     f"and in {pseudo_dir}")

    total = np.zeros((4, num_classes, 4), dtype=np.int64)
    seeds_differ = 0
    against_seeds_seen = False
    images = []
    for image_id in tqdm(todo, desc="analyze", disable=not show_progress):
        gt_path = dataset.ground_truth_path(image_id)
        ground_truth = dataset.ground_truth(image_id)
        shape = ground_truth.shape
        prediction = _read_map(pseudo_dir / f"{image_id}.png", shape, "pseudo label", gt_path)
        seeds = _read_map(run / "seeds" / f"{image_id}.png", shape,
                          "seed file (the analysis splits pixels by the run's seeds)", gt_path)
        second = None
        if against_dir is not None:
            second = _read_map(against_dir / f"{image_id}.png", shape, "pseudo label", gt_path)
            other_seeds_path = against / "seeds" / f"{image_id}.png"
            if other_seeds_path.is_file():
                other_seeds = _read_map(other_seeds_path, shape, "seed file", gt_path)
                seeds_differ += int(((other_seeds != seeds) & (ground_truth != VOID)).sum())
                against_seeds_seen = True
        band = boundary_band(ground_truth)
        table = image_table(ground_truth, prediction, seeds, band, num_classes, second)
        total += table
        per_atom = table.sum(axis=1)                      # [4 atoms, 4 outcomes]
        pixels = int(per_atom.sum())
        overall = _split_stats(per_atom, pixels, against is not None)
        del overall["share"]
        record = {"id": image_id, "band_radius": band_radius(*shape), **overall,
                  "splits": {name: _split_stats(per_atom[list(atoms)], pixels,
                                                against is not None)
                             for name, atoms in SPLITS.items() if name != "all"}}
        if against is not None:
            acc, acc2 = record["accuracy"], record["against_accuracy"]
            record["difference"] = None if acc is None else acc - acc2
        images.append(record)

    pixels_total = int(total.sum())
    with_against = against is not None
    splits = {name: _split_stats(total[list(atoms)], pixels_total, with_against,
                                 int(total[list(atoms), 0].sum()) if name in UNKNOWN_SPLITS
                                 else None)
              for name, atoms in SPLITS.items()}
    per_class = {}
    for k, name in enumerate(dataset.class_names):
        class_table = total[:, k, :]                      # [4 atoms, 4 outcomes]
        stats = _split_stats(class_table, pixels_total, with_against)
        stats["splits"] = {split_name: _split_stats(class_table[list(SPLITS[split_name])],
                                                    int(class_table.sum()), with_against)
                           for split_name in CLASS_SPLITS}
        per_class[name] = stats

    def worst_first(record):
        return (math.inf if record["accuracy"] is None else record["accuracy"], record["id"])

    result = {
        "data": str(dataset.root), "split": split, "run": str(run),
        "against": str(against) if against is not None else None,
        "images": len(todo), "skipped": len(skipped),
        "skipped_ids": [i for i in dataset.ids if i in skipped],
        "skipped_no_pseudo_label_in_run": len(missing_run),
        "skipped_no_pseudo_label_in_against": len(missing_against) if with_against else None,
        "pixels": pixels_total,
        "definitions": {
            "pixels": "non-void ground-truth pixels",
            "seeded": "seed != 255 in RUN/seeds/<id>.png (the first run's seeds, also with "
                      "--against)",
            "band": f"Euclidean distance <= ceil({BAND_FRACTION} * image diagonal) px from a "
                    "ground-truth edge (label differs from a 4-neighbour; void is a label)",
            "accuracy": "percent of the split's pixels whose label equals the ground truth",
            "share": "percent of all pixels in the split (per_class: of all pixels; in a "
                     "class's or an image's splits: of that class's or image's pixels)",
            "unknown_as_background": "accuracy of labelling the split's pixels background",
            "only_run": "percent of the split's pixels RUN gets right and RUN2 wrong",
            "only_against": "percent of the split's pixels RUN2 gets right and RUN wrong",
            "per_image_order": "pixel accuracy, worst first",
            "by_difference": "accuracy(RUN) - accuracy(RUN2), most negative first",
        },
        "splits": splits,
        "per_class": per_class,
        "per_image": sorted(images, key=worst_first),
    }
    if with_against:
        result["against_seeds_differ"] = (_pct(seeds_differ, pixels_total)
                                          if against_seeds_seen else None)
        result["by_difference"] = [
            {"id": r["id"], "accuracy": r["accuracy"], "against_accuracy": r["against_accuracy"],
             "difference": r["difference"]}
            for r in sorted(images, key=lambda r: (math.inf if r["difference"] is None
                                                   else r["difference"], r["id"]))]
    return result


SPLIT_LABELS = {"all": "all", "seeded": "seeded", "unknown": "unknown", "band": "band",
                "interior": "interior", "seeded_band": "seeded∩band",
                "seeded_interior": "seeded∩interior", "unknown_band": "unknown∩band",
                "unknown_interior": "unknown∩interior"}


def _f(value, width: int = 7, signed: bool = False) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>+{width}.1f}" if signed else f"{value:>{width}.1f}"


def format_report(result: dict, top: int = 10) -> str:
    """The splits, the ``top`` worst images (and biggest losses to RUN2), per class, as text."""
    with_against = result["against"] is not None
    lines = [f"{result['images']} images analyzed, {result['skipped']} skipped (no pseudo label"
             + (" in one of the runs" if with_against else "") + f"), split {result['split']!r}",
             "seeded/unknown by " + ("the first run's seeds (RUN2's seeds are not used"
                                     + (f"; they differ on {result['against_seeds_differ']:.1f}% "
                                        "of pixels" if result.get("against_seeds_differ")
                                        is not None else "") + ")"
                                     if with_against else "the run's seeds")
             + "; band = within ceil(2% of the diagonal) px of a ground-truth edge",
             "accuracies in percent" + ("; +run = RUN right and RUN2 wrong, +against = the "
                                        "reverse (percent of the split)" if with_against else ""),
             ""]
    header = f"{'split':<18}{'share':>7}{'acc':>7}{'unk→bg':>8}"
    if with_against:
        header += f"{'acc2':>7}{'+run':>7}{'+against':>9}"
    lines.append(header)
    for name, stats in result["splits"].items():
        row = (f"{SPLIT_LABELS[name]:<18}{_f(stats['share'])}{_f(stats['accuracy'])}"
               f"{_f(stats.get('unknown_as_background'), 8)}")
        if with_against:
            row += (f"{_f(stats['against_accuracy'])}{_f(stats['only_run'])}"
                    f"{_f(stats['only_against'], 9)}")
        lines.append(row)

    images = result["per_image"][:top]
    width = max([len("image")] + [len(r["id"]) for r in images]) + 2
    lines += ["", f"worst {len(images)} images by pixel accuracy"]
    header = f"{'image':<{width}}{'acc':>7}{'unk%':>7}{'unk acc':>8}{'band':>7}{'inter':>7}"
    if with_against:
        header += f"{'acc2':>7}{'diff':>7}"
    lines.append(header)
    for r in images:
        row = (f"{r['id']:<{width}}{_f(r['accuracy'])}{_f(r['splits']['unknown']['share'])}"
               f"{_f(r['splits']['unknown']['accuracy'], 8)}{_f(r['splits']['band']['accuracy'])}"
               f"{_f(r['splits']['interior']['accuracy'])}")
        if with_against:
            row += f"{_f(r['against_accuracy'])}{_f(r['difference'], signed=True)}"
        lines.append(row)

    if with_against:
        losses = result["by_difference"][:top]
        width = max([len("image")] + [len(r["id"]) for r in losses]) + 2
        lines += ["", f"{len(losses)} images where RUN loses most to RUN2 "
                      "(lowest diff = acc - acc2 first)",
                  f"{'image':<{width}}{'acc':>7}{'acc2':>7}{'diff':>7}"]
        lines += [f"{r['id']:<{width}}{_f(r['accuracy'])}{_f(r['against_accuracy'])}"
                  f"{_f(r['difference'], signed=True)}" for r in losses]

    width = max([len("class")] + [len(name) for name in result["per_class"]]) + 2
    lines += ["", "per ground-truth class (accuracy = recall)"]
    header = (f"{'class':<{width}}{'share':>7}{'acc':>7}{'seeded':>8}{'unknown':>8}"
              f"{'band':>7}{'inter':>7}")
    if with_against:
        header += f"{'acc2':>7}"
    lines.append(header)
    for name, stats in result["per_class"].items():
        if not stats["pixels"]:
            continue
        parts = stats["splits"]
        row = (f"{name:<{width}}{_f(stats['share'])}{_f(stats['accuracy'])}"
               f"{_f(parts['seeded']['accuracy'], 8)}{_f(parts['unknown']['accuracy'], 8)}"
               f"{_f(parts['band']['accuracy'])}{_f(parts['interior']['accuracy'])}")
        if with_against:
            row += _f(stats["against_accuracy"])
        lines.append(row)
    return "\n".join(lines)


def write_analysis(path: str | os.PathLike, result: dict) -> Path:
    """Write the analysis as indented JSON, atomically."""
    return atomic_write(path, json.dumps(result, indent=2) + "\n")

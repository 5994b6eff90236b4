"""The refine stage (docs/method.md §7): node probabilities to pseudo labels.

Reads ``probabilities/<id>.npy`` (float16 ``[K, h, w]``, the propagation stage's); per image:
upsampling to the working size (bilinear, stride ``s`` from the grid), the classes restricted to
the weak labels (box runs: each class only inside its own boxes; other runs: background and the
classes the scribbles, points or tags name), for box runs the tightness prior
(:mod:`graphwsss.postprocess.tightness`, ``refine.tight_background``), DenseCRF (``crf.*``),
restricted again, arg-max, for box runs GrabCut started from that label
(:mod:`graphwsss.postprocess.grabcut`, ``refine.grabcut_iterations``, off by default), and back
to the original size (``max_side``). Writes
``pseudo_labels/<id>.png`` and, for images with boxes, ``instances/<id>.png`` + ``.json`` (one
mask per box). Images with a pseudo label are skipped; changing only ``crf.*`` reruns this stage
alone, in seconds.

:func:`write_collections` then gathers every image's instances into ``instances/instances.json``
(and, for COCO input, ``annotations.json``: the input file with one mask per box).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from graphwsss.data.palette import read_label_png, write_label_png
from graphwsss.data.records import IGNORE_INDEX, Sample
from graphwsss.data.resize import upscale_label
from graphwsss.postprocess import (clear_outside_boxes, dense_crf, grabcut_from_label,
                                   instances_from_boxes, instances_to_coco, tight_box_background,
                                   upsample_probs, write_instance_png)
from graphwsss.settings import CRFSettings, RefineSettings
from graphwsss.stages.paths import RunContext, RunPaths
from graphwsss.utils.io import atomic_write
from graphwsss.utils.runtime import get_logger

log = get_logger(__name__)


def run(ctx: RunContext, image_ids: list[str]) -> None:
    """Write the pseudo label (and instances) of every image in ``image_ids`` that has none."""
    paths, settings = ctx.paths, ctx.settings
    todo = [image_id for image_id in image_ids if not paths.pseudo_label(image_id).is_file()]
    log.info("stage refine: %d images (%d already done), CRF %s -> %s", len(todo),
             len(image_ids) - len(todo), "on" if settings.crf.enabled else "off",
             paths.pseudo_labels)
    redrawn = boxes = 0
    for image_id in ctx.progress(todo, "refine"):
        sample = ctx.dataset.load(image_id)
        path = paths.probabilities(image_id)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no node probabilities for image {image_id!r}; "
                                    "run the propagation stage first")
        full = pixel_probabilities(sample, np.load(path), settings.supervision,
                                   paths.seed(image_id), settings.refine)
        label = probabilities_to_label(
            sample.image, full, settings.crf if settings.crf.enabled else None,
            lambda values: restrict_to_weak_labels(sample, values, settings.supervision))
        label, taken = grabcut_boxes(sample, label, settings.supervision, settings.refine)
        redrawn, boxes = redrawn + taken, boxes + len(sample.boxes)
        if sample.original_size is not None:     # processed at max_side: back to full size
            label = upscale_label(label, sample.original_size)
        write_pseudo_label(paths, sample, label)
    if settings.refine.grabcut_iterations and settings.supervision == "box" and todo:
        log.info("refine: GrabCut from the pseudo label redrew %d of %d boxes (the others kept "
                 "the propagation's label)", redrawn, boxes)


def pixel_probabilities(sample: Sample, node_probs: np.ndarray, supervision: str,
                        seed_file: str | Path, refine: RefineSettings) -> np.ndarray:
    """Saved node probabilities ``[K, h, w]`` to ``[K, H, W]`` at the sample's size: upsampled
    bilinearly, restricted to the weak labels, and (boxes, ``refine.tight_background``) the
    tightness prior on the seeds of ``seed_file``: everything the refine stage does before the
    CRF."""
    probs = torch.from_numpy(node_probs.astype(np.float32))
    size = (sample.height, sample.width)
    full = upsample_probs(probs, size, stride=node_stride(size, tuple(probs.shape[-2:])))
    full = restrict_to_weak_labels(sample, full.numpy(), supervision)
    if refine.tight_background != 1 and sample.boxes:
        full = tight_box_background(full, sample.boxes, read_label_png(seed_file),
                                    refine.tight_background, refine.tight_coverage)
    return full


def grabcut_boxes(sample: Sample, label: np.ndarray, supervision: str,
                  refine: RefineSettings) -> tuple[np.ndarray, int]:
    """``label`` with each box's object redrawn by GrabCut started from it, and how many boxes
    took GrabCut's result: box runs with ``refine.grabcut_iterations`` > 0; otherwise
    ``(label, 0)``."""
    if supervision != "box" or not refine.grabcut_iterations or not sample.boxes:
        return label, 0
    return grabcut_from_label(sample.image, label, sample.boxes, refine.grabcut_iterations,
                              refine.tight_coverage)


def node_stride(image_size: tuple[int, int], grid_size: tuple[int, int]) -> int:
    """The stride ``s`` with ``grid = (ceil(H / s), ceil(W / s))``: what upsampling saved node
    probabilities needs."""
    (height, width), (h, w) = image_size, grid_size
    for stride in range(1, max(height, width) + 1):
        if (math.ceil(height / stride), math.ceil(width / stride)) == (h, w):
            return stride
    raise ValueError(f"a {h}x{w} node grid does not tile a {height}x{width} image")


def allowed_classes(sample: Sample, supervision: str) -> list[int]:
    """Background and the classes the image's weak labels name: its boxes' classes, scribble
    classes, point classes or tags. Pseudo labels never contain any other class. Background is
    left out when the weak labels say the image has none (``sample.no_background``)."""
    if supervision == "box":
        named = {box.class_id for box in sample.boxes}
    elif supervision == "scribble":
        named = set(np.unique(sample.scribble).tolist()) - {IGNORE_INDEX}
    elif supervision == "point":
        named = {point.class_id for point in sample.points or []}
    else:
        named = set(sample.tags)
    return sorted(named if sample.no_background else named | {0})


def restrict_to_weak_labels(sample: Sample, full: np.ndarray, supervision: str) -> np.ndarray:
    """``[C, H, W]`` probabilities restricted to the weak labels (§7): box runs clear every class
    outside its own boxes; other runs clear the classes the weak labels do not name."""
    if supervision == "box":
        return clear_outside_boxes(full, sample.boxes)
    full = full.copy()
    full[np.setdiff1d(np.arange(full.shape[0]), allowed_classes(sample, supervision))] = 0.0
    return full


def probabilities_to_label(image: np.ndarray, probs: np.ndarray, crf: CRFSettings | None,
                           restrict: Callable[[np.ndarray], np.ndarray] | None = None
                           ) -> np.ndarray:
    """``[C, H, W]`` probabilities of an ``[H, W, 3]`` image to a ``[H, W]`` uint8 label:
    restricted, DenseCRF (``crf``, unless ``None``), restricted again, arg-max."""
    if restrict is not None:
        probs = restrict(probs)
    if crf is not None:
        probs = dense_crf(image, probs, iterations=crf.iterations,
                          gaussian_sxy=crf.gaussian_sxy, gaussian_compat=crf.gaussian_compat,
                          bilateral_sxy=crf.bilateral_sxy, bilateral_srgb=crf.bilateral_srgb,
                          bilateral_compat=crf.bilateral_compat)
        if restrict is not None:
            probs = restrict(probs)
    return probs.argmax(axis=0).astype(np.uint8)


def write_pseudo_label(paths: RunPaths, sample: Sample, label: np.ndarray) -> None:
    """Write ``label`` (at the image's original size) as the run's pseudo label of ``sample``,
    with one instance mask per box (``instances/<id>.png``, COCO-style ``.json``)."""
    boxes = sample.original_boxes if sample.original_boxes is not None else sample.boxes
    if boxes:
        instance = instances_from_boxes(label, boxes)
        write_instance_png(paths.image_file("instances", sample.image_id, ".png"), instance)
        coco = instances_to_coco(sample.image_id, instance, label, boxes, *label.shape)
        atomic_write(paths.image_file("instances", sample.image_id, ".json"), json.dumps(coco))
    # The pseudo label is written last: its presence marks the image as finished.
    write_label_png(paths.pseudo_label(sample.image_id), label)


def read_instances(paths: RunPaths, image_id: str) -> list[dict] | None:
    """One image's instance results (``instances/<id>.json``), ``None`` when it has none."""
    path = paths.instances / f"{image_id}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_collections(ctx: RunContext, image_ids: list[str]) -> None:
    """All images' COCO-style instance results in one ``instances/instances.json`` (for COCO
    input with the file's image and category ids, as COCO tools expect), and for COCO input
    ``annotations.json``: the input file with one RLE mask per box."""
    dataset, paths = ctx.dataset, ctx.paths
    convert = getattr(dataset, "to_result", None)
    results = []
    for image_id in image_ids:
        made = read_instances(paths, image_id)
        if made is not None:                 # images with boxes only: instances come from boxes
            results.extend(map(convert, made) if convert else made)
    if results or paths.instances.is_dir():
        atomic_write(paths.instances / "instances.json", json.dumps(results))
    if hasattr(dataset, "with_masks"):        # COCO input: its file, with the masks
        coco = dataset.with_masks(image_ids, lambda image_id: read_instances(paths, image_id))
        atomic_write(paths.root / "annotations.json", json.dumps(coco))
        log.info("COCO annotations with masks -> %s", paths.root / "annotations.json")

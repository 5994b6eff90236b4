"""The seeds stage (docs/method.md §2): weak labels (and CAMs) to the GNN's seeds M_g.

Reads the data set's weak labels (boxes, scribbles, points, tags) and, in runs with CAMs, the
cam stage's ``cams/<id>.npy``; writes ``seeds/<id>.png`` (255 = unknown) and, where the affinity
CNN learns from other seeds (scribble, point), ``affinity_seeds/<id>.png``. Images whose seeds
exist are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from graphwsss.config import ConfigError
from graphwsss.data.errors import DataError
from graphwsss.data.palette import write_label_png
from graphwsss.data.records import IGNORE_INDEX, Sample
from graphwsss.data.resize import upscale_label
from graphwsss.metrics.seeds import seed_classes
from graphwsss.seeds.background import add_background_seeds, background_share
from graphwsss.seeds.files import read_seed_file
from graphwsss.seeds.fusion import fuse_box_and_cam_seeds, select_confident_seeds
from graphwsss.seeds.grabcut import grabcut_box_seeds
from graphwsss.seeds.sparse import (expand_to_superpixels, image_superpixels, merge_seeds,
                                    points_to_map, require_weak_label)
from graphwsss.settings import RunSettings
from graphwsss.stages.cam import cam_seeds, confident_cam_seeds, load_image_cams
from graphwsss.stages.paths import RunContext
from graphwsss.stages.refine import allowed_classes
from graphwsss.utils.runtime import get_logger

log = get_logger(__name__)


def run(ctx: RunContext, image_ids: list[str]) -> None:
    """Write the seeds of every image in ``image_ids`` that has none yet (:func:`make_seeds`);
    warn for each image whose seeds hold fewer than two classes."""
    paths = ctx.paths
    todo = [image_id for image_id in image_ids if not paths.seed(image_id).is_file()]
    log.info("stage seeds: %d images (%d already done), %s supervision -> %s", len(todo),
             len(image_ids) - len(todo), ctx.settings.supervision, paths.seeds)
    for image_id in ctx.progress(todo, "seeds"):
        sample = ctx.dataset.load(image_id)
        gnn_seeds, affinity_seeds = make_seeds(sample, ctx.settings, load_image_cams(ctx, sample),
                                               num_classes=ctx.dataset.num_classes)
        present = seed_classes(gnn_seeds)
        if len(present) < 2 and len(allowed_classes(sample, ctx.settings.supervision)) > 1:
            log.warning("image %s: its seeds hold %s only, so its pseudo label will be one "
                        "class over the whole image", image_id,
                        f"class {present[0]}" if present else "no class")
        if affinity_seeds is not gnn_seeds:
            write_label_png(paths.image_file("affinity_seeds", image_id, ".png"), affinity_seeds)
        # The GNN seeds are written last: their presence marks the image as done.
        write_label_png(paths.seed(image_id), gnn_seeds)


def make_seeds(sample: Sample, settings: RunSettings, cams: np.ndarray | None = None,
               num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(GNN seeds M_g, affinity-CNN seeds)`` of one image for the run's supervision (§2).

    * ``seeds.source=files``: read from ``<seeds.dir>/<id>.png`` (another tool's labels or
      masks, :mod:`graphwsss.seeds.files`; label ids checked against ``num_classes``), the
      same for both, whatever the supervision.

    * box: GrabCut in the boxes, background outside (3.2–3.3); both the same. With CAMs
      (``seeds.cam_fusion``), GrabCut's M_B fused with the CAM's M_I (3.4) and kept where
      confident (3.5).
    * scribble: scribbles expanded to superpixels (M_S) for the GNN; M_S, else the CAM's
      confident seeds M'_I, for the affinity CNN (the GNN's seeds with
      ``seeds.scribble_affinity_cam=false``). An image whose scribbles mark too little
      background takes M'_I's confident background into M_g too, unless the data set's
      scribbles mark background wherever there is some (``sample.no_background``): such an image
      gets no background seed at all.
    * point: points expanded to superpixels (M_P), else M'_I (only its background with
      ``seeds.point_cam_foreground=false``), for the GNN; M'_I for the CNN.
    * image: M'_I for both.

    Scribble, point and image seeds that still hold too little background (a weak CAM has no
    confident background) get background at the lowest-CAM pixels far from every annotation
    (:func:`graphwsss.seeds.background.add_background_seeds`, ``seeds.background_*``), else
    nothing would say "background" and every pseudo label would be one class.
    """
    supervision = settings.supervision
    if settings.seeds.source == "files":
        seeds = seeds_from_file(sample, settings, num_classes)
        return seeds, seeds
    if supervision == "box":
        seeds = grabcut_box_seeds(sample.image, sample.boxes,
                                  iterations=settings.seeds.grabcut_iterations,
                                  min_size=settings.seeds.min_box_size, image_id=sample.image_id)
        if cams is not None:
            seeds = fused_box_seeds(seeds, cams, sample.boxes, settings)
        return seeds, seeds
    if cams is None:
        raise ValueError(f"{supervision} supervision needs the image's CAMs")
    confident = confident_cam_seeds(cams, settings.cam.seed_fraction,
                                    settings.cam.seed_background_threshold)
    rule = settings.seeds

    def with_background(seeds, annotations=None, segments=None):
        return add_background_seeds(seeds, cams, annotations, segments,
                                    min_share=rule.background_min_share,
                                    fraction=rule.background_fraction,
                                    min_distance=rule.background_min_distance)

    if supervision == "image":
        seeds = with_background(confident)
        return seeds, seeds
    segments = image_superpixels(sample.image, method=rule.superpixel_method,
                                 segments=rule.superpixels)
    if supervision == "scribble":
        scribbled = sample.scribble is not None and bool((sample.scribble != IGNORE_INDEX).any())
        require_weak_label(scribbled, sample.image_path, "scribble (SegmentationScribble/<id>.png)")
        expanded = expand_to_superpixels(sample.scribble, segments)
        if sample.no_background:
            objects_only = np.where(confident == 0, IGNORE_INDEX, confident).astype(np.uint8)
            return expanded, (merge_seeds(expanded, objects_only) if rule.scribble_affinity_cam
                              else expanded)
        gnn = expanded
        if background_share(expanded) < rule.background_min_share:
            gnn = merge_seeds(expanded, _background_only(confident))
        gnn = with_background(gnn, sample.scribble, segments)
        if not rule.scribble_affinity_cam:
            return gnn, gnn
        return gnn, with_background(merge_seeds(expanded, confident), sample.scribble, segments)
    # An entry with no point is an image without objects: its seeds are background only.
    require_weak_label(sample.points is not None, sample.image_path, "entry in points.json")
    points = points_to_map(sample.points, sample.height, sample.width, sample.image_id)
    expanded = expand_to_superpixels(points, segments)
    fill = confident if rule.point_cam_foreground else _background_only(confident)
    return (with_background(merge_seeds(expanded, fill), points, segments),
            with_background(confident, points, segments))


def _background_only(seeds: np.ndarray) -> np.ndarray:
    """``seeds``' background (0); every other pixel unknown (255)."""
    return np.where(seeds == 0, 0, IGNORE_INDEX).astype(np.uint8)


def seeds_from_file(sample: Sample, settings: RunSettings,
                    num_classes: int | None) -> np.ndarray:
    """The seeds of ``<seeds.dir>/<id>.png`` (``seeds.file_kind``), read at the image's full size
    (with its boxes there) and brought to its working size (``max_side``), nearest."""
    if settings.seeds.dir is None:
        raise ConfigError("seeds.source=files needs seeds.dir, the folder of <id>.png seeds")
    if settings.seeds.file_kind == "labels" and num_classes is None:
        raise ValueError("label seed files are checked against the data set's classes: "
                         "pass num_classes")
    size = sample.original_size or (sample.height, sample.width)
    boxes = sample.original_boxes if sample.original_boxes is not None else sample.boxes
    seeds = read_seed_file(settings.seeds.dir, sample.image_id, settings.seeds.file_kind,
                           num_classes or 0, boxes, size)
    return upscale_label(seeds, (sample.height, sample.width))


def fused_box_seeds(box_seeds: np.ndarray, cams: np.ndarray, boxes: list,
                    settings: RunSettings) -> np.ndarray:
    """Box seeds M_B fused with CAM seeds (§2): M_F of (3.4) from M_B and M_I (background below
    ``cam.background_threshold``), then the confident selection of (3.5) against M'_I (each
    class's top ``cam.seed_fraction``)."""
    fused = fuse_box_and_cam_seeds(box_seeds, cam_seeds(cams, settings.cam.background_threshold),
                                   boxes)
    return select_confident_seeds(fused, box_seeds,
                                  confident_cam_seeds(cams, settings.cam.seed_fraction,
                                                      settings.cam.seed_background_threshold))


def check_seed_source(settings: RunSettings) -> None:
    """``seeds.source=files`` needs ``seeds.dir`` naming a folder (before anything runs)."""
    if settings.seeds.source != "files":
        return
    if not settings.seeds.dir:
        raise ConfigError("seeds.source=files needs seeds.dir=DIR, the folder of <id>.png seeds")
    if not Path(settings.seeds.dir).is_dir():
        raise DataError(settings.seeds.dir, "seeds.dir is not a folder (seeds.source=files "
                                            "reads <seeds.dir>/<id>.png for every image)")

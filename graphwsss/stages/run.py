"""``graphwsss run``: weak labels to pseudo labels, every stage in order (docs/method.md §1).

Each stage is a module with a ``run(ctx, ...)`` that reads the files of the stages before it,
writes its own under ``<out>`` (atomically, one image at a time) and skips finished images:

1. cam (:mod:`~graphwsss.stages.cam`, §3): ``cam/model.pt``, ``cams/<id>.npy``, the CAM network
   trained on the tags (scribble, point, image runs; box runs with ``seeds.cam_fusion``)
2. seeds (:mod:`~graphwsss.stages.seeds`, §2): ``seeds/<id>.png`` (and ``affinity_seeds/``)
3. affinity (:mod:`~graphwsss.stages.affinity`, §4): ``affinity/model.pt``, for
   ``graph.builder=affinity``
4. propagation (:mod:`~graphwsss.stages.propagate`, §6): ``probabilities/<id>.npy``, float16
   node probabilities ``[K, h, w]``; features and graphs from :mod:`~graphwsss.stages.graph` (§5)
5. refine (:mod:`~graphwsss.stages.refine`, §7): ``pseudo_labels/<id>.png``, ``instances/``
   (and ``annotations.json`` for COCO input)
6. segment (:mod:`~graphwsss.stages.segment`, §9): ``segmenter/``, refinement rounds
   (``segmenter.rounds``) that replace the pseudo labels
7. evaluate (:mod:`~graphwsss.stages.evaluate`, §8): ``metrics.json``, when ground truth exists
8. report (:mod:`~graphwsss.stages.report`): ``report.html``

``stages.json`` records the settings that made each stage's files
(:mod:`~graphwsss.stages.manifest`): a rerun resumes, stops when settings differ, or with
``force`` recomputes from the first stage whose settings differ. ``stages=("refine", "evaluate")`` reruns only the stages named (their
files are replaced; those of later stages that are not named are deleted as stale), e.g. a new
``crf.*`` in seconds.

Under ``torchrun --nproc_per_node N`` every rank takes every N-th image; rank 0 gathers the
metrics and writes the run-level files.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from graphwsss.config import ConfigError, to_yaml, validate_settings
from graphwsss.data.coco import COCODataset, find_coco_files, is_coco_input
from graphwsss.data.errors import DataError
from graphwsss.data.resize import ResizedDataset
from graphwsss.data.voc import VOCDataset
from graphwsss.settings import RunSettings
from graphwsss.stages import affinity, cam, evaluate, propagate, refine, report, seeds, segment
from graphwsss.stages.manifest import (RUN_STAGES, check_stages, plan_stages, stage_keys,
                                       uses_cams, write_manifest)
from graphwsss.stages.paths import RunContext, RunPaths
from graphwsss.utils.distributed import setup_process
from graphwsss.utils.io import atomic_write
from graphwsss.utils.runtime import get_logger

log = get_logger(__name__)


def run(data_root: str | os.PathLike, out_dir: str | os.PathLike, settings: RunSettings,
        show_progress: bool = True, force: bool = False,
        images: str | os.PathLike | None = None,
        stages: tuple[str, ...] | list[str] | None = None) -> dict | None:
    """Run the stages on ``data_root`` and write the outputs under ``out_dir``.

    ``stages``: ``None`` runs every stage, resuming from the outputs already there when the
    settings that made them match; when they differ, raises :class:`ConfigError` naming the
    settings, or with ``force`` recomputes the first differing stage and every later one. A
    subset of :data:`~graphwsss.stages.manifest.RUN_STAGES` reruns those stages only, on the
    files of the earlier ones (whose settings must match).

    Returns the metrics (rank 0, when ground truth exists), else ``None``.
    """
    started = time.perf_counter()
    validate_settings(settings)      # settings made in code too: ranges, device (ConfigError)
    seeds.check_seed_source(settings)
    device, context = setup_process(settings.device, settings.seed)
    dataset, image_ids = open_dataset(data_root, settings, images)
    paths = RunPaths(Path(out_dir))
    ctx = RunContext(dataset, paths, settings, device, show_progress and context.is_main)
    if stages is None:
        todo = RUN_STAGES
        if context.is_main or not force:     # before any stage runs; rank 0 alone deletes
            manifest = check_stages(paths.root, settings, force=force)
    else:
        todo = tuple(stage for stage in RUN_STAGES if stage in stages)
        check_inputs(ctx, todo, image_ids)
        manifest = plan_stages(paths.root, settings, todo, delete=context.is_main)
    context.barrier()
    if context.is_main:
        # Only now: config.yaml and stages.json describe what is (and will be) on disk.
        manifest = write_manifest(paths.root, manifest, settings, {})
        atomic_write(paths.root / "config.yaml", to_yaml(settings))
        log.info("run: %s supervision, %d images of %s -> %s (stages %s; settings in %s)",
                 settings.supervision, len(image_ids), dataset.root, paths.root,
                 ", ".join(todo), paths.root / "config.yaml")
    own_ids = context.shard(image_ids)
    labelled = sum(paths.pseudo_label(image_id).is_file() for image_id in image_ids)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def timed(stage: str) -> None:
        nonlocal clock
        context.barrier()
        now = time.perf_counter()
        seconds[stage] = now - clock
        clock = now

    if "cam" in todo:
        cam.run(ctx, image_ids, own_ids)
        timed("cam")
    if "seeds" in todo:
        seeds.run(ctx, own_ids)
        timed("seeds")           # every rank trains the affinity CNN on all seeds (DDP)
    network = None
    if "affinity" in todo:
        network = affinity.run(ctx, image_ids)
        timed("affinity")
    if "propagation" in todo:
        propagate.run(ctx, own_ids, affinity_network=network)
        timed("propagation")
    if "refine" in todo:
        refine.run(ctx, own_ids)
        timed("refine")
    if "segment" in todo:
        segment.run(ctx, image_ids, own_ids, context)
        timed("segment")
    if context.is_main and {"refine", "segment"} & set(todo):
        refine.write_collections(ctx, image_ids)
    if context.is_main:
        manifest = write_manifest(paths.root, manifest, settings, seconds)
    metrics = None
    if "evaluate" in todo:
        metrics = evaluate.run(ctx, image_ids, own_ids, context,
                               _timing(manifest, started, labelled, len(image_ids)))
    if "report" in todo and context.is_main:
        if metrics is None and (paths.root / "metrics.json").is_file():   # --stages report
            metrics = json.loads((paths.root / "metrics.json").read_text(encoding="utf-8"))
        page = report.write_report(paths.root, dataset, image_ids[:settings.report_images],
                                   metrics, title=f"graphwsss run: {dataset.root.name}, "
                                                  f"{settings.supervision}")
        log.info("report -> %s", page)
    context.barrier()
    return metrics


def check_inputs(ctx: RunContext, stages: tuple[str, ...], image_ids: list[str]) -> None:
    """Before a partial run deletes anything: the files its first stage reads exist for every
    image (else :class:`ConfigError` naming one missing file and the stage that writes it)."""
    paths, settings = ctx.paths, ctx.settings
    used = stage_keys(settings)
    first = next((stage for stage in stages if stage in used or stage in ("evaluate", "report")),
                 None)
    needs = {"seeds": [("cam", paths.cams)] if uses_cams(settings) else [],
             "affinity": [("seeds", paths.seed)], "propagation": [("seeds", paths.seed)],
             "refine": [("propagation", paths.probabilities), ("seeds", paths.seed)],
             "segment": [("refine", paths.pseudo_label)],
             "evaluate": [("refine", paths.pseudo_label), ("seeds", paths.seed)]}
    for maker, path_of in needs.get(first, []):
        for image_id in image_ids:
            if not path_of(image_id).is_file():
                raise ConfigError(f"{path_of(image_id)}: --stages {','.join(stages)} reads the "
                                  f"{maker} stage's files, and this one is missing; add "
                                  f"{maker} to --stages (or run without --stages)")


def open_dataset(data_root: str | os.PathLike, settings: RunSettings,
                 images: str | os.PathLike | None = None) -> tuple[VOCDataset, list[str]]:
    """The data set of a run (split, tags file, the inputs its supervision reads) and its images
    (the first ``limit``; 0 or None: all).

    ``data_root`` is a Pascal VOC folder, or COCO input (:func:`~graphwsss.data.coco.is_coco_input`:
    an instances JSON, or a folder with ``annotations/instances_*.json``) read by
    :class:`~graphwsss.data.coco.COCODataset` from the image folder ``images`` (default:
    :func:`~graphwsss.data.coco.find_coco_files`).
    """
    if is_coco_input(data_root) or images is not None:
        annotation_file, image_dir, root = find_coco_files(data_root, images, settings.split)
        if settings.supervision == "scribble":
            raise DataError(annotation_file, "COCO input has no scribbles; use --supervision "
                                             "box, point or image")
        if settings.seeds.tags_file:
            raise DataError(settings.seeds.tags_file, "seeds.tags_file is not read for COCO "
                                                      "input (tags are the boxes' categories)")
        dataset = COCODataset(annotation_file, image_dir, supervision=settings.supervision,
                              root=root)
    else:
        dataset = VOCDataset(data_root, split=settings.split, tags_file=settings.seeds.tags_file,
                             supervision=settings.supervision,
                             scribble_background=settings.seeds.scribble_background)
    if settings.max_side:        # samples load at their working size (labels: full size)
        dataset = ResizedDataset(dataset, settings.max_side)
    return dataset, dataset.ids[:settings.limit] if settings.limit else list(dataset.ids)


def _timing(manifest: dict[str, dict], started: float, labelled: int, images: int) -> dict:
    """What metrics.json says about time: ``seconds``, the stage seconds that made the outputs
    on disk (summed over the calls that made them, ``stage_seconds``), ``seconds_this_call``
    (this call, evaluation included), and ``resumed``: every pseudo label was already there."""
    stage_seconds = {stage: entry.get("seconds") for stage, entry in manifest.items()}
    return {"seconds": round(sum(value or 0.0 for value in stage_seconds.values()), 2),
            "stage_seconds": stage_seconds,
            "seconds_this_call": round(time.perf_counter() - started, 2),
            "resumed": labelled == images, "labels_made_this_call": images - labelled}

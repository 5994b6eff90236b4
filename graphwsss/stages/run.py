"""``graphwsss run``: weak labels to pseudo labels, every stage in order (docs/method.md §1).

Stages, each resumable from the files it writes under ``<out>``:

0. cam          ``cam/model.pt``,           scribble, point and image supervision, and box
                ``cams/<id>.npy``           runs with ``seeds.cam_fusion``: the CAM network
                                            trained on the tags (or boxes, BAP) and its CAMs (§3)
1. seeds        ``seeds/<id>.png``          the GNN's seeds M_g (§2): GrabCut in boxes (fused
                                            with the CAM seeds, 3.4-3.5, when there are CAMs);
                ``affinity_seeds/<id>.png`` superpixel-expanded scribbles or points; the CAM's
                                            confident seeds M'_I (and the CNN's, if they differ)
2. affinity     ``affinity/model.pt``       the affinity CNN trained on the seeds (§4), for
                                            ``graph.builder=affinity``
3. propagation  ``probabilities/<id>.npy``  features, graph (§5), A²GNN (§6; image tags: fused
                                            1:3 with the random walk): float16 node
                                            probabilities ``[K, h, w]``, h = ceil(H / stride)
4. refine       ``pseudo_labels/<id>.png``  upsampling, classes restricted to the weak labels,
                                            CRF (§7), at the original size (``max_side``)
                ``instances/<id>.png|json`` box runs: instance masks from boxes
5. evaluation   ``metrics.json``            when ground truth exists (§8)
6. report       ``report.html``             metrics and the first images side by side

Changing only refine settings (``crf.*``) and rerunning with ``--force`` recomputes the
pseudo labels from the saved probabilities, in seconds.

Under ``torchrun --nproc_per_node N`` every rank takes every N-th image; rank 0 gathers the
metrics and writes the run-level files.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from graphwsss.config import ConfigError, to_yaml, validate_settings
from graphwsss.data.palette import read_label_png, write_label_png
from graphwsss.data.records import IGNORE_INDEX, Sample
from graphwsss.data.resize import ResizedDataset, upscale_label
from graphwsss.data.coco import COCODataset, find_coco_files, is_coco_input
from graphwsss.data.errors import DataError
from graphwsss.data.voc import VOCDataset
from graphwsss.graphs import build_graph_builder, downsample_image
from graphwsss.losses import boxes_to_grid
from graphwsss.metrics import SeedQuality
from graphwsss.nn.random_walk import random_walk_probabilities
from graphwsss.postprocess import (clear_outside_boxes, dense_crf, instances_from_boxes,
                                   instances_to_coco, upsample_probs, write_instance_png)
from graphwsss.seeds.background import add_background_seeds, background_share
from graphwsss.seeds.files import read_seed_file
from graphwsss.seeds.fusion import fuse_box_and_cam_seeds, select_confident_seeds
from graphwsss.seeds.grabcut import grabcut_box_seeds
from graphwsss.seeds.sparse import (expand_to_superpixels, image_superpixels, merge_seeds,
                                    points_to_map, require_weak_label)
from graphwsss.seeds.grid import grid_seeds
from graphwsss.settings import RunSettings
from graphwsss.stages.affinity import AffinityEmbedder, load_affinity_network, train_affinity
from graphwsss.stages.cam import (cam_seeds, confident_cam_seeds, infer_cams, read_cams,
                                  train_cam)
from graphwsss.stages.evaluate import SegmentationEvaluator, write_metrics
from graphwsss.stages.features import FeatureExtractor
from graphwsss.stages.manifest import check_stages, uses_cams, write_manifest
from graphwsss.stages.propagate import PropagationItem, estimate_batch_size, train_propagator
from graphwsss.stages.report import write_report
from graphwsss.utils.distributed import setup_process
from graphwsss.utils.io import atomic_path, atomic_write, inside
from graphwsss.utils.runtime import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class RunPaths:
    """Where a run writes its outputs."""

    root: Path

    @property
    def seeds(self) -> Path:
        return self.root / "seeds"

    @property
    def pseudo_labels(self) -> Path:
        return self.root / "pseudo_labels"

    @property
    def instances(self) -> Path:
        return self.root / "instances"

    def image_file(self, folder: str, image_id: str, suffix: str) -> Path:
        """``<root>/<folder>/<image_id><suffix>``, checked to stay inside the run folder."""
        return inside(self.root, Path(folder) / f"{image_id}{suffix}")

    def seed(self, image_id: str) -> Path:
        return self.image_file("seeds", image_id, ".png")

    @property
    def affinity(self) -> Path:
        return self.root / "affinity"

    @property
    def affinity_seeds(self) -> Path:
        """Seeds of the affinity CNN when they differ from the GNN's (scribble, point)."""
        return self.root / "affinity_seeds"

    @property
    def cam(self) -> Path:
        return self.root / "cam"

    def cams(self, image_id: str) -> Path:
        return self.image_file("cams", image_id, ".npy")

    def pseudo_label(self, image_id: str) -> Path:
        return self.image_file("pseudo_labels", image_id, ".png")

    def probabilities(self, image_id: str) -> Path:
        """Node probabilities ``[K, h, w]`` float16 before restriction and CRF."""
        return self.image_file("probabilities", image_id, ".npy")


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
      confident seeds M'_I, for the affinity CNN. An image whose scribbles mark too little
      background takes M'_I's confident background into M_g too.
    * point: points expanded to superpixels (M_P), else M'_I, for the GNN; M'_I for the CNN.
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
        gnn = expanded
        if background_share(expanded) < rule.background_min_share:
            gnn = merge_seeds(expanded, np.where(confident == 0, 0, IGNORE_INDEX).astype(np.uint8))
        return (with_background(gnn, sample.scribble, segments),
                with_background(merge_seeds(expanded, confident), sample.scribble, segments))
    require_weak_label(bool(sample.points), sample.image_path, "point (points.json)")
    points = points_to_map(sample.points, sample.height, sample.width, sample.image_id)
    expanded = expand_to_superpixels(points, segments)
    return (with_background(merge_seeds(expanded, confident), points, segments),
            with_background(confident, points, segments))


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


def allowed_classes(sample: Sample, supervision: str) -> list[int]:
    """Background and the classes the image's weak labels name: its boxes' classes, scribble
    classes, point classes or tags. Pseudo labels never contain any other class."""
    if supervision == "box":
        named = {box.class_id for box in sample.boxes}
    elif supervision == "scribble":
        named = set(np.unique(sample.scribble).tolist()) - {IGNORE_INDEX}
    elif supervision == "point":
        named = {point.class_id for point in sample.points}
    else:
        named = set(sample.tags)
    return sorted(named | {0})


class Pipeline:
    """The stages of one run over one rank's images; see the module docstring."""

    def __init__(self, dataset: VOCDataset, paths: RunPaths, settings: RunSettings,
                 device: torch.device, show_progress: bool = True) -> None:
        self.dataset = dataset
        self.paths = paths
        self.settings = settings
        self.device = device
        self.show_progress = show_progress
        self.affinity_network = None

    def _progress(self, items, desc: str):
        return tqdm(items, desc=desc, disable=not self.show_progress, leave=False)

    @property
    def needs_cams(self) -> bool:
        return uses_cams(self.settings)

    def cams(self, image_ids: list[str], own_ids: list[str]) -> None:
        """Train the CAM network on every image's tags (DDP under torchrun) and write this
        rank's CAMs (§3); for scribble, point and image supervision, and box runs with
        ``seeds.cam_fusion``."""
        # Decided on all images, so that every rank takes part in the DDP training or none.
        if not self.needs_cams or all(self.paths.cams(i).is_file() for i in image_ids):
            return
        log.info("stage cam: %s pooling, %s FSL, on the tags of %d images -> %s",
                 self.settings.cam.pooling, self.settings.cam.fsl, len(image_ids), self.paths.cam)
        network = train_cam(self.dataset, image_ids, self.paths.cam, self.settings, self.device,
                            show_progress=self.show_progress)
        infer_cams(network, self.dataset, own_ids, self.paths.root, self.settings, self.device,
                   show_progress=self.show_progress)

    def load_cams(self, sample: Sample) -> np.ndarray | None:
        if not self.needs_cams:
            return None
        return read_cams(self.paths.cams(sample.image_id), self.dataset.num_classes - 1,
                         (sample.height, sample.width))

    def seeds(self, image_ids: list[str]) -> None:
        todo = [image_id for image_id in image_ids if not self.paths.seed(image_id).is_file()]
        log.info("stage seeds: %d images (%d already done), %s supervision -> %s", len(todo),
                 len(image_ids) - len(todo), self.settings.supervision, self.paths.seeds)
        for image_id in self._progress(todo, "seeds"):
            sample = self.dataset.load(image_id)
            gnn_seeds, affinity_seeds = make_seeds(sample, self.settings, self.load_cams(sample),
                                                   num_classes=self.dataset.num_classes)
            present = seed_classes(gnn_seeds)
            if len(present) < 2:
                log.warning("image %s: its seeds hold %s only, so its pseudo label will be one "
                            "class over the whole image", image_id,
                            f"class {present[0]}" if present else "no class")
            if affinity_seeds is not gnn_seeds:
                write_label_png(self.paths.image_file("affinity_seeds", image_id, ".png"),
                                affinity_seeds)
            # The GNN seeds are written last: their presence marks the image as done.
            write_label_png(self.paths.seed(image_id), gnn_seeds)

    def propagation(self, image_ids: list[str]) -> None:
        todo = [image_id for image_id in image_ids
                if not (self.paths.probabilities(image_id).is_file()
                        or self.paths.pseudo_label(image_id).is_file())]
        log.info("stage propagation: %d images (%d already done), propagator %s on %s graphs, "
                 "device %s -> %s", len(todo), len(image_ids) - len(todo),
                 self.settings.propagator.name, self.settings.graph.builder, self.device,
                 self.paths.probabilities(image_ids[0]).parent if image_ids else "")
        if not todo:
            return
        extractor = self.node_source()
        builder = build_graph_builder(self.settings.graph.builder, **self._builder_options())
        batch_size = self.settings.propagator.batch_images or estimate_batch_size(
            extractor.channels, self.dataset.num_classes, self._typical_nodes(extractor.stride),
            self.settings)
        progress = tqdm(total=len(todo), desc="propagation", disable=not self.show_progress,
                        leave=False)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            samples = [self.dataset.load(image_id) for image_id in chunk]
            items = [self._prepare(sample, extractor, builder) for sample in samples]
            probabilities = train_propagator(items, self.settings.propagator,
                                             self.dataset.num_classes, self.device,
                                             seed=self.settings.seed,
                                             show_progress=self.show_progress)
            for sample, item, probs in zip(samples, items, probabilities):
                if self.settings.supervision == "image":
                    probs = self._fuse_random_walk(sample, item, probs)
                with atomic_path(self.paths.probabilities(sample.image_id)) as tmp:
                    np.save(tmp, probs.detach().cpu().numpy().astype(np.float16))
            progress.update(len(chunk))
        progress.close()

    def affinity(self, image_ids: list[str]) -> None:
        """Train the affinity CNN on this run's seeds when the graph builder needs it (§4)."""
        if self.settings.graph.builder != "affinity" or self.affinity_network is not None:
            return
        log.info("stage affinity: CNN on the seeds of %d images -> %s", len(image_ids),
                 self.paths.affinity)
        seed_dir = self.paths.affinity_seeds if self.paths.affinity_seeds.is_dir() else self.paths.seeds
        self.affinity_network = train_affinity(self.dataset, image_ids, seed_dir,
                                               self.paths.affinity, self.settings, self.device,
                                               show_progress=self.show_progress)

    def node_source(self) -> FeatureExtractor | AffinityEmbedder:
        """Where node features (and the affinity embedding) come from: the trained affinity CNN
        for ``graph.builder=affinity``, the ImageNet backbone otherwise."""
        if self.settings.graph.builder == "affinity":
            if self.affinity_network is None:
                weights = self.settings.affinity.training.checkpoint or self.paths.affinity
                self.affinity_network = load_affinity_network(weights, self.device,
                                                              self.settings.backbone)
            return AffinityEmbedder(self.affinity_network)
        return FeatureExtractor(self.settings.backbone, self.device)

    def _builder_options(self) -> dict:
        graph = self.settings.graph
        if graph.builder == "superpixel":
            return {"method": graph.superpixel_method, "segments": graph.superpixels,
                    "sigma_rgb": graph.sigma_rgb, "threshold": graph.threshold}
        if graph.builder == "knn":
            return {"k": graph.knn_k, "threshold": graph.threshold}
        options = {"radius": graph.radius, "threshold": graph.threshold, "shape": graph.shape}
        if graph.builder == "rgbxy":
            options.update(sigma_xy=graph.sigma_xy, sigma_rgb=graph.sigma_rgb)
        elif graph.colour:
            options.update(colour=(graph.sigma_xy, graph.sigma_rgb))
        return options

    def _typical_nodes(self, stride: int) -> int:
        sample = self.dataset.load(self.dataset.ids[0])
        return math.ceil(sample.height / stride) * math.ceil(sample.width / stride)

    def _prepare(self, sample: Sample, extractor, builder) -> PropagationItem:
        seeds = read_label_png(self.paths.seed(sample.image_id))
        features, embedding = extractor.extract(sample.image)
        grid_size = tuple(features.shape[-2:])
        stride = extractor.stride
        image = torch.from_numpy(sample.image).to(self.device).permute(2, 0, 1).float() / 255.0
        node_seeds = torch.from_numpy(grid_seeds(seeds, grid_size, stride).astype(np.int64))
        graph = builder.build(image, features, seed_labels=node_seeds.to(self.device),
                              embedding=embedding)
        padded_size = (grid_size[0] * stride, grid_size[1] * stride)
        boxes, box_classes = boxes_to_grid(sample.boxes, padded_size, grid_size, device=self.device)
        return PropagationItem(
            image_id=sample.image_id, graph=graph, image=image,
            pixel_seeds=torch.from_numpy(seeds.astype(np.int64)).to(self.device),
            boxes=boxes, box_classes=box_classes, stride=stride)

    def _fuse_random_walk(self, sample: Sample, item: PropagationItem,
                          probs: torch.Tensor) -> torch.Tensor:
        """Image tags (§2): fuse the A²GNN's probabilities with the random walk of the CAM
        scores over the same graph, 1 : 3 (``cam.random_walk_share``)."""
        cams = torch.from_numpy(self.load_cams(sample)).to(self.device)
        grid = downsample_image(cams, *item.grid_shape)
        background = (1 - grid.max(dim=0, keepdim=True).values).clamp_min(0)
        scores = torch.cat([background ** self.settings.cam.background_power, grid]).clamp_min(1e-5)
        walked = random_walk_probabilities(item.graph, scores / scores.sum(0, keepdim=True),
                                           beta=self.settings.propagator.rw_beta,
                                           log_steps=self.settings.propagator.rw_log_steps,
                                           method=self.settings.propagator.rw_method,
                                           tolerance=self.settings.propagator.rw_tolerance)
        share = self.settings.cam.random_walk_share
        return (1 - share) * probs + share * walked

    def _restrict(self, sample: Sample, full: np.ndarray) -> np.ndarray:
        """Box runs clear every class outside its own boxes (§7); other runs clear the classes
        the image's weak labels do not name."""
        if self.settings.supervision == "box":
            return clear_outside_boxes(full, sample.boxes)
        absent = np.setdiff1d(np.arange(full.shape[0]),
                              allowed_classes(sample, self.settings.supervision))
        full = full.copy()
        full[absent] = 0.0
        return full

    def refine(self, image_ids: list[str]) -> None:
        """Saved node probabilities to pseudo labels (§7): upsampling, class restriction, CRF,
        instance masks; every image without a pseudo label."""
        todo = [image_id for image_id in image_ids if not self.paths.pseudo_label(image_id).is_file()]
        log.info("stage refine: %d images (%d already done), CRF %s -> %s", len(todo),
                 len(image_ids) - len(todo), "on" if self.settings.crf.enabled else "off",
                 self.paths.pseudo_labels)
        for image_id in self._progress(todo, "refine"):
            sample = self.dataset.load(image_id)
            path = self.paths.probabilities(image_id)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no node probabilities for image {image_id!r}; "
                                        "run the propagation stage first")
            probs = torch.from_numpy(np.load(path).astype(np.float32))
            self._write_outputs(sample, probs)

    def _write_outputs(self, sample: Sample, probs: torch.Tensor) -> None:
        size = (sample.height, sample.width)
        stride = node_stride(size, tuple(probs.shape[-2:]))
        full = self._restrict(sample, upsample_probs(probs, size, stride=stride).numpy())
        if self.settings.crf.enabled:
            crf = self.settings.crf
            full = dense_crf(sample.image, full, iterations=crf.iterations,
                             gaussian_sxy=crf.gaussian_sxy, gaussian_compat=crf.gaussian_compat,
                             bilateral_sxy=crf.bilateral_sxy, bilateral_srgb=crf.bilateral_srgb,
                             bilateral_compat=crf.bilateral_compat)
            full = self._restrict(sample, full)
        label = full.argmax(axis=0).astype(np.uint8)
        boxes = sample.boxes
        if sample.original_size is not None:     # processed at max_side: back to full size
            size, boxes = sample.original_size, sample.original_boxes
            label = upscale_label(label, size)
        if boxes:
            instance = instances_from_boxes(label, boxes)
            write_instance_png(self.paths.image_file("instances", sample.image_id, ".png"),
                               instance)
            coco = instances_to_coco(sample.image_id, instance, label, boxes, *size)
            atomic_write(self.paths.image_file("instances", sample.image_id, ".json"),
                         json.dumps(coco))
        # The pseudo label is written last: its presence marks the image as finished.
        write_label_png(self.paths.pseudo_label(sample.image_id), label)

    def evaluate(self, image_ids: list[str]
                 ) -> tuple[SegmentationEvaluator, SeedQuality, SingleClassImages]:
        evaluator = SegmentationEvaluator(self.dataset.class_names)
        seed_quality = SeedQuality()
        single_class = SingleClassImages()
        for image_id in self._progress(image_ids, "evaluate"):
            ground_truth = self.dataset.ground_truth(image_id)
            label = read_label_png(self.paths.pseudo_label(image_id))
            seeds = read_label_png(self.paths.seed(image_id))
            seeds = upscale_label(seeds, ground_truth.shape)   # seeds at max_side: full size
            evaluator.update(label, ground_truth)
            seed_quality.update(seeds, ground_truth)
            single_class.update(image_id, label, seeds)
        return evaluator, seed_quality, single_class


def node_stride(image_size: tuple[int, int], grid_size: tuple[int, int]) -> int:
    """The stride ``s`` with ``grid = (ceil(H / s), ceil(W / s))``: what upsampling saved node
    probabilities needs."""
    (height, width), (h, w) = image_size, grid_size
    for stride in range(1, max(height, width) + 1):
        if (math.ceil(height / stride), math.ceil(width / stride)) == (h, w):
            return stride
    raise ValueError(f"a {h}x{w} node grid does not tile a {height}x{width} image")


def seed_classes(seeds: np.ndarray) -> list[int]:
    """The classes (0 background, 1..K) that a ``[H, W]`` seed map labels somewhere."""
    return [int(c) for c in np.unique(seeds) if c != IGNORE_INDEX]


@dataclass
class SingleClassImages:
    """Images whose pseudo label is one class over the whole image, and images whose seeds hold
    fewer than two classes: the signs of seeds that nothing can be learned from."""

    labels: list[str] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)

    SHOWN = 20                                # ids listed in metrics.json

    def update(self, image_id: str, label: np.ndarray, seeds: np.ndarray) -> None:
        if label.size and (label == label.flat[0]).all():
            self.labels.append(image_id)
        if len(seed_classes(seeds)) < 2:
            self.seeds.append(image_id)

    def merge(self, other: "SingleClassImages") -> "SingleClassImages":
        self.labels += other.labels
        self.seeds += other.seeds
        return self

    def summary(self) -> dict:
        return {"single_class_labels": len(self.labels),
                "single_class_label_ids": sorted(self.labels)[:self.SHOWN],
                "seeds_single_class": len(self.seeds),
                "seeds_single_class_ids": sorted(self.seeds)[:self.SHOWN]}


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
                             supervision=settings.supervision)
    if settings.max_side:        # samples load at their working size (labels: full size)
        dataset = ResizedDataset(dataset, settings.max_side)
    return dataset, dataset.ids[:settings.limit] if settings.limit else list(dataset.ids)


def check_seed_source(settings: RunSettings) -> None:
    """``seeds.source=files`` needs ``seeds.dir`` naming a folder (before anything runs)."""
    if settings.seeds.source != "files":
        return
    if not settings.seeds.dir:
        raise ConfigError("seeds.source=files needs seeds.dir=DIR, the folder of <id>.png seeds")
    if not Path(settings.seeds.dir).is_dir():
        raise DataError(settings.seeds.dir, "seeds.dir is not a folder (seeds.source=files "
                                            "reads <seeds.dir>/<id>.png for every image)")


def run(data_root: str | os.PathLike, out_dir: str | os.PathLike, settings: RunSettings,
        show_progress: bool = True, force: bool = False,
        images: str | os.PathLike | None = None) -> dict | None:
    """Run every stage on ``data_root`` and write the outputs under ``out_dir``.

    Resumes from the outputs already there when the settings that made them match (``stages.json``,
    :mod:`graphwsss.stages.manifest`); when they differ, raises :class:`ConfigError` naming the
    settings, or with ``force`` recomputes the first differing stage and every later one.

    Returns the metrics (rank 0, when ground truth exists), else ``None``.
    """
    started = time.perf_counter()
    validate_settings(settings)      # settings made in code too: ranges, device (ConfigError)
    check_seed_source(settings)
    device, context = setup_process(settings.device, settings.seed)
    dataset, image_ids = open_dataset(data_root, settings, images)
    paths = RunPaths(Path(out_dir))
    if context.is_main or not force:     # before any stage runs; rank 0 alone deletes
        manifest = check_stages(paths.root, settings, force=force)
    context.barrier()
    if context.is_main:
        # Only now: config.yaml and stages.json describe what is (and will be) on disk.
        manifest = write_manifest(paths.root, manifest, settings, {})
        atomic_write(paths.root / "config.yaml", to_yaml(settings))
        log.info("run: %s supervision, %d images of %s -> %s (settings in %s)",
                 settings.supervision, len(image_ids), dataset.root, paths.root,
                 paths.root / "config.yaml")
    pipeline = Pipeline(dataset, paths, settings, device, show_progress and context.is_main)
    own_ids = context.shard(image_ids)
    labelled = sum(paths.pseudo_label(image_id).is_file() for image_id in image_ids)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def timed(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = now - clock
        clock = now

    pipeline.cams(image_ids, own_ids)
    context.barrier()
    timed("cam")
    pipeline.seeds(own_ids)
    context.barrier()            # every rank trains the affinity CNN on all seeds (DDP)
    timed("seeds")
    pipeline.affinity(image_ids)
    timed("affinity")
    pipeline.propagation(own_ids)
    timed("propagation")
    pipeline.refine(own_ids)
    context.barrier()
    from graphwsss.stages.segment import refinement_rounds   # imports this module
    rounds = refinement_rounds(dataset, paths, settings, device, image_ids, own_ids, context,
                               show_progress and context.is_main)      # segmenter.rounds (§9)
    timed("refine")
    if context.is_main:
        manifest = write_manifest(paths.root, manifest, settings, seconds)
    metrics = None
    if dataset.has_ground_truth:
        log.info("stage evaluation: %d images", len(own_ids))
        partials = context.gather(pipeline.evaluate(own_ids))
        if context.is_main:
            evaluator, seed_quality, single_class = partials[0]
            for other_evaluator, other_seeds, other_single in partials[1:]:
                evaluator.merge(other_evaluator)
                seed_quality.merge(other_seeds)
                single_class.merge(other_single)
            metrics = {**evaluator.summary(), **seed_quality.summary(), **single_class.summary(),
                       **_timing(manifest, started, labelled, len(image_ids)),
                       **({"rounds": rounds} if rounds else {})}
            write_metrics(paths.root / "metrics.json", metrics)
            log.info("mIoU %.2f, contour F %.2f, seed precision %s, coverage %s -> %s",
                     metrics["miou"], metrics["contour_f"], metrics["seed_precision"],
                     metrics["seed_coverage"], paths.root / "metrics.json")
            if single_class.labels:
                log.warning("%d of %d pseudo labels are one class over the whole image (%s); "
                            "%d images' seeds hold fewer than two classes (metrics.json)",
                            len(single_class.labels), metrics["images"],
                            ", ".join(metrics["single_class_label_ids"]),
                            len(single_class.seeds))
    if context.is_main:
        _merge_instances(paths, image_ids, getattr(dataset, "to_result", None))
        if hasattr(dataset, "with_masks"):        # COCO input: its file, with the masks
            coco = dataset.with_masks(image_ids, lambda image_id: _read_instances(paths, image_id))
            atomic_write(paths.root / "annotations.json", json.dumps(coco))
            log.info("COCO annotations with masks -> %s", paths.root / "annotations.json")
        report = write_report(paths.root, dataset, image_ids[:settings.report_images], metrics,
                              title=f"graphwsss run: {dataset.root.name}, {settings.supervision}")
        log.info("report -> %s", report)
    context.barrier()
    return metrics


def _timing(manifest: dict[str, dict], started: float, labelled: int, images: int) -> dict:
    """What metrics.json says about time: ``seconds``, the stage seconds that made the outputs
    on disk (summed over the calls that made them, ``stage_seconds``), ``seconds_this_call``
    (this call, evaluation included), and ``resumed``: every pseudo label was already there."""
    stage_seconds = {stage: entry.get("seconds") for stage, entry in manifest.items()}
    return {"seconds": round(sum(value or 0.0 for value in stage_seconds.values()), 2),
            "stage_seconds": stage_seconds,
            "seconds_this_call": round(time.perf_counter() - started, 2),
            "resumed": labelled == images, "labels_made_this_call": images - labelled}


def _read_instances(paths: RunPaths, image_id: str) -> list[dict] | None:
    """One image's instance results (``instances/<id>.json``), ``None`` when it has none."""
    path = paths.instances / f"{image_id}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _merge_instances(paths: RunPaths, image_ids: list[str], convert=None) -> None:
    """All images' COCO-style instance results in one ``instances/instances.json``; for COCO
    input (``convert``) with the file's image and category ids, as COCO tools expect."""
    results = []
    for image_id in image_ids:
        made = _read_instances(paths, image_id)
        if made is not None:                 # images with boxes only: instances come from boxes
            results.extend(map(convert, made) if convert else made)
    if not results and not paths.instances.is_dir():
        return
    atomic_write(paths.instances / "instances.json", json.dumps(results))

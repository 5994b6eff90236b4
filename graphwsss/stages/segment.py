"""The segmentation network on pseudo labels (docs/method.md §9): training
(``graphwsss train-segmenter``), prediction on any image folder (``graphwsss predict``) and the
refinement rounds of a run (``segmenter.rounds``).

Training folder ``OUT`` (``train-segmenter --out``, ``<run>/segmenter/round_<r>`` in a run):

======================  ==========================================================================
``model.pt``            the trained network with its classes, backbone and head settings
                        (:func:`save_segmenter`); what ``predict --model`` reads
``training/``           the shared training loop's ``checkpoint.pt`` (resume), ``model.pt`` and
                        ``train_log.json`` (:mod:`graphwsss.training.loop`)
``config.yaml``         the settings (``train-segmenter`` only)
======================  ==========================================================================

Labels (``--labels``): a run folder (its ``pseudo_labels/`` are ``Y``, and ``Y'``, the
propagation's arg-max before CRF, comes from its ``probabilities/`` with the run's class
restriction), or any folder of ``<id>.png`` label maps (no ``Y'``: ``segmenter.loss=nal`` falls
back to cross-entropy with a warning, since NAL with ``Y' = Y`` is cross-entropy).
"""

from __future__ import annotations

import json
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from graphwsss.config import to_yaml
from graphwsss.data.errors import DataError
from graphwsss.data.palette import read_image, read_label_png, write_label_png
from graphwsss.data.records import IGNORE_INDEX, Sample
from graphwsss.data.resize import upscale_label
from graphwsss.data.voc import IMAGE_SUFFIXES
from graphwsss.losses.noise_aware import segmentation_loss
from graphwsss.models.registry import build_backbone
from graphwsss.models.segmenter import Segmenter
from graphwsss.postprocess import clear_outside_boxes
from graphwsss.settings import RefineSettings, RunSettings, SegmenterSettings
from graphwsss.stages.evaluate import SegmentationEvaluator
from graphwsss.stages.refine import (grabcut_boxes, pixel_probabilities, probabilities_to_label,
                                     restrict_to_weak_labels, write_pseudo_label)
from graphwsss.training.augment import augment
from graphwsss.training.dataset import AugmentedImageSet
from graphwsss.training.loop import load_trained_weights, train_network
from graphwsss.utils.checkpoint import load_safely
from graphwsss.utils.io import atomic_path, atomic_write, inside
from graphwsss.utils.runtime import get_logger

log = get_logger(__name__)

CHECKPOINT_FORMAT = "graphwsss-segmenter"
OUTPUT_STRIDE = 8


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------

@dataclass
class LabelSource:
    """Where the training labels of the segmenter come from.

    Attributes:
        folder: ``<id>.png`` label maps ``Y`` (read at any size, brought to the sample's size).
        probabilities: a run's ``probabilities/`` folder giving ``Y'``, or ``None``.
        supervision: the run's supervision, for the class restriction of ``Y'``.
        num_classes: ``K + 1``; label ids above are refused.
    """

    folder: Path
    num_classes: int
    probabilities: Path | None = None
    supervision: str = "box"
    seeds: Path | None = None                     # the run's seeds (tightness prior of Y')
    refine: RefineSettings = field(default_factory=lambda: RefineSettings(tight_background=1.0))

    @classmethod
    def open(cls, labels: str | Path, num_classes: int) -> "LabelSource":
        """``labels``: a run folder (``pseudo_labels/`` and ``probabilities/``) or a folder of
        label PNGs."""
        labels = Path(labels)
        if not labels.is_dir():
            raise DataError(labels, "--labels must be a run folder or a folder of <id>.png labels")
        if (labels / "pseudo_labels").is_dir():
            probabilities = labels / "probabilities"
            values = {}
            if (labels / "config.yaml").is_file():
                values = yaml.safe_load((labels / "config.yaml").read_text(encoding="utf-8")) or {}
            # A run from before the tightness prior has no refine settings: prior off.
            refine = RefineSettings(**{"tight_background": 1.0, **values.get("refine", {})})
            return cls(labels / "pseudo_labels", num_classes,
                       probabilities if probabilities.is_dir() else None,
                       values.get("supervision", "box"), labels / "seeds", refine)
        return cls(labels, num_classes)

    def has(self, image_id: str) -> bool:
        return (self.folder / f"{image_id}.png").is_file()

    def label(self, sample: Sample) -> np.ndarray:
        """``Y`` at the sample's size (nearest)."""
        path = inside(self.folder, f"{sample.image_id}.png")
        label = read_label_png(path)
        bad = np.setdiff1d(np.unique(label), [*range(self.num_classes), IGNORE_INDEX])
        if bad.size:
            raise DataError(path, f"class ids {bad.tolist()} are not in labels.txt "
                                  f"(0..{self.num_classes - 1}, 255 void)")
        if label.shape != (sample.height, sample.width):
            label = upscale_label(label, (sample.height, sample.width))
        return label

    def second(self, sample: Sample) -> np.ndarray | None:
        """``Y'``: the arg-max of the saved node probabilities as the refine stage has them before
        the CRF (upsampled, restricted to the weak labels, tightness prior); ``None`` without
        probabilities."""
        if self.probabilities is None:
            return None
        path = inside(self.probabilities, f"{sample.image_id}.npy")
        if not path.is_file():
            raise DataError(path, f"no node probabilities for image {sample.image_id!r} "
                                  "(Y' of the noise-aware loss)")
        seed_file = inside(self.seeds, f"{sample.image_id}.png") if self.seeds else None
        refine = self.refine if seed_file is not None else RefineSettings(tight_background=1.0)
        full = pixel_probabilities(sample, np.load(path), self.supervision, seed_file, refine)
        return full.argmax(axis=0).astype(np.uint8)


class SegmenterTrainingSet(AugmentedImageSet):
    """Augmented crops with ``label`` (``Y``) and ``second`` (``Y'``, or ``Y`` when there is
    none), both ``[S, S]`` int64 with 255 on padding, moved exactly as the image."""

    def __init__(self, dataset, image_ids: list[str], labels: LabelSource, settings: RunSettings,
                 pixel_mean, pixel_std, use_second: bool) -> None:
        super().__init__(dataset, image_ids, settings.segmenter.training, settings.seed,
                         pixel_mean, pixel_std, OUTPUT_STRIDE)
        self.labels = labels
        self.use_second = use_second

    def __getitem__(self, index: int) -> dict:
        image_id = self.image_ids[index]
        sample = self.dataset.load(image_id)
        label = self.labels.label(sample)
        augmented, items = self.augment_image(image_id, sample.image, label)
        out = {"image": items["image"],
               "label": torch.from_numpy(augmented.label.astype(np.int64))}
        second = self.labels.second(sample) if self.use_second else None
        if second is None:
            out["second"] = out["label"].clone()
        else:
            # The same generator as augment_image: the same scale, flip and crop.
            rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(image_id.encode())])
            training = self.training
            moved = augment(sample.image, second, rng, crop_size=training.crop_size,
                            scale_range=training.scale_range, flip=training.flip,
                            jitter=training.color_jitter)
            out["second"] = torch.from_numpy(moved.label.astype(np.int64))
        return out


# --------------------------------------------------------------------------------------------
# The network and its checkpoint
# --------------------------------------------------------------------------------------------

def build_segmenter(settings: RunSettings, num_classes: int, weights=...) -> Segmenter:
    """The network of the run's backbone (``weights``: default the run's backbone weights)."""
    seg = settings.segmenter
    backbone = build_backbone(settings.backbone.name,
                              settings.backbone.weights if weights is ... else weights,
                              output_stride=OUTPUT_STRIDE)
    return Segmenter(backbone, num_classes, head_channels=seg.head_channels,
                     dropout=seg.dropout, tau=seg.tau)


def save_segmenter(path: Path, network: Segmenter, class_names: list[str],
                   settings: RunSettings) -> Path:
    """``model.pt``: the weights with what rebuilding the network needs; tensors and plain
    values only (loads with ``weights_only=True``)."""
    seg = settings.segmenter
    value = {"format": CHECKPOINT_FORMAT, "version": 1, "classes": list(class_names),
             "backbone": {"name": settings.backbone.name, "output_stride": OUTPUT_STRIDE},
             "head_channels": int(seg.head_channels), "dropout": float(seg.dropout),
             "tau": float(seg.tau), "inference_scales": [float(s) for s in seg.inference_scales],
             "supervision": settings.supervision,
             "state_dict": {key: tensor.detach().cpu() for key, tensor in
                            network.state_dict().items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        torch.save(value, temporary)
    return path


@dataclass
class LoadedSegmenter:
    network: Segmenter
    classes: list[str]
    inference_scales: tuple[float, ...]
    supervision: str
    path: Path


def load_segmenter(path: str | Path, device: torch.device | str = "cpu") -> LoadedSegmenter:
    """Read a ``model.pt`` of :func:`save_segmenter` (a folder: its ``model.pt``) safely."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise DataError(path, "segmenter model file is missing")
    value = load_safely(path, "the segmenter model", "cpu")
    keys = ("format", "classes", "backbone", "head_channels", "tau", "state_dict")
    if not isinstance(value, dict) or value.get("format") != CHECKPOINT_FORMAT \
            or any(key not in value for key in keys):
        raise DataError(path, "not a segmenter model of 'graphwsss train-segmenter' (it needs "
                              f"{', '.join(keys)}; training/model.pt holds weights only)")
    backbone = build_backbone(value["backbone"]["name"], None,
                              output_stride=value["backbone"].get("output_stride", OUTPUT_STRIDE))
    network = Segmenter(backbone, len(value["classes"]), head_channels=value["head_channels"],
                        dropout=value.get("dropout", 0.5), tau=value["tau"])
    try:
        network.load_state_dict(value["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as error:
        raise DataError(path, f"weights do not match the segmenter "
                              f"({str(error).splitlines()[0]})") from error
    return LoadedSegmenter(network.to(device).eval(), list(value["classes"]),
                           tuple(value.get("inference_scales", (0.5, 1.0, 1.5))),
                           str(value.get("supervision", "box")), path)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def train_segmenter(dataset, image_ids: list[str], labels: LabelSource, out_dir: str | Path,
                    settings: RunSettings, device: torch.device,
                    show_progress: bool = True) -> Segmenter:
    """Train the segmenter on ``image_ids`` (those with a label in ``labels``) and write
    ``out_dir/model.pt``; an existing ``model.pt`` is loaded instead (resume), as is
    ``segmenter.training.checkpoint`` when set. Returns the network in evaluation mode."""
    out_dir = Path(out_dir)
    seg: SegmenterSettings = settings.segmenter
    final = out_dir / "model.pt"
    if final.is_file():
        log.info("segmenter: trained model found, loading %s", final)
        return load_segmenter(final, device).network
    if seg.training.checkpoint:
        log.info("segmenter: weights from segmenter.training.checkpoint=%s",
                 seg.training.checkpoint)
        checkpoint = Path(seg.training.checkpoint)
        try:
            network = load_segmenter(checkpoint, device).network
        except DataError:        # a training/model.pt or checkpoint.pt of the shared loop
            network = load_trained_weights(build_segmenter(settings, dataset.num_classes, None),
                                           checkpoint, device, "segmenter")
        save_segmenter(final, network, dataset.class_names, settings)
        return network
    ids = [image_id for image_id in image_ids if labels.has(image_id)]
    if not ids:
        raise DataError(labels.folder, f"no <id>.png label for any of the {len(image_ids)} "
                                       "training images")
    if len(ids) < len(image_ids):
        log.warning("segmenter: %d of %d images have no label in %s and are left out",
                    len(image_ids) - len(ids), len(image_ids), labels.folder)
    use_second = seg.loss == "nal"
    if use_second and labels.probabilities is None:
        log.warning("segmenter: segmenter.loss=nal needs a second label estimate Y' (a run's "
                    "probabilities/); %s has none, so every pixel counts as reliable and the "
                    "loss is cross-entropy", labels.folder)
        use_second = False
    network = build_segmenter(settings, dataset.num_classes)
    backbone = network.backbone
    trainset = SegmenterTrainingSet(dataset, ids, labels, settings, backbone.pixel_mean,
                                    backbone.pixel_std, use_second)
    loss_name = "nal" if use_second else "ce"

    def compute_loss(model, batch):
        cosines = model(batch["image"])
        return segmentation_loss(cosines, batch["label"], batch["second"], seg.tau,
                                 loss=loss_name, gamma=seg.nal_gamma, weight=seg.nal_lambda)

    log.info("segmenter: %s loss on %d images of %s", loss_name, len(ids), labels.folder)
    network = train_network(network, compute_loss, trainset, seg.training, out_dir / "training",
                            device, seed=settings.seed, description="segmenter",
                            show_progress=show_progress)
    save_segmenter(final, network, dataset.class_names, settings)
    log.info("segmenter: model -> %s", final)
    return network


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def predict_probabilities(network: Segmenter, image: np.ndarray, scales, device) -> np.ndarray:
    """Class probabilities ``[C, H, W]`` of one ``[H, W, 3]`` uint8 image: softmax(τ·cos) at
    each scale and its horizontal flip, upsampled to the image, averaged."""
    height, width = image.shape[:2]
    pixels = network.backbone.preprocess(image).unsqueeze(0).to(device)
    total = None
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False) \
            if size != (height, width) else pixels
        cosines = network(torch.cat([scaled, scaled.flip(-1)]))
        logits = F.interpolate(network.tau * cosines, size=(height, width), mode="bilinear",
                               align_corners=False)
        probs = logits.softmax(dim=1)
        probs = probs[0] + probs[1].flip(-1)
        total = probs if total is None else total + probs
    return (total / (2 * len(scales))).cpu().numpy()


@dataclass
class PredictResult:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)   # (file name, reason)
    unrestricted: list[str] = field(default_factory=list)         # --data lacked the image


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "--images must be a folder of images")
    return sorted(path for path in folder.iterdir()
                  if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def predict_folder(model: str | Path, images: str | Path, out: str | Path,
                   settings: RunSettings, crf: bool = False, data: str | Path | None = None,
                   show_progress: bool = True) -> PredictResult:
    """Label every image of ``images`` (``.jpg .jpeg .png .bmp``) with the model: multi-scale
    + flip (``segmenter.inference_scales``), optional DenseCRF (``crf.*``),
    classes restricted to the image's boxes (else tags) in the VOC folder ``data`` when given;
    ``out/<stem>.png`` palette PNGs. An image that cannot be read (or predicted) is reported by
    name and skipped; the others go on."""
    from graphwsss.data.voc import VOCDataset
    from graphwsss.utils.distributed import setup_process

    device, _ = setup_process(settings.device, settings.seed)
    loaded = load_segmenter(model, device)
    scales = tuple(settings.segmenter.inference_scales)
    files = list_images(images)
    if not files:
        raise DataError(images, f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    annotations = None
    if data is not None:
        annotations = VOCDataset(data, split=settings.split, tags_file=settings.seeds.tags_file,
                                 supervision="box")
        if annotations.num_classes != len(loaded.classes):
            raise DataError(data, f"labels.txt has {annotations.num_classes} classes, the model "
                                  f"{len(loaded.classes)} ({loaded.path})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = PredictResult()
    for path in tqdm(files, desc="predict", disable=not show_progress):
        try:
            image = read_image(path)
            restrict = None
            if annotations is not None:
                restrict = _restriction(annotations, path.stem, image.shape[:2], result)
            probs = predict_probabilities(loaded.network, image, scales, device)
            label = probabilities_to_label(image, probs, settings.crf if crf else None, restrict)
            result.written.append(write_label_png(inside(out, f"{path.stem}.png"), label))
        except (DataError, OSError, ValueError, RuntimeError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            log.warning("predict: skipped %s: %s", path.name, reason)
            result.failed.append((path.name, reason))
    return result


def _restriction(annotations, image_id: str, size: tuple[int, int], result: PredictResult):
    """The restriction of one image by its boxes (else its tags) in ``annotations``; ``None``
    (and a note) when the data set does not know the image."""
    xml = annotations.root / "Annotations" / f"{image_id}.xml"
    if not xml.is_file() and not annotations.tags_file:
        result.unrestricted.append(image_id)
        return None
    sample = annotations.load(image_id) if xml.is_file() else None
    if sample is not None and (sample.height, sample.width) != tuple(size):
        raise DataError(xml, f"the annotated image is {sample.width}x{sample.height}, this one "
                             f"{size[1]}x{size[0]}")
    if sample is not None and sample.boxes:
        return lambda probs: clear_outside_boxes(probs, sample.boxes)
    tags = set(annotations.tags(image_id, sample.boxes if sample else []))

    def keep_tags(probs):
        probs = probs.copy()
        probs[np.setdiff1d(np.arange(probs.shape[0]), sorted(tags | {0}))] = 0.0
        return probs

    return keep_tags


# --------------------------------------------------------------------------------------------
# Refinement rounds of a run
# --------------------------------------------------------------------------------------------

def run(ctx, image_ids: list[str], own_ids: list[str], context) -> list[dict] | None:
    """The segment stage of a run: ``segmenter.rounds`` refinement rounds (§9); nothing when it
    is 0. Train the segmenter on the current pseudo labels (``Y``; ``Y'`` from
    ``probabilities/``), predict every training image (multi-scale + flip, DenseCRF when
    ``crf.enabled``, classes restricted to the weak labels) as the next labels.
    The run's labels (round 0) are kept in ``segmenter/round_0/``, round ``r``'s network and
    labels in ``segmenter/round_<r>/``; the last round's labels replace ``pseudo_labels/`` (and
    box runs' instances). Resumable. With ground truth, rank 0 writes and returns one entry per
    round, round 0 first (``segmenter/rounds.json``, read into ``metrics.json``): ``round``,
    ``miou``, ``contour_f`` and ``seconds`` (training + prediction)."""
    dataset, paths, settings, device = ctx.dataset, ctx.paths, ctx.settings, ctx.device
    show_progress = ctx.show_progress
    rounds = settings.segmenter.rounds
    if not rounds:
        return None
    root = paths.root / "segmenter"
    round0 = root / "round_0" / "pseudo_labels"
    if context.is_main and not (root / "round_0" / "done").is_file():
        round0.mkdir(parents=True, exist_ok=True)
        for image_id in image_ids:
            shutil.copyfile(paths.pseudo_label(image_id), inside(round0, f"{image_id}.png"))
        atomic_write(root / "round_0" / "done", "")
    context.barrier()
    folders, seconds = [round0], [None]
    labels = round0
    for index in range(1, rounds + 1):
        folder = root / f"round_{index}"
        timing = folder / "seconds.json"
        started = time.perf_counter()
        log.info("segmenter round %d/%d: training on %s", index, rounds, labels)
        source = LabelSource(labels, dataset.num_classes, paths.root / "probabilities",
                             settings.supervision, paths.seeds, settings.refine)
        network = train_segmenter(dataset, image_ids, source, folder, settings, device,
                                  show_progress=show_progress)
        predicted = folder / "pseudo_labels"
        todo = [i for i in own_ids if not (predicted / f"{i}.png").is_file()]
        for image_id in tqdm(todo, desc=f"segmenter round {index} predict",
                             disable=not show_progress, leave=False):
            sample = dataset.load(image_id)
            label = _round_label(network, sample, settings, device)
            write_label_png(inside(predicted, f"{image_id}.png"), label)
        context.barrier()
        if context.is_main and todo:
            before = json.loads(timing.read_text()) if timing.is_file() else 0.0
            atomic_write(timing, json.dumps(round(before + time.perf_counter() - started, 2)))
        context.barrier()
        seconds.append(json.loads(timing.read_text()) if timing.is_file() else None)
        folders.append(predicted)
        labels = predicted
    for image_id in own_ids:        # the last round's labels become the run's pseudo labels
        write_pseudo_label(paths, dataset.load(image_id),
                           read_label_png(labels / f"{image_id}.png"))
    context.barrier()
    if not (context.is_main and dataset.has_ground_truth):
        return None
    history = []
    for index, (folder, spent) in enumerate(zip(folders, seconds)):
        evaluator = SegmentationEvaluator(dataset.class_names)
        for image_id in image_ids:
            evaluator.update(read_label_png(folder / f"{image_id}.png"),
                             dataset.ground_truth(image_id))
        summary = evaluator.summary()
        history.append({"round": index, "miou": summary["miou"],
                        "contour_f": summary["contour_f"], "seconds": spent})
        log.info("segmenter round %d: pseudo-label mIoU %.2f", index, summary["miou"])
    atomic_write(root / "rounds.json", json.dumps(history, indent=1))
    return history


def _round_label(network: Segmenter, sample: Sample, settings: RunSettings,
                 device: torch.device) -> np.ndarray:
    """One training image's next pseudo label, at its original size."""
    probs = predict_probabilities(network, sample.image, settings.segmenter.inference_scales,
                                  device)
    label = probabilities_to_label(sample.image, probs,
                              settings.crf if settings.crf.enabled else None,
                              lambda full: restrict_to_weak_labels(sample, full,
                                                                   settings.supervision))
    label, _ = grabcut_boxes(sample, label, settings.supervision, settings.refine)
    if sample.original_size is not None:
        label = upscale_label(label, sample.original_size)
    return label


def check_out_folder(out: str | Path) -> None:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(out, "--out must name a folder, but this is an existing file")


def write_training_config(out: str | Path, settings: RunSettings) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(out) / "config.yaml", to_yaml(settings))


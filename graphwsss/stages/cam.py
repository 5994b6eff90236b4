r"""CAM seed network stage (docs/method.md §3): train on image-level tags (or boxes for BAP), infer
multi-scale CAMs, and turn CAMs into seed maps (§2).

Files:

=============================  =================================================================
``<train_dir>/checkpoint.pt``  after each epoch (resume), see :mod:`graphwsss.training.loop`
``<train_dir>/model.pt``       trained weights; its presence skips training
``<train_dir>/train_log.json`` per-epoch losses
``<out>/cams/<id>.npy``        float16 ``[K, H, W]`` in ``[0, 1]``, ``K`` foreground classes
                               (map ``k`` is class id ``k + 1``; classes not tagged are 0)
=============================  =================================================================

Typical use (``graphwsss run`` wires the same calls)::

    network = train_cam(dataset, ids, run / "cam", settings, device)
    infer_cams(network, dataset, ids, run, settings, device)       # -> run / "cams"
    cams = read_cams(run / "cams" / f"{image_id}.npy", dataset.num_classes - 1)
    m_i = cam_seeds(cams, threshold)                                # M_I
    m_i_confident = confident_cam_seeds(cams, settings.cam.seed_fraction,
                                        settings.cam.seed_background_threshold)  # M'_I
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from graphwsss.data.errors import DataError
from graphwsss.data.records import BACKGROUND, Box
from graphwsss.data.voc import VOCDataset, parse_voc_xml
from graphwsss.losses.background_aware_pooling import BoxMasks
from graphwsss.losses.cam_loss import SOFTMAX_POOLINGS, CAMLoss
from graphwsss.losses.feature_similarity import FeatureSimilarityLoss
from graphwsss.models.registry import build_backbone
from graphwsss.models.cam import CAMNet
from graphwsss.postprocess.crf import dense_crf
from graphwsss.postprocess.upsample import upsample_probs
from graphwsss.seeds.fusion import top_fraction_cam_seeds
from graphwsss.settings import CRFSettings, RunSettings
from graphwsss.stages.manifest import uses_cams
from graphwsss.training import AugmentedImageSet, load_trained_weights, train_network
from graphwsss.utils.io import atomic_path, inside
from graphwsss.utils.runtime import get_logger

log = get_logger(__name__)

CAMS_FOLDER = "cams"
# Not a method parameter: keeps the per-class normalisation and the CRF unary defined where every
# CAM is 0 (as the published code).
NORMALIZE_EPS = 1e-5


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------

def build_cam_network(settings: RunSettings, num_classes: int, pretrained: bool = True) -> CAMNet:
    """A :class:`CAMNet` for ``settings.cam`` on ``settings.backbone`` (``cam.output_stride``).

    ``gmp``, ``is`` and ``bap`` get ``K + 1`` softmax logits (learned background), ``gap`` and
    ``is_binomial`` ``K`` sigmoid logits; ``bap`` a cosine classifier. With ``cam.fsl`` set the
    network holds the :class:`FeatureSimilarityLoss` (its σ, μ when learnable).

    Args:
        settings: the run settings.
        num_classes: ``K`` foreground classes (``dataset.num_classes - 1``).
        pretrained: load the backbone's ImageNet weights (``backbone.weights``).
    """
    cam = settings.cam
    softmax = cam.pooling in SOFTMAX_POOLINGS
    if cam.fsl != "none" and (cam.fsl == "multinomial") != softmax:
        wanted = "multinomial" if softmax else "binomial"
        raise ValueError(f"cam.fsl={cam.fsl} does not fit cam.pooling={cam.pooling}: "
                         f"use cam.fsl={wanted} (or none)")
    backbone = build_backbone(settings.backbone.name,
                              weights=settings.backbone.weights if pretrained else None,
                              output_stride=cam.output_stride)
    fsl = None
    if cam.fsl != "none":
        # cam.fsl_normalization "pixels" (default): the scale the published weights (0.5 / 1.0)
        # were tuned at, a per-pixel mean; "pairs", the (HW)^2 form of eq. 9, is HW times smaller.
        fsl = FeatureSimilarityLoss(cam.fsl_sigma, cam.fsl_mu, learnable=cam.fsl_learnable,
                                    window=cam.fsl_window, normalization=cam.fsl_normalization)
    return CAMNet(backbone, num_classes, activation="softmax" if softmax else "sigmoid",
                  classifier="cosine" if cam.pooling == "bap" else "linear", fsl=fsl)


def load_cam_network(path: str | Path, device: torch.device | str, settings: RunSettings,
                     num_classes: int) -> CAMNet:
    """Trained CAM weights from a ``model.pt`` state dict, a training ``checkpoint.pt`` or a
    folder holding ``model.pt``; the network in evaluation mode on ``device``."""
    network = build_cam_network(settings, num_classes, pretrained=False)
    return load_trained_weights(network, path, device,
                                f"CAM network for cam.pooling={settings.cam.pooling}, "
                                f"{num_classes} classes on {settings.backbone.name}")


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def tag_vector(tags: Sequence[int], num_classes: int) -> np.ndarray:
    """``[K]`` float32 multi-hot of foreground class ids ``tags`` (1..K; entry ``k`` is id
    ``k + 1``)."""
    labels = np.zeros(num_classes, dtype=np.float32)
    for class_id in tags:
        if not 1 <= class_id <= num_classes:
            raise ValueError(f"tag {class_id} is not a foreground class id 1..{num_classes}")
        labels[class_id - 1] = 1.0
    return labels


def box_coverage(boxes: Sequence[Box], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode which boxes cover each pixel as one uint8 map, so that the label-map augmentation
    moves every box exactly as the image.

    Returns:
        ``(codes [H, W] uint8, membership [U, M] bool)``: pixel ``p`` lies in box ``m`` iff
        ``membership[codes[p], m]``; code values stay below 255 (the augmentation's padding).
    """
    covered = np.zeros((height, width, max(len(boxes), 1)), dtype=bool)
    for index, box in enumerate(boxes):
        covered[box.y0:box.y1, box.x0:box.x1, index] = True
    membership, codes = np.unique(covered.reshape(height * width, -1), axis=0,
                                  return_inverse=True)
    if len(membership) > 255:
        raise ValueError(f"{len(boxes)} boxes overlap in {len(membership)} different ways; "
                         f"at most 255 fit the uint8 coverage map")
    return codes.reshape(height, width).astype(np.uint8), membership[:, :len(boxes)]


class CAMTrainingSet(AugmentedImageSet):
    """Augmented images with their tags (and, for BAP, box masks) on the logit grid (§3).

    Items are dicts: ``image`` ``[3, S, S]`` float normalised for the backbone, ``labels``
    ``[K]`` float multi-hot tags (the classes of the image's boxes), ``image_grid`` ``[3, h, w]``
    RGB in ``[0, 1]`` averaged over each cell (for the FSL), ``valid`` ``[h, w]`` bool (cell
    centre inside the image). With ``boxes=True`` also ``box_masks`` ``[M, h, w]`` float (share
    of each cell in each box, boxes padded to the most any image has), ``box_classes`` ``[M]``
    long (0 for padding) and ``background`` ``[h, w]`` float (share outside every box).
    """

    def __init__(self, dataset: VOCDataset, image_ids: list[str], settings: RunSettings,
                 pixel_mean, pixel_std, stride: int, boxes: bool = False) -> None:
        super().__init__(dataset, image_ids, settings.cam.training, settings.seed, pixel_mean,
                         pixel_std, stride)
        self.num_classes = dataset.num_classes - 1
        self.boxes = boxes
        self.max_boxes = 1
        if boxes:
            counts = [dataset.box_count(image_id) if hasattr(dataset, "box_count")   # COCO
                      else len(parse_voc_xml(dataset.root / "Annotations" / f"{image_id}.xml",
                                             dataset.class_ids)[0])
                      for image_id in self.image_ids]
            self.max_boxes = max([1, *counts])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image_id = self.image_ids[index]
        sample = self.dataset.load(image_id)
        codes = membership = None
        if self.boxes:
            if len(sample.boxes) > self.max_boxes:
                raise DataError(self.dataset.root / "Annotations" / f"{image_id}.xml",
                                f"{len(sample.boxes)} boxes, more than the {self.max_boxes} "
                                f"counted when the training set was built")
            codes, membership = box_coverage(sample.boxes, sample.height, sample.width)
        augmented, item = self.augment_image(image_id, sample.image, codes)
        item["labels"] = torch.from_numpy(tag_vector(sample.tags, self.num_classes))
        if self.boxes:
            item.update(self._box_masks(augmented.label, augmented.valid, membership,
                                        [box.class_id for box in sample.boxes], self.grid))
        return item

    def _box_masks(self, codes: np.ndarray, valid: np.ndarray, membership: np.ndarray,
                   classes: list[int], grid: tuple[int, int]) -> dict[str, Tensor]:
        table = np.zeros((256, self.max_boxes), dtype=bool)        # code 255: crop padding
        table[:len(membership), :membership.shape[1]] = membership
        inside = table[codes]                                        # [S, S, M]
        background = valid & ~inside.any(axis=2)
        masks = torch.from_numpy(inside).permute(2, 0, 1).float()
        box_classes = torch.zeros(self.max_boxes, dtype=torch.long)
        box_classes[:len(classes)] = torch.tensor(classes, dtype=torch.long)
        return {
            "box_masks": F.adaptive_avg_pool2d(masks, grid),
            "box_classes": box_classes,
            "background": F.adaptive_avg_pool2d(torch.from_numpy(background).float()[None],
                                                grid)[0],
        }


class CAMObjective:
    """``(model, batch) -> (loss, logs)`` for :func:`graphwsss.training.train_network`:
    :class:`~graphwsss.losses.cam_loss.CAMLoss` of ``settings.cam``.

    ``network`` is the unwrapped :class:`CAMNet`: its :meth:`~CAMNet.classify` (BAP prototypes)
    and its FSL module are called beside the (possibly DDP-wrapped) forward; their parameters
    get their gradients in the same backward pass. Importance sampling draws from one generator
    per process, seeded from ``settings.seed`` and the process rank.
    """

    def __init__(self, network: CAMNet, settings: RunSettings) -> None:
        self.network = network
        self.cam = settings.cam
        self.loss = CAMLoss.from_settings(settings.cam, network.num_classes, network.fsl)
        self.seed = settings.seed
        self._generator: torch.Generator | None = None

    def generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            self._generator = torch.Generator(device=device).manual_seed(
                self.seed * 1000 + rank)
        return self._generator

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        logits, features = model(batch["image"])
        boxes = None
        if self.cam.pooling == "bap":
            boxes = BoxMasks(batch["box_masks"], batch["box_classes"], batch["background"])
        return self.loss(logits, batch["labels"], generator=self.generator(logits.device),
                         valid=batch["valid"], features=features, boxes=boxes,
                         classify=self.network.classify, image=batch["image_grid"])


def same_tags_warning(tag_sets: Iterable[Sequence[int]], class_names: Sequence[str]
                      ) -> str | None:
    """Why a CAM network cannot learn from ``tag_sets`` (one per training image), or ``None``.

    A classifier learns where a class is from images that have it against images that do not;
    when every image has the same tags there is nothing to tell apart, the targets are constant,
    and the CAMs need not follow the objects (on the 50-image GrabCut set, one class, point runs
    score about 25 mIoU whatever the graph). ``tag_sets`` is read only until two differ, so a
    lazy iterable costs the whole pass only on a set that earns the warning."""
    first, count = None, 0
    for tags in tag_sets:
        key = tuple(sorted(tags))
        if first is not None and key != first:
            return None
        first, count = key, count + 1
    if count < 2:
        return None
    names = ", ".join(class_names[class_id] for class_id in first) or "none"
    return (f"every one of the {count} training images has the same tags ({names}): "
            "a classifier has nothing to tell apart, so its CAMs need not find the objects and "
            "the seeds made from them will be poor. Add images with other tags, or give a CAM "
            "network trained on such a set (cam.training.checkpoint)")


def train_cam(dataset: VOCDataset, image_ids: list[str], out_dir: str | Path,
              settings: RunSettings, device: torch.device,
              show_progress: bool = True) -> CAMNet:
    """Train the CAM network on ``image_ids`` (tags from their boxes; the boxes themselves for
    ``cam.pooling=bap``), resumable from ``out_dir``, DDP under ``torchrun``; or load
    ``settings.cam.training.checkpoint`` when set. Returns the network in evaluation mode."""
    num_classes = dataset.num_classes - 1
    given = settings.cam.training.checkpoint
    if given:
        log.info("cam: using trained weights %s", given)
        return load_cam_network(given, device, settings, num_classes)
    warning = same_tags_warning((dataset.load(i).tags for i in image_ids), dataset.class_names)
    if warning:
        log.warning("cam: %s", warning)
    network = build_cam_network(settings, num_classes)
    backbone = network.backbone
    training_set = CAMTrainingSet(dataset, image_ids, settings, backbone.pixel_mean,
                                  backbone.pixel_std, network.stride,
                                  boxes=settings.cam.pooling == "bap")
    log.info("cam: training pooling=%s fsl=%s on %d images -> %s", settings.cam.pooling,
             settings.cam.fsl, len(image_ids), out_dir)
    return train_network(network, CAMObjective(network, settings), training_set,
                         settings.cam.training, out_dir, device, seed=settings.seed,
                         description="cam", show_progress=show_progress)


# --------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def compute_cams(network: CAMNet, image: np.ndarray, tags: Sequence[int],
                 scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0), flip: bool = True) -> Tensor:
    r"""Multi-scale, flipped CAMs of one image (§3).

    At each scale (and its horizontal flip) the class activations
    (:meth:`CAMNet.class_activations`, restricted to ``tags``) are upsampled to image size and
    summed; then ReLU and each class divided by its maximum (:math:`+10^{-5}`).

    Args:
        network: a trained :class:`CAMNet` (evaluation mode is set here).
        image: ``[H, W, 3]`` uint8 RGB.
        tags: the image's foreground class ids (1..K).
        scales: image scale factors.
        flip: add the horizontally flipped image at each scale.

    Returns:
        ``[K, H, W]`` float32 in ``[0, 1]`` on the network's device; classes not in ``tags``
        are 0.
    """
    if not scales or any(scale <= 0 for scale in scales):
        raise ValueError(f"scales must be positive factors, got {scales}")
    network.eval()
    device = next(network.parameters()).device
    height, width = image.shape[:2]
    num_classes = network.num_classes
    labels = torch.from_numpy(tag_vector(tags, num_classes)).to(device)[None]
    pixels = network.backbone.preprocess(image).to(device)[None]             # [1, 3, H, W]
    total = torch.zeros(num_classes, height, width, device=device)
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = pixels if size == (height, width) else F.interpolate(
            pixels, size=size, mode="bilinear", align_corners=False)
        batch = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
        logits = network(batch).logits
        activations = network.class_activations(logits, labels.expand(len(batch), -1))
        activations = upsample_probs(activations, size, network.stride)
        if flip:
            activations = activations[:1] + activations[1:].flip(-1)
        if size != (height, width):
            activations = F.interpolate(activations, size=(height, width), mode="bilinear",
                                        align_corners=False)
        total += activations[0]
    total = torch.relu(total)
    total = total / (total.amax(dim=(1, 2), keepdim=True) + NORMALIZE_EPS)
    return (total * labels[0, :, None, None]).clamp_(0.0, 1.0)


def cam_path(out_dir: str | Path, image_id: str) -> Path:
    """``<out>/cams/<id>.npy``, checked to stay inside ``out``."""
    return inside(out_dir, Path(CAMS_FOLDER) / f"{image_id}.npy")


def write_cams(path: str | Path, cams: Tensor | np.ndarray) -> Path:
    """Write ``[K, H, W]`` CAMs as float16 ``.npy``, atomically."""
    values = cams.detach().cpu().numpy() if isinstance(cams, Tensor) else np.asarray(cams)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, values.astype(np.float16))
    return Path(path)


def read_cams(path: str | Path, num_classes: int,
              image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read and check a CAM file: ``[K, H, W]`` float in ``[0, 1]``; returned as float32.

    Raises :class:`DataError` naming the file when it is missing, unreadable, not ``K`` maps,
    not of ``image_size`` ``(H, W)`` (when given), or holds values outside ``[0, 1]``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "CAM file is missing")
    try:
        cams = np.load(path, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - numpy raises several types for bad files
        raise DataError(path, f"cannot read the CAM file ({error})") from error
    if cams.ndim != 3 or cams.shape[0] != num_classes or not np.issubdtype(cams.dtype,
                                                                           np.floating):
        raise DataError(path, f"expected float [K, H, W] CAMs with K = {num_classes} foreground "
                              f"classes, got {cams.dtype} of shape {cams.shape}")
    if image_size is not None and tuple(cams.shape[1:]) != tuple(image_size):
        raise DataError(path, f"CAMs are {cams.shape[2]}x{cams.shape[1]}, the image is "
                              f"{image_size[1]}x{image_size[0]}")
    cams = cams.astype(np.float32)
    if not np.isfinite(cams).all() or cams.min(initial=0.0) < 0.0 or cams.max(initial=0.0) > 1.0:
        raise DataError(path, f"CAM values must lie in [0, 1], got [{np.nanmin(cams):.3g}, "
                              f"{np.nanmax(cams):.3g}]")
    return cams


def infer_cams(network: CAMNet, dataset: VOCDataset, image_ids: list[str], out_dir: str | Path,
               settings: RunSettings, device: torch.device, show_progress: bool = True) -> Path:
    """Write ``<out_dir>/cams/<id>.npy`` for ``image_ids`` (:func:`compute_cams` with
    ``cam.inference_scales`` and ``cam.inference_flip``; tags from the boxes). Existing files are
    kept (resumable); under ``torchrun`` pass each process its shard of the ids. Returns the
    folder."""
    folder = Path(out_dir) / CAMS_FOLDER
    todo = [image_id for image_id in image_ids if not cam_path(out_dir, image_id).is_file()]
    log.info("cam: inferring CAMs of %d images (%d already done) at scales %s%s -> %s",
             len(todo), len(image_ids) - len(todo), list(settings.cam.inference_scales),
             " with flips" if settings.cam.inference_flip else "", folder)
    network.to(device).eval()
    for image_id in tqdm(todo, desc="cam inference", disable=not show_progress):
        sample = dataset.load(image_id)
        cams = compute_cams(network, sample.image, sample.tags, settings.cam.inference_scales,
                            settings.cam.inference_flip)
        write_cams(cam_path(out_dir, image_id), cams)
    return folder


def run(ctx, image_ids: list[str], own_ids: list[str]) -> None:
    """The cam stage of a run: train the CAM network on every image's tags (DDP under torchrun)
    and write this rank's CAMs ``<run>/cams/<id>.npy``; for scribble, point and image
    supervision, and box runs with ``seeds.cam_fusion`` (:func:`uses_cams`). ``ctx`` is the
    run's :class:`~graphwsss.stages.paths.RunContext`; ``own_ids`` this rank's images."""
    # Decided on all images, so that every rank takes part in the DDP training or none.
    if not uses_cams(ctx.settings) or all(ctx.paths.cams(i).is_file() for i in image_ids):
        return
    settings = ctx.settings
    log.info("stage cam: %s pooling, %s FSL, on the tags of %d images -> %s",
             settings.cam.pooling, settings.cam.fsl, len(image_ids), ctx.paths.cam)
    network = train_cam(ctx.dataset, image_ids, ctx.paths.cam, settings, ctx.device,
                        show_progress=ctx.show_progress)
    infer_cams(network, ctx.dataset, own_ids, ctx.paths.root, settings, ctx.device,
               show_progress=ctx.show_progress)


def load_image_cams(ctx, sample) -> np.ndarray | None:
    """The image's CAMs ``[K, H, W]`` written by :func:`run`, ``None`` in runs without CAMs."""
    if not uses_cams(ctx.settings):
        return None
    return read_cams(ctx.paths.cams(sample.image_id), ctx.dataset.num_classes - 1,
                     (sample.height, sample.width))


# --------------------------------------------------------------------------------------------
# CAM -> seeds (docs/method.md §2)
# --------------------------------------------------------------------------------------------

def _check_cams(cams: np.ndarray) -> np.ndarray:
    if not isinstance(cams, np.ndarray) or cams.ndim != 3 or cams.shape[0] < 1 \
            or not np.issubdtype(cams.dtype, np.floating):
        raise ValueError(f"cams must be a float [K, H, W] np.ndarray, got "
                         f"{getattr(cams, 'dtype', type(cams).__name__)} of shape "
                         f"{getattr(cams, 'shape', None)}")
    return cams.astype(np.float32, copy=False)


def cam_seeds(cams: np.ndarray, threshold: float) -> np.ndarray:
    r"""CAM seeds :math:`M_I` (§2): each pixel's highest class, background where the highest
    CAM is below the constant threshold ``t`` (§3's background score).

    .. math:: M_I(p) = \begin{cases} 0 & \max_k A_k(p) < t \\
              1 + \arg\max_k A_k(p) & \text{otherwise} \end{cases}

    Args:
        cams: ``[K, H, W]`` float in ``[0, 1]``, map ``k`` is class id ``k + 1``.
        threshold: ``t`` (e.g. the best threshold of ``graphwsss evaluate-cam``).

    Returns:
        ``[H, W]`` uint8 labels 0..K.
    """
    cams = _check_cams(cams)
    labels = cams.argmax(axis=0).astype(np.uint8) + 1
    labels[cams.max(axis=0) < threshold] = BACKGROUND
    return labels


def confident_cam_seeds(cams: np.ndarray, fraction: float = 0.4,
                        background_threshold: float = 0.05) -> np.ndarray:
    r"""Confident CAM seeds :math:`M'_I` (§2): for each present class, its top ``fraction`` most
    confident pixels; confident background where every foreground CAM is low; 255 elsewhere.

    *Present* classes are those whose map is non-zero (CAM inference zeroes the others). A pixel
    is assigned to its highest map; of the pixels of class ``k`` the ``ceil(f n_k)`` with the
    highest :math:`A_k` keep ``k + 1``. Confident background: :math:`\max_k A_k(p) <
    t_{bg}`, a threshold well below the usual CAM background threshold (0.05 by default, so
    only pixels that no class explains at all; an image without any present class is all
    background), and such pixels are left out of the classes'
    counts. This is :func:`graphwsss.seeds.fusion.top_fraction_cam_seeds` on the present maps.

    Args:
        cams: ``[K, H, W]`` float in ``[0, 1]``, map ``k`` is class id ``k + 1``.
        fraction: the kept share of each class's pixels (``cam.seed_fraction``, 0.4).
        background_threshold: :math:`t_{bg}` (``cam.seed_background_threshold``, 0.05).

    Returns:
        ``[H, W]`` uint8: 0 background, 1..K classes, 255 unknown.
    """
    cams = _check_cams(cams)
    present = [k for k in range(cams.shape[0]) if cams[k].max() > 0]
    if not present:                                     # nothing tagged: all background
        return np.full(cams.shape[1:], BACKGROUND, dtype=np.uint8)
    return top_fraction_cam_seeds(cams[present], [k + 1 for k in present], fraction,
                                  background_threshold=background_threshold)


def crf_cam_seeds(image: np.ndarray, cams: np.ndarray, threshold: float,
                  crf: CRFSettings | None = None) -> np.ndarray:
    r"""CRF-refined CAM seeds (§2–3): DenseCRF (§7 kernels) on the present classes' CAMs with the
    constant background score ``t``, then the most probable label per pixel.

    The unary comes from :math:`P(p) \propto (t, A_{k_1}(p), \dots, A_{k_n}(p))` over the
    background and the present classes (those with a non-zero map), normalised per pixel (a
    floor of :math:`10^{-5}` keeps an all-zero pixel defined).

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        cams: ``[K, H, W]`` float in ``[0, 1]``.
        threshold: the background score ``t``.
        crf: kernel settings (``RunSettings.crf``; defaults of §7).

    Returns:
        ``[H, W]`` uint8 labels 0..K.
    """
    cams = _check_cams(cams)
    if not isinstance(image, np.ndarray) or image.shape[:2] != cams.shape[1:]:
        raise ValueError(f"image {getattr(image, 'shape', None)} does not match the CAMs "
                         f"{cams.shape} ([H, W, 3] and [K, H, W])")
    crf = crf or CRFSettings()
    present = [k for k in range(cams.shape[0]) if cams[k].max() > 0]
    scores = np.concatenate([np.full((1, *cams.shape[1:]), threshold, dtype=np.float32),
                             cams[present]]) + NORMALIZE_EPS
    probabilities = scores / scores.sum(axis=0, keepdims=True)
    marginals = dense_crf(image, probabilities, crf.iterations, crf.gaussian_sxy,
                          crf.gaussian_compat, crf.bilateral_sxy, crf.bilateral_srgb,
                          crf.bilateral_compat)
    class_ids = np.array([BACKGROUND, *(k + 1 for k in present)], dtype=np.uint8)
    return class_ids[marginals.argmax(axis=0)]

"""Every setting of ``graphwsss run``, with its default: the one place where settings live.

Loaded by :func:`graphwsss.config.load_config` from ``configs/*.yaml`` plus ``key=value``
overrides; the resolved settings are written to ``<out>/config.yaml`` by each run.
Defaults follow docs/method.md; where the published schedule is too slow for a CPU, the default is
the fast schedule and ``configs/*_paper.yaml`` keeps the published one.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable, Literal


def ranged(default: Any = MISSING, *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None,
           check: Callable[[Any], str | None] | None = None, note: str = "",
           default_factory: Any = MISSING) -> Any:
    """A settings field with its allowed values, checked when settings are loaded
    (:func:`graphwsss.config.validate_settings`): ``ge`` / ``gt`` bound it from below (inclusive /
    exclusive), ``le`` / ``lt`` from above; every item of a tuple is checked and ``None`` always
    passes. ``check(value)`` says what is wrong with a value (``None``: nothing); ``note`` is
    added to the message."""
    bounds = {name: bound for name, bound in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt))
              if bound is not None}
    return field(default=default, default_factory=default_factory,
                 metadata={"range": bounds, "check": check, "note": note})


DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device(device: str) -> str | None:
    """What is wrong with a ``device`` setting (auto, cpu, cuda, cuda:N), or ``None``."""
    if not DEVICE_PATTERN.fullmatch(device):
        return "is not a device (allowed: auto, cpu, cuda, cuda:N)"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return "needs CUDA, which is not available here (use device=cpu or device=auto)"
        index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            return f"names a CUDA device this machine lacks (it has cuda:0..cuda:{count - 1})"
    return None


def check_low_high(pair: tuple[float, ...]) -> str | None:
    """A ``(low, high)`` pair with ``low <= high``."""
    return None if len(pair) == 2 and pair[0] <= pair[1] else "must be [low, high] with low <= high"


def check_not_empty(items: tuple) -> str | None:
    return None if len(items) else "must not be empty"


@dataclass
class BackboneSettings:
    name: Literal["efficientnet_lite0", "resnet50", "resnet101"] = "efficientnet_lite0"  # CNN
    weights: str | None = "imagenet"          # "imagenet" (bundled for efficientnet), a path, or null
    output_stride: Literal[4, 8, 16, 32] = 8  # node grid stride (docs/method.md §4–5)


@dataclass
class SeedSettings:
    grabcut_iterations: int = ranged(5, ge=1)  # cv2.grabCut iterations per box (§2, eq. 3.2)
    min_box_size: int = ranged(3, ge=0)       # boxes thinner than this (px) give unknown seeds
    superpixel_method: Literal["slic", "felzenszwalb"] = "slic"  # scribble/point expansion (§2)
    superpixels: int = ranged(600, ge=1)      # SLIC segments per image for the expansion
    tags_file: str | None = None              # image-level tags JSON/CSV; default: Annotations/
    cam_fusion: bool = False                  # box runs: train the CAM network too and fuse its
                                              # seeds with GrabCut's (§2, eq. 3.4-3.5)
    background_min_share: float = ranged(0.02, ge=0, le=1)  # scribble/point/image seeds with
                                              # less background than this share of the image
                                              # get more (seeds/background.py), at:
    background_fraction: float = ranged(0.2, ge=0, le=1)  # ... this share of it, lowest max-CAM first
    background_min_distance: float = ranged(0.1, ge=0)  # ... farther from every point or scribble
                                              # than this share of the image diagonal
    point_cam_foreground: bool = True         # point runs: the CAM's confident foreground fills
                                              # the GNN seeds outside the points' superpixels;
                                              # false: only its confident background does
    scribble_background: Literal["auto", "annotated", "unannotated"] = "auto"  # annotated: the
                                              # scribbles mark background wherever an image has
                                              # some, so an image without a background stroke
                                              # has none (no background seeds, none in its
                                              # label); unannotated: background seeds are added
                                              # as above; auto: annotated when any scribble of
                                              # the data set marks background (data/voc.py)
    scribble_affinity_cam: bool = True        # scribble runs: the affinity CNN learns from the
                                              # scribbles' seeds M_S, else the CAM's confident
                                              # seeds M'_I; false: from the GNN's seeds alone
    source: Literal["weak_labels", "files"] = "weak_labels"  # seeds made from the weak labels,
                                              # or read from seeds.dir (another tool's)
    dir: str | None = None                    # seeds.source=files: folder of <id>.png, one per image
    file_kind: Literal["labels", "mask"] = "labels"  # seeds.source=files: label PNGs (0 bg, 1..K,
                                              # 255 unknown) or masks (0 bg, else foreground;
                                              # classes from the boxes; seeds/files.py)


@dataclass
class TrainingSettings:
    """A network training schedule (affinity CNN §4, CAM network §3), with its augmentation."""

    epochs: int = ranged(4, ge=0)             # passes over the training images
    batch_size: int = ranged(8, ge=1)         # images per SGD step
    lr: float = ranged(0.05, gt=0)            # SGD (poly decay); backbone at lr/10
    momentum: float = ranged(0.9, ge=0, lt=1)  # SGD momentum
    weight_decay: float = ranged(1e-4, ge=0)  # SGD weight decay
    crop_size: int = ranged(256, ge=1)        # random crop (pixels), padded when smaller
    scale_range: tuple[float, float] = ranged((0.7, 1.3), gt=0, check=check_low_high)
                                              # random rescale before the crop
    flip: bool = True                         # random horizontal flips
    color_jitter: float = ranged(0.3, ge=0, le=1)  # brightness/contrast/saturation strength
    workers: int = ranged(0, ge=0)            # DataLoader worker processes
    checkpoint: str | None = None             # use this checkpoint instead of training


@dataclass
class AffinitySettings:
    """The affinity CNN (docs/method.md §4, eqs. 3.6–3.13)."""

    # Trained when graph.builder=affinity (unless training.checkpoint names trained weights).
    radius: int = ranged(4, ge=1)             # pair radius on the stride-8 grid (code: 4 box/scribble)
    reg_weight: float = ranged(3.0, ge=0)     # λ of L_Aff = L_Ac + λ·L_Ar (3.13)
    sigma_xy: float = ranged(6.0, gt=0)       # L_Ar kernel (3.12)
    sigma_rgb: float = ranged(0.1, gt=0)      # ... and its colour width
    mode: Literal["cached", "finetune"] = "cached"  # cached: frozen backbone, head on all levels +
                                              # colour, features cached once per image and flip;
                                              # finetune: last three levels, SGD through them
    steps: int = ranged(1200, ge=0)           # cached mode: Adam steps (batch, crop, flip from
                                              # training; training.epochs/lr/momentum unused)
    adam_lr: float = ranged(2e-3, gt=0)       # cached mode: Adam learning rate (cosine decay)
    cache_images: int = ranged(500, ge=1)     # cached mode: train on at most this many of the
                                              # run's images (a seeded random subset; the cache
                                              # holds each and its mirror in memory, about 1.8 MB
                                              # per entry at 320x213, 5 MB at 500x375)
    training: TrainingSettings = field(default_factory=TrainingSettings)


@dataclass
class CAMSettings:
    """The CAM seed network (docs/method.md §3)."""

    pooling: Literal["gap", "gmp", "is", "is_binomial", "bap"] = "is"  # CAM pooling (§3)
    fsl: Literal["none", "multinomial", "binomial"] = "multinomial"  # feature similarity loss
    fsl_weight: float | None = ranged(None, ge=0)  # None: 0.5 multinomial, 1.0 binomial (§3)
    fsl_sigma: float = ranged(5.0, gt=0)      # σ of w_ij (grid pixels) (eq. 10)
    fsl_mu: float = ranged(2.5, gt=0)         # μ of f (eq. 12)
    fsl_learnable: bool = False               # paper: learnable σ, μ; code: fixed (default)
    fsl_normalization: Literal["pairs", "pixels"] = "pixels"  # Z = (hw)² (eq. 9) or hw (published
                                              # code, the scale its loss weights were tuned at)
    fsl_window: int | None = ranged(None, ge=1)  # FSL window radius (grid cells); None: ceil(3σ)
    is_lambda: float | None = ranged(None, ge=0, le=1)  # None: 0.8 multinomial, 0.2 binomial (§3)
    is_samples: int | None = ranged(None, ge=1)  # None: 100 multinomial, 10 binomial (§3)
    bap_grid: int = ranged(4, ge=1)           # BAP: N x N grid of background prototypes (§3)
    output_stride: Literal[8, 16, 32] = 8     # stride of the CAMs
    inference_scales: tuple[float, ...] = ranged((0.5, 1.0, 1.5, 2.0), gt=0,
                                                 check=check_not_empty)
                                              # image scales whose CAMs are averaged
    inference_flip: bool = True               # average the flipped image's CAMs too
    seed_fraction: float = ranged(0.4, ge=0, le=1)  # M'_I: top 40% most confident pixels per
                                              # class (§2)
    seed_background_threshold: float = ranged(0.05, ge=0, le=1)  # M'_I: confident background
                                              # where every CAM is below (§2)
    background_threshold: float = ranged(0.4, ge=0, le=1)  # M_I: background where every CAM is
                                              # below (§2, 3.4)
    background_power: float = ranged(1.0, gt=0)  # random-walk start, image tags:
                                              # bg = (1 - max A)^α (§3)
    random_walk_share: float = ranged(0.75, ge=0, le=1)  # image tags: final = 1/4 A²GNN + 3/4 walk
    # lr 0.05 (the affinity CNN's) made importance-sampling training diverge in epoch 2 here.
    training: TrainingSettings = field(default_factory=lambda: TrainingSettings(lr=0.01))


@dataclass
class GraphSettings:
    builder: Literal["backbone", "rgbxy", "affinity", "superpixel", "knn"] = "backbone"  # (§5)
    radius: int = ranged(4, ge=1)             # r on the stride-8 grid (code: 4 for box/scribble)
    shape: Literal["disc", "square"] = "disc"  # neighbourhood of radius r
    threshold: float = ranged(1e-3, ge=0)     # E_ij kept when D(i,j) > threshold (§5)
    sigma_xy: float = ranged(6.0, gt=0)       # RGB-XY kernel (§4, eq. 3.12)
    sigma_rgb: float = ranged(0.1, gt=0)      # ... and its colour width
    colour: bool = False                      # backbone/affinity builders: E_ij = D(i,j)·G(i,j),
                                              # times the RGB-XY kernel above
    calibrate: bool = True                    # backbone builder: D on the image's own distance
                                              # scale, 1 up to a typical adjacent pair's distance
                                              # (docs/method.md §5); false: exp(-d) as in (3.8)
    feature_affinity: bool = False            # affinity builder: the learned D times the
                                              # calibrated ImageNet-feature affinity (§5)
    superpixel_method: Literal["slic", "felzenszwalb"] = "slic"  # superpixel graph (GraphNet style)
    superpixels: int = ranged(400, ge=1)      # SLIC segments per image
    knn_k: int = ranged(16, ge=1)             # neighbours per node of the knn graph


@dataclass
class PropagatorSettings:
    name: Literal["a2gnn", "gcn", "gat", "agnn", "none", "random_walk"] = "a2gnn"  # (§6)
    hidden: int = ranged(256, ge=1)           # hidden channels of the propagator
    layers: int = ranged(3, ge=1)             # propagation layers
    dropout: float = ranged(0.5, ge=0, lt=1)  # dropout on node features
    beta: float = ranged(10.0, ge=0)          # edge-term weight β (§6, eq. 3.18)
    form: Literal["reference", "paper"] = "reference"  # A²GNN as the published code or paper
    lr: float = ranged(0.035, gt=0)           # Adam learning rate of the propagator
    weight_decay: float = ranged(5e-4, ge=0)  # Adam weight decay
    epochs_first: int = ranged(30, ge=0)      # CE + MP (+CC); published: 150 (box_*_paper.yaml)
    epochs_second: int = ranged(30, ge=0)     # ... then adding L_reg; published: 150
    reg_weight: float = ranged(0.01, ge=0)    # λ₁ (0.01 box, 0.3 others)
    reg_radius: int = ranged(5, ge=1)         # neighbourhood radius of L_reg (grid cells)
    multi_point: bool = True                  # L_mp (eqs. 3.23–3.26), boxes only
    consistency: bool = True                  # consistency checking (eqs. 3.27–3.28)
    consistency_rule: Literal["reference", "background"] = "background"  # unlabel a box seed
                                              # when cos to its box prototype <= 0 (3.28), or <=
                                              # cos to the background prototype (from the second
                                              # phase on)
    consistency_features: Literal["last", "first", "input"] = "input"  # the features it
                                              # compares: H^{L+1} (3.27), H^1 (before the graph
                                              # layers) or the nodes' input features X
    unknown_background_weight: float = ranged(0.0, ge=0)  # box runs: weight of a background
                                              # L_ce on the unknown cells inside boxes (weak
                                              # evidence)
    layout: Literal["edges", "grid"] = "edges"  # edge list (faster on CPU at MSRC size) or tiled grid
    ce_balance: Literal["classes", "pixels"] = "classes"  # L_ce: background and foreground seed
                                              # means summed (reference code), or one pixel mean
    ce_on_image: bool = False                 # L_ce on logits upsampled to image size (reference code)
    gce_q: float = ranged(0.0, ge=0, le=1)    # 0: L_ce is cross-entropy; q > 0: generalized
                                              # cross-entropy (1 - O^q) / q, robust to wrong seeds
    batch_images: int = ranged(0, ge=0)       # images trained together; 0 = from memory_budget_gb
    memory_budget_gb: float = ranged(2.0, gt=0)  # memory for one propagation batch
    output_walk: bool = False                 # graph propagators: their node probabilities
                                              # walked over the graph, T^t O (docs/method.md
                                              # §6.5); on for box, point and image runs
    output_walk_log_steps: int = ranged(5, ge=0)  # ... for t = 2^this steps (T from rw_beta)
    output_walk_box_reach: float | None = ranged(None, gt=0)  # box runs: a box's cells stop
                                              # walking once the walk's reach sigma*sqrt(t)
                                              # passes this share of the box's short side (small
                                              # objects keep their shape); null: all walk t steps
    rw_beta: float = ranged(8.0, gt=0)        # random walk: affinity raised to β (PSA style)
    rw_log_steps: int = ranged(8, ge=0)       # random walk length 2^log_steps
    rw_method: Literal["matvec", "squaring"] = "matvec"  # repeated T·S (exact) or pruned squaring
    rw_tolerance: float = ranged(1e-3, ge=0, lt=1)  # pruning threshold of the squaring method


@dataclass
class CRFSettings:
    enabled: bool = True                      # DenseCRF (§7)
    iterations: int = ranged(10, ge=0)        # mean-field iterations
    gaussian_sxy: float = ranged(4.0, gt=0)   # smoothness kernel width (px)
    gaussian_compat: float = ranged(3.0, ge=0)  # ... and its weight
    bilateral_sxy: float = ranged(83.0, gt=0)  # appearance kernel width (px)
    bilateral_srgb: float = ranged(5.0, gt=0)  # ... its colour width
    bilateral_compat: float = ranged(3.0, ge=0)  # ... and its weight


@dataclass
class RefineSettings:
    """Pseudo labels from the node probabilities, besides the CRF (docs/method.md §7)."""

    tight_background: float = ranged(4.0, ge=1)  # box runs: background probability ×this on the
                                              # unknown pixels of boxes whose seeds already cross
                                              # every row and column (tightness met); 1 = off
    tight_coverage: float = ranged(0.95, gt=0, le=1)  # share of the box's rows and of its
                                              # columns the seeds must cross for that (and
                                              # GrabCut's foreground, to be taken)
    grabcut_iterations: int = ranged(0, ge=0)  # box runs: GrabCut started from the pseudo label,
                                              # per box, this many iterations (0 = off; §7)


@dataclass
class SegmenterSettings:
    """The segmentation network trained on the pseudo labels (docs/method.md §9)."""

    loss: Literal["ce", "nal"] = "nal"        # cross-entropy, or BANA's noise-aware loss (§9)
    tau: float = ranged(20.0, gt=0)           # τ of the cosine classifier softmax(τ·cos)
    head_channels: int = ranged(256, ge=1)    # DeepLab-V1 head width (256 CPU; GPU config: 512)
    dropout: float = ranged(0.5, ge=0, lt=1)  # dropout after each head convolution
    nal_gamma: float = ranged(7.0, ge=0)      # NAL: confidence σ = α^γ on unreliable pixels
    nal_lambda: float = ranged(0.1, ge=0)     # NAL: weight λ of the weighted CE on them
    inference_scales: tuple[float, ...] = ranged((0.5, 1.0, 1.5), gt=0, check=check_not_empty)
                                              # predict: scales averaged (each with its flip)
    rounds: int = ranged(0, ge=0)             # run: refinement rounds after the pseudo labels
                                              # (train, predict, CRF, restrict; §9)
    # CPU schedule (280 MSRC images in about 30 min here); configs/box_segmenter_gpu.yaml:
    # 30 epochs, crop 321, 512-channel head.
    training: TrainingSettings = field(default_factory=lambda: TrainingSettings(
        epochs=2, batch_size=8, lr=0.01, weight_decay=5e-4, crop_size=256,
        scale_range=(0.5, 1.5)))


@dataclass
class RunSettings:
    supervision: Literal["box", "scribble", "point", "image"] = "box"  # kind of weak label
    split: str = "train"                      # ImageSets/Segmentation/<split>.txt
    limit: int | None = ranged(None, ge=0, note="0 or null: every image")  # first N images only
    device: str = ranged("auto", check=check_device)  # auto | cpu | cuda | cuda:N; auto picks CUDA
    seed: int = ranged(0, ge=0)               # random seed (Python, NumPy, torch)
    max_side: int = ranged(640, ge=0, note="0: off")  # images with a longer side are processed
                                              # at this size, labels upsampled at the end
    backbone: BackboneSettings = field(default_factory=BackboneSettings)
    cam: CAMSettings = field(default_factory=CAMSettings)
    affinity: AffinitySettings = field(default_factory=AffinitySettings)
    seeds: SeedSettings = field(default_factory=SeedSettings)
    graph: GraphSettings = field(default_factory=GraphSettings)
    propagator: PropagatorSettings = field(default_factory=PropagatorSettings)
    crf: CRFSettings = field(default_factory=CRFSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)
    segmenter: SegmenterSettings = field(default_factory=SegmenterSettings)
    report_images: int = ranged(24, ge=0)     # images shown in report.html


# What changes with the kind of weak label (docs/method.md §4, §6); applied between the defaults
# above and a YAML file, so configs and key=value overrides still win. Scribble runs build the
# learned affinity graph (their seeds are precise enough to train it: docs/results.md); point
# runs keep the CAM's top 20 % per class, not 40 %, since every object already has its point and
# the GNN memorises whatever seeds it gets, so precision is worth more than coverage.
SUPERVISION_DEFAULTS: dict[str, list[str]] = {
    "box": ["propagator.output_walk=true", "propagator.output_walk_box_reach=0.2"],
    "scribble": ["propagator.reg_weight=0.3", "propagator.lr=0.03", "propagator.epochs_first=50",
                 "propagator.epochs_second=50", "propagator.multi_point=false",
                 "propagator.consistency=false", "affinity.radius=4", "graph.builder=affinity"],
    "point": ["propagator.reg_weight=0.3", "propagator.lr=0.03", "propagator.epochs_first=50",
              "propagator.epochs_second=50", "propagator.multi_point=false",
              "propagator.consistency=false", "affinity.radius=3", "graph.radius=3",
              "cam.seed_fraction=0.2", "propagator.output_walk=true"],
    "image": ["propagator.reg_weight=0.3", "propagator.lr=0.03", "propagator.epochs_first=50",
              "propagator.epochs_second=50", "propagator.multi_point=false",
              "propagator.consistency=false", "affinity.radius=3", "graph.radius=3",
              "propagator.output_walk=true"],
}


def supervision_defaults(supervision: str) -> list[str]:
    """The ``key=value`` defaults of one kind of supervision (see :data:`SUPERVISION_DEFAULTS`)."""
    if supervision not in SUPERVISION_DEFAULTS:
        raise ValueError(f"unknown supervision {supervision!r}; known: "
                         f"{', '.join(SUPERVISION_DEFAULTS)}")
    return [f"supervision={supervision}", *SUPERVISION_DEFAULTS[supervision]]


def load_run_settings(path=None, overrides: list[str] | None = None,
                      supervision: str | None = None) -> RunSettings:
    """:class:`RunSettings` from the YAML file ``path`` and ``key=value`` ``overrides``, with the
    defaults of their supervision underneath (:data:`SUPERVISION_DEFAULTS`): ``supervision`` when
    given, else the one the file or the overrides name, else box. Every entry point (``graphwsss
    run``, ``train-segmenter``, the scripts) loads its settings here, so all get the same
    defaults; the file and the overrides still win over them."""
    from graphwsss.config import load_config    # config.py is generic; it imports no settings

    overrides = [*([f"supervision={supervision}"] if supervision else []), *(overrides or [])]
    named = load_config(RunSettings, path, overrides).supervision
    return load_config(RunSettings, path, overrides, defaults=supervision_defaults(named))

"""Every setting of ``graphwsss run``, with its default: the one place where settings live.

Loaded by :func:`graphwsss.config.load_config` from ``configs/*.yaml`` plus ``key=value``
overrides; the resolved settings are written to ``<out>/config.yaml`` by each run.
Defaults follow DESIGN.md; where the published schedule is too slow for a CPU, the default is
the fast schedule and ``configs/*_paper.yaml`` keeps the published one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class BackboneSettings:
    name: str = "efficientnet_lite0"          # efficientnet_lite0 | resnet50 | resnet101
    weights: str | None = "imagenet"          # "imagenet" (bundled for efficientnet), a path, or null
    output_stride: int = 8                    # node grid stride (DESIGN.md §4–5)


@dataclass
class SeedSettings:
    grabcut_iterations: int = 5               # cv2.grabCut iterations per box (§2, eq. 3.2)
    min_box_size: int = 3                     # boxes thinner than this (px) give unknown seeds
    superpixel_method: Literal["slic", "felzenszwalb"] = "slic"  # scribble/point expansion (§2)
    superpixels: int = 600                    # SLIC segments per image for the expansion
    tags_file: str | None = None              # image-level tags JSON/CSV; default: Annotations/
    cam_fusion: bool = False                  # box runs: train the CAM network too and fuse its
                                              # seeds with GrabCut's (§2, eq. 3.4-3.5)


@dataclass
class TrainingSettings:
    """A network training schedule (affinity CNN §4, CAM network §3), with its augmentation."""

    epochs: int = 4
    batch_size: int = 8
    lr: float = 0.05                          # SGD (poly decay); backbone at lr/10
    momentum: float = 0.9
    weight_decay: float = 1e-4
    crop_size: int = 256                      # random crop (pixels), padded when smaller
    scale_range: tuple[float, float] = (0.7, 1.3)  # random rescale before the crop
    flip: bool = True
    color_jitter: float = 0.3                 # brightness/contrast/saturation strength
    workers: int = 0                          # DataLoader worker processes
    checkpoint: str | None = None             # use this checkpoint instead of training


@dataclass
class AffinitySettings:
    """The affinity CNN (DESIGN.md §4, eqs. 3.6–3.13)."""

    enabled: bool = True                      # train it when graph.builder needs it (affinity)
    radius: int = 4                           # pair radius on the stride-8 grid (code: 4 box/scribble)
    reg_weight: float = 3.0                   # λ of L_Aff = L_Ac + λ·L_Ar (3.13)
    sigma_xy: float = 6.0                     # L_Ar kernel (3.12)
    sigma_rgb: float = 0.1
    training: TrainingSettings = field(default_factory=TrainingSettings)


@dataclass
class CAMSettings:
    """The CAM seed network (DESIGN.md §3)."""

    pooling: Literal["gap", "gmp", "is", "is_binomial", "bap"] = "is"
    fsl: Literal["none", "multinomial", "binomial"] = "multinomial"
    fsl_weight: float | None = None           # None: 0.5 multinomial, 1.0 binomial (§3)
    fsl_sigma: float = 5.0                    # σ of w_ij (grid pixels) (eq. 10)
    fsl_mu: float = 2.5                       # μ of f (eq. 12)
    fsl_learnable: bool = False               # paper: learnable σ, μ; code: fixed (default)
    fsl_normalization: Literal["pairs", "pixels"] = "pixels"  # Z = (hw)² (eq. 9) or hw (published
                                              # code, the scale its loss weights were tuned at)
    fsl_window: int | None = None             # FSL window radius; None: ceil(3σ)
    is_lambda: float | None = None            # None: 0.8 multinomial, 0.2 binomial (§3)
    is_samples: int | None = None             # None: 100 multinomial, 10 binomial (§3)
    output_stride: int = 8
    inference_scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    inference_flip: bool = True
    seed_fraction: float = 0.4                # M'_I: top 40% most confident pixels per class (§2)
    background_threshold: float = 0.4         # M_I: background where every CAM is below (§2, 3.4)
    background_power: float = 1.0             # random-walk start, image tags: bg = (1 - max A)^α (§3)
    random_walk_share: float = 0.75           # image tags: final = 1/4 A²GNN + 3/4 random walk (§2)
    # lr 0.05 (the affinity CNN's) made importance-sampling training diverge in epoch 2 here.
    training: TrainingSettings = field(default_factory=lambda: TrainingSettings(lr=0.01))


@dataclass
class GraphSettings:
    builder: Literal["backbone", "rgbxy", "affinity", "superpixel", "knn"] = "backbone"  # (§5)
    radius: int = 4                           # r on the stride-8 grid (code: 4 for box/scribble)
    shape: Literal["disc", "square"] = "disc"
    threshold: float = 1e-3                   # E_ij kept when D(i,j) > threshold (§5)
    sigma_xy: float = 6.0                     # RGB-XY kernel (§4, eq. 3.12)
    sigma_rgb: float = 0.1
    superpixel_method: Literal["slic", "felzenszwalb"] = "slic"  # superpixel graph (GraphNet style)
    superpixels: int = 400                    # SLIC segments per image
    knn_k: int = 16                           # neighbours per node of the knn graph


@dataclass
class PropagatorSettings:
    name: Literal["a2gnn", "gcn", "gat", "agnn", "none", "random_walk"] = "a2gnn"
    hidden: int = 256
    layers: int = 3
    dropout: float = 0.5
    beta: float = 10.0                        # edge-term weight β (§6, eq. 3.18)
    form: Literal["reference", "paper"] = "reference"
    lr: float = 0.035
    weight_decay: float = 5e-4
    epochs_first: int = 30                    # CE + MP (+CC); published: 150 (box_*_paper.yaml)
    epochs_second: int = 30                   # ... then adding L_reg; published: 150
    reg_weight: float = 0.01                  # λ₁ (0.01 box, 0.3 others)
    reg_radius: int = 5
    multi_point: bool = True                  # L_mp (eqs. 3.23–3.26), boxes only
    consistency: bool = True                  # consistency checking (eqs. 3.27–3.28)
    unknown_background_weight: float = 0.0    # box runs: weight of a background L_ce on the
                                              # unknown cells inside boxes (weak evidence)
    layout: Literal["edges", "grid"] = "edges"  # edge list (faster on CPU at MSRC size) or tiled grid
    ce_on_image: bool = False                 # L_ce on logits upsampled to image size (reference code)
    batch_images: int = 0                     # images trained together; 0 = from memory_budget_gb
    memory_budget_gb: float = 2.0
    rw_beta: float = 8.0                      # random walk: affinity raised to β (PSA style)
    rw_log_steps: int = 8                     # random walk length 2^log_steps
    rw_method: Literal["matvec", "squaring"] = "matvec"  # repeated T·S (exact) or pruned squaring
    rw_tolerance: float = 1e-3                # pruning threshold of the squaring method


@dataclass
class CRFSettings:
    enabled: bool = True                      # DenseCRF (§7)
    iterations: int = 10
    gaussian_sxy: float = 4.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 83.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 3.0


@dataclass
class RunSettings:
    supervision: Literal["box", "scribble", "point", "image"] = "box"
    split: str = "train"                      # ImageSets/Segmentation/<split>.txt
    limit: int | None = None                  # first N images only
    device: str = "auto"                      # auto picks CUDA when present
    seed: int = 0
    backbone: BackboneSettings = field(default_factory=BackboneSettings)
    cam: CAMSettings = field(default_factory=CAMSettings)
    affinity: AffinitySettings = field(default_factory=AffinitySettings)
    seeds: SeedSettings = field(default_factory=SeedSettings)
    graph: GraphSettings = field(default_factory=GraphSettings)
    propagator: PropagatorSettings = field(default_factory=PropagatorSettings)
    crf: CRFSettings = field(default_factory=CRFSettings)
    report_images: int = 24                   # images shown in report.html


# What changes with the kind of weak label (DESIGN.md §4, §6); applied between the defaults
# above and a YAML file, so configs and key=value overrides still win.
SUPERVISION_DEFAULTS: dict[str, list[str]] = {
    "box": [],
    "scribble": ["propagator.reg_weight=0.3", "propagator.lr=0.03", "propagator.epochs_first=50",
                 "propagator.epochs_second=50", "propagator.multi_point=false",
                 "propagator.consistency=false", "affinity.radius=4"],
    "point": ["propagator.reg_weight=0.3", "propagator.lr=0.03", "propagator.epochs_first=50",
              "propagator.epochs_second=50", "propagator.multi_point=false",
              "propagator.consistency=false", "affinity.radius=3", "graph.radius=3"],
    "image": ["propagator.reg_weight=0.3", "propagator.lr=0.03", "propagator.epochs_first=50",
              "propagator.epochs_second=50", "propagator.multi_point=false",
              "propagator.consistency=false", "affinity.radius=3", "graph.radius=3"],
}


def supervision_defaults(supervision: str) -> list[str]:
    """The ``key=value`` defaults of one kind of supervision (see :data:`SUPERVISION_DEFAULTS`)."""
    if supervision not in SUPERVISION_DEFAULTS:
        raise ValueError(f"unknown supervision {supervision!r}; known: "
                         f"{', '.join(SUPERVISION_DEFAULTS)}")
    return [f"supervision={supervision}", *SUPERVISION_DEFAULTS[supervision]]

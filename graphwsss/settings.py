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


@dataclass
class GraphSettings:
    builder: Literal["backbone", "rgbxy"] = "backbone"  # backbone-feature or RGB-XY radius graph (§5)
    radius: int = 4                           # r on the stride-8 grid (code: 4 for box/scribble)
    shape: Literal["disc", "square"] = "disc"
    threshold: float = 1e-3                   # E_ij kept when D(i,j) > threshold (§5)
    sigma_xy: float = 6.0                     # RGB-XY kernel (§4, eq. 3.12)
    sigma_rgb: float = 0.1


@dataclass
class PropagatorSettings:
    name: Literal["a2gnn", "gcn", "gat", "agnn", "none"] = "a2gnn"
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
    layout: Literal["edges", "grid"] = "edges"  # edge list (faster on CPU at MSRC size) or tiled grid
    ce_on_image: bool = False                 # L_ce on logits upsampled to image size (reference code)
    batch_images: int = 0                     # images trained together; 0 = from memory_budget_gb
    memory_budget_gb: float = 2.0


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
    supervision: Literal["box"] = "box"
    split: str = "train"                      # ImageSets/Segmentation/<split>.txt
    limit: int | None = None                  # first N images only
    device: str = "auto"                      # auto picks CUDA when present
    seed: int = 0
    backbone: BackboneSettings = field(default_factory=BackboneSettings)
    seeds: SeedSettings = field(default_factory=SeedSettings)
    graph: GraphSettings = field(default_factory=GraphSettings)
    propagator: PropagatorSettings = field(default_factory=PropagatorSettings)
    crf: CRFSettings = field(default_factory=CRFSettings)
    report_images: int = 24                   # images shown in report.html

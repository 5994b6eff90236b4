"""Affinity CNN stage (DESIGN.md §4): train on a run's own seeds, then embed images for the
``affinity`` graph builder (§5).

Files under ``<run>/affinity/`` (see :mod:`graphwsss.training.loop`): ``checkpoint.pt`` after each
epoch, ``model.pt`` once trained, ``train_log.json``. A run whose ``model.pt`` exists skips
training; ``affinity.training.checkpoint`` points at weights trained elsewhere instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from graphwsss.data.errors import DataError
from graphwsss.data.palette import read_label_png
from graphwsss.data.voc import VOCDataset
from graphwsss.graphs.grid import radius_offsets
from graphwsss.losses.affinity import affinity_loss
from graphwsss.models.affinity import AffinityNet
from graphwsss.models.backbone import build_backbone
from graphwsss.seeds.grid import grid_seeds
from graphwsss.settings import BackboneSettings, RunSettings
from graphwsss.training import AugmentedImageSet, load_trained_weights, train_network
from graphwsss.utils.runtime import get_logger

log = get_logger(__name__)


def build_affinity_network(backbone: BackboneSettings, pretrained: bool = True) -> AffinityNet:
    """An :class:`AffinityNet` on the configured backbone (ImageNet weights when ``pretrained``)."""
    return AffinityNet(build_backbone(backbone.name, weights=backbone.weights if pretrained else None,
                                      output_stride=backbone.output_stride))


def load_affinity_network(path: str | Path, device: torch.device | str,
                          backbone: BackboneSettings | None = None) -> AffinityNet:
    """Load trained affinity weights: a ``model.pt`` state dict, a training ``checkpoint.pt``,
    or a folder holding ``model.pt``. Returns the network in evaluation mode on ``device``."""
    network = build_affinity_network(backbone or BackboneSettings(), pretrained=False)
    return load_trained_weights(network, path, device,
                                f"{type(network.backbone).__name__} affinity network")


class AffinityTrainingSet(AugmentedImageSet):
    """Images with their seed maps, augmented (DESIGN.md §4: random scale, crop, flip, jitter).

    Items are dicts: ``image`` ``[3, S, S]`` float normalised for the backbone, ``seeds``
    ``[h, w]`` long on the output grid (255 unknown and on padding), ``image_grid`` ``[3, h, w]``
    RGB in ``[0, 1]`` averaged over each cell, ``valid`` ``[h, w]`` bool.
    """

    def __init__(self, dataset: VOCDataset, image_ids: list[str], seed_dir: str | Path,
                 settings: RunSettings, pixel_mean, pixel_std, stride: int) -> None:
        super().__init__(dataset, image_ids, settings.affinity.training, settings.seed,
                         pixel_mean, pixel_std, stride)
        self.seed_dir = Path(seed_dir)
        missing = [image_id for image_id in self.image_ids
                   if not (self.seed_dir / f"{image_id}.png").is_file()]
        if missing:
            raise DataError(self.seed_dir, f"no seed map for {len(missing)} training images "
                                           f"(first: {missing[0]}.png); run the seeds stage first")

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image_id = self.image_ids[index]
        image = self.dataset.load(image_id).image
        seed_path = self.seed_dir / f"{image_id}.png"
        seeds = read_label_png(seed_path)
        if seeds.shape != image.shape[:2]:
            raise DataError(seed_path, f"seed map is {seeds.shape}, image is {image.shape[:2]}")
        augmented, item = self.augment_image(image_id, image, seeds)
        item["seeds"] = torch.from_numpy(grid_seeds(augmented.label, self.grid,
                                                    self.stride).astype(np.int64))
        return item


class AffinityObjective:
    """``(model, batch) -> (L_Aff, logs)`` for :func:`graphwsss.training.train_network` (3.13)."""

    def __init__(self, settings: RunSettings) -> None:
        affinity = settings.affinity
        self.offsets = radius_offsets(affinity.radius, settings.graph.shape)
        self.reg_weight = affinity.reg_weight
        self.sigma_xy, self.sigma_rgb = affinity.sigma_xy, affinity.sigma_rgb

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        _, embedding = model(batch["image"])
        return affinity_loss(embedding, batch["seeds"], batch["image_grid"],
                             self.offsets.to(embedding.device), reg_weight=self.reg_weight,
                             sigma_xy=self.sigma_xy, sigma_rgb=self.sigma_rgb,
                             valid_mask=batch["valid"])


def train_affinity(dataset: VOCDataset, image_ids: list[str], seed_dir: str | Path,
                   out_dir: str | Path, settings: RunSettings, device: torch.device,
                   show_progress: bool = True) -> AffinityNet:
    """Train the affinity CNN on ``image_ids`` with the seeds in ``seed_dir`` (resumable), or
    load ``settings.affinity.training.checkpoint`` when set."""
    given = settings.affinity.training.checkpoint
    if given:
        log.info("affinity: using trained weights %s", given)
        return load_affinity_network(given, device, settings.backbone)
    network = build_affinity_network(settings.backbone)
    backbone = network.backbone
    training_set = AffinityTrainingSet(dataset, image_ids, seed_dir, settings, backbone.pixel_mean,
                                       backbone.pixel_std, network.stride)
    return train_network(network, AffinityObjective(settings), training_set,
                         settings.affinity.training, out_dir, device, seed=settings.seed,
                         description="affinity", show_progress=show_progress)


class AffinityEmbedder:
    """Node features and affinity embedding of an image from a trained :class:`AffinityNet`
    (the node source of ``graph.builder=affinity``)."""

    def __init__(self, network: AffinityNet) -> None:
        self.network = network.eval()
        self.stride = network.stride
        self.channels = network.channels

    def extract(self, image: np.ndarray) -> tuple[Tensor, Tensor]:
        """``[H, W, 3]`` uint8 to ``(features [C, h, w], embedding [d_A, h, w])``."""
        return self.network.embed(image)

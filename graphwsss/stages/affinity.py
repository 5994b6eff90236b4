"""Affinity CNN stage (docs/method.md §4): train on a run's own seeds, then embed images for the
``affinity`` graph builder (§5).

Files under ``<run>/affinity/`` (see :mod:`graphwsss.training.loop`): ``checkpoint.pt`` after each
epoch, ``model.pt`` once trained, ``train_log.json``. A run whose ``model.pt`` exists skips
training; ``affinity.training.checkpoint`` points at weights trained elsewhere instead.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from graphwsss.data.errors import DataError
from graphwsss.data.palette import read_label_png
from graphwsss.data.voc import VOCDataset
from graphwsss.graphs.grid import radius_offsets
from graphwsss.losses.affinity import affinity_loss
from graphwsss.models.affinity import AffinityNet, EdgeAffinityNet
from graphwsss.models.registry import build_backbone
from graphwsss.seeds.grid import grid_seeds
from graphwsss.settings import BackboneSettings, RunSettings
from graphwsss.stages.manifest import uses_affinity_network
from graphwsss.training import AugmentedImageSet, load_trained_weights, train_network
from graphwsss.training.feature_cache import FeatureCache
from graphwsss.utils.checkpoint import load_safely
from graphwsss.utils.io import atomic_path, atomic_write
from graphwsss.utils.runtime import get_logger

log = get_logger(__name__)


def build_affinity_network(backbone: BackboneSettings, pretrained: bool = True,
                           mode: str = "finetune") -> AffinityNet | EdgeAffinityNet:
    """The affinity CNN on the configured backbone (ImageNet weights when ``pretrained``):
    :class:`AffinityNet` for ``mode="finetune"``, :class:`EdgeAffinityNet` for ``"cached"``."""
    built = build_backbone(backbone.name, weights=backbone.weights if pretrained else None,
                           output_stride=backbone.output_stride)
    return EdgeAffinityNet(built) if mode == "cached" else AffinityNet(built)


def load_affinity_network(path: str | Path, device: torch.device | str,
                          backbone: BackboneSettings | None = None) -> AffinityNet | EdgeAffinityNet:
    """Load trained affinity weights: a ``model.pt`` state dict, a training ``checkpoint.pt``,
    or a folder holding ``model.pt``; the architecture (:class:`EdgeAffinityNet` or
    :class:`AffinityNet`) is read from the weights. Returns the network in evaluation mode on
    ``device``."""
    file = Path(path) / "model.pt" if Path(path).is_dir() else Path(path)
    mode = "finetune"
    if file.is_file():
        state = load_safely(file, "affinity network weights", "cpu")
        state = state.get("model", state) if isinstance(state, dict) else state
        if isinstance(state, dict) and any(str(key).startswith("head.") for key in state):
            mode = "cached"
    network = build_affinity_network(backbone or BackboneSettings(), pretrained=False, mode=mode)
    return load_trained_weights(network, path, device,
                                f"{type(network.backbone).__name__} affinity network")


class AffinityTrainingSet(AugmentedImageSet):
    """Images with their seed maps, augmented (docs/method.md §4: random scale, crop, flip, jitter).

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


def run(ctx, image_ids: list[str]) -> AffinityNet | None:
    """The affinity stage of a run (``graph.builder=affinity`` with a propagator that reads the
    graph, :func:`~graphwsss.stages.manifest.uses_affinity_network`; else ``None``): the CNN
    trained on the seeds of every image in ``image_ids`` (DDP under torchrun), from
    ``affinity_seeds/`` where the run wrote them (scribble, point), else ``seeds/``; its files in
    ``<run>/affinity/``. ``ctx``: the run's :class:`~graphwsss.stages.paths.RunContext`."""
    if not uses_affinity_network(ctx.settings):
        return None
    paths = ctx.paths
    log.info("stage affinity: CNN on the seeds of %d images -> %s", len(image_ids), paths.affinity)
    seed_dir = paths.affinity_seeds if paths.affinity_seeds.is_dir() else paths.seeds
    return train_affinity(ctx.dataset, image_ids, seed_dir, paths.affinity, ctx.settings,
                          ctx.device, show_progress=ctx.show_progress)


def train_affinity(dataset: VOCDataset, image_ids: list[str], seed_dir: str | Path,
                   out_dir: str | Path, settings: RunSettings, device: torch.device,
                   show_progress: bool = True) -> AffinityNet:
    """Train the affinity CNN on ``image_ids`` with the seeds in ``seed_dir`` (resumable), or
    load ``settings.affinity.training.checkpoint`` when set."""
    given = settings.affinity.training.checkpoint
    if given:
        log.info("affinity: using trained weights %s", given)
        return load_affinity_network(given, device, settings.backbone)
    if settings.affinity.mode == "cached":
        return train_affinity_cached(dataset, image_ids, seed_dir, out_dir, settings, device,
                                     show_progress=show_progress)
    network = build_affinity_network(settings.backbone)
    backbone = network.backbone
    training_set = AffinityTrainingSet(dataset, image_ids, seed_dir, settings, backbone.pixel_mean,
                                       backbone.pixel_std, network.stride)
    return train_network(network, AffinityObjective(settings), training_set,
                         settings.affinity.training, out_dir, device, seed=settings.seed,
                         description="affinity", show_progress=show_progress)


def train_affinity_cached(dataset: VOCDataset, image_ids: list[str], seed_dir: str | Path,
                          out_dir: str | Path, settings: RunSettings, device: torch.device,
                          show_progress: bool = True) -> EdgeAffinityNet:
    """Train an :class:`EdgeAffinityNet` head on cached backbone features (``affinity.mode=cached``).

    The frozen backbone runs once per image and mirror (:class:`FeatureCache`; at most
    ``affinity.cache_images`` images, a subset drawn with the run's seed); then
    ``affinity.steps`` Adam steps (``affinity.adam_lr``, cosine decay, weight decay
    ``training.weight_decay``) on batches of ``training.batch_size`` random crops of
    ``training.crop_size / s`` nodes, loss L_Ac + λ·L_Ar (3.13). Writes
    ``out_dir/model.pt`` (the whole network's state dict) and ``out_dir/train_log.json`` (losses
    averaged over windows of steps, cache and training seconds); a folder whose ``model.pt``
    exists is loaded instead. Not resumable: training takes minutes.
    """
    out_dir = Path(out_dir)
    final_path = out_dir / "model.pt"
    if final_path.is_file():
        log.info("affinity: %s exists, skipping training", final_path)
        return load_affinity_network(final_path, device, settings.backbone)
    affinity, training = settings.affinity, settings.affinity.training
    network = build_affinity_network(settings.backbone, mode="cached").to(device)
    seed_dir = Path(seed_dir)
    missing = [image_id for image_id in image_ids if not (seed_dir / f"{image_id}.png").is_file()]
    if missing:
        raise DataError(seed_dir, f"no seed map for {len(missing)} training images "
                                  f"(first: {missing[0]}.png); run the seeds stage first")
    if len(image_ids) > affinity.cache_images:
        chosen = np.random.default_rng(settings.seed).choice(len(image_ids), affinity.cache_images,
                                                             replace=False)
        log.info("affinity: caching %d of the %d images (affinity.cache_images)",
                 affinity.cache_images, len(image_ids))
        image_ids = [image_ids[index] for index in sorted(chosen)]
    started = time.perf_counter()
    cache = FeatureCache(network.backbone, network.stride, device)
    progress = tqdm(image_ids, desc="affinity cache", disable=not show_progress, leave=False)
    for image_id in progress:
        sample = dataset.load(image_id)
        cache.add(image_id, sample.image, read_label_png(seed_dir / f"{image_id}.png"),
                  flip=training.flip)
    cache_seconds = time.perf_counter() - started
    log.info("affinity: cached %d entries (%.0f MB) in %.0f s", len(cache), cache.nbytes() / 1e6,
             cache_seconds)
    history = train_cached_head(network, cache, settings, device, show_progress=show_progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(final_path) as temporary:
        torch.save(network.state_dict(), temporary)
    atomic_write(out_dir / "train_log.json", json.dumps(
        {"cache_seconds": cache_seconds, "cache_entries": len(cache), "steps": affinity.steps,
         "history": history}, indent=1))
    return network.eval()


def train_cached_head(network: EdgeAffinityNet, cache: FeatureCache, settings: RunSettings,
                      device: torch.device, show_progress: bool = False,
                      log_every: int = 100) -> list[dict]:
    """The training loop of :func:`train_affinity_cached` on a filled cache; returns the log
    (one entry per ``log_every`` steps: mean loss, L_Ac, L_Ar, lr, seconds since start)."""
    affinity, training = settings.affinity, settings.affinity.training
    offsets = radius_offsets(affinity.radius, settings.graph.shape).to(device)
    crop = max(1, training.crop_size // network.stride)
    parameters = [p for p in network.head.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=affinity.adam_lr,
                                 weight_decay=training.weight_decay)
    steps = affinity.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1))))
    generator = torch.Generator().manual_seed(settings.seed)
    network.train()
    history, window, started = [], [], time.perf_counter()
    progress = tqdm(range(steps), desc="affinity", disable=not show_progress, leave=False)
    for step in progress:
        batch = cache.batch(training.batch_size, crop, generator)
        embedding = network.head([level.to(device) for level in batch["levels"]],
                                 batch["colour"].to(device), batch["image_grid"].to(device))
        loss, logs = affinity_loss(embedding, batch["seeds"].to(device),
                                   batch["image_grid"].to(device), offsets,
                                   reg_weight=affinity.reg_weight, sigma_xy=affinity.sigma_xy,
                                   sigma_rgb=affinity.sigma_rgb,
                                   valid_mask=batch["valid"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        window.append((float(loss.detach()), logs["classification"], logs["regularization"]))
        if len(window) == log_every or step == steps - 1:
            means = np.mean(window, axis=0)
            history.append({"step": step + 1, "loss": float(means[0]),
                            "classification": float(means[1]), "regularization": float(means[2]),
                            "lr": optimizer.param_groups[0]["lr"],
                            "seconds": time.perf_counter() - started})
            log.info("affinity step %d: L_Aff %.4f  L_Ac %.4f  L_Ar %.4f", step + 1, *means)
            window = []
    return history


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

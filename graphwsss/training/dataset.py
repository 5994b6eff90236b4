"""The part every training set shares: per-epoch, per-image augmentation and the common tensors."""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from graphwsss.data.voc import VOCDataset
from graphwsss.graphs.grid import downsample_image
from graphwsss.seeds.grid import grid_seeds
from graphwsss.settings import TrainingSettings
from graphwsss.training.augment import Augmented, augment


class AugmentedImageSet(Dataset):
    """Base of the affinity and CAM training sets.

    Augmentation (scale, crop, flip, jitter of ``training``) draws from a generator seeded by
    ``(seed, epoch, image id)``, so an item is the same whichever worker or rank loads it; the
    training loop calls :meth:`set_epoch`. Output grid: ``ceil(crop_size / stride)`` square.
    """

    def __init__(self, dataset: VOCDataset, image_ids: Sequence[str], training: TrainingSettings,
                 seed: int, pixel_mean, pixel_std, stride: int) -> None:
        self.dataset = dataset
        self.image_ids = list(image_ids)
        self.training = training
        self.seed = seed
        self.pixel_mean = torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1)
        self.pixel_std = torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1)
        self.stride = stride
        self.grid = (-(-training.crop_size // stride),) * 2
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.image_ids)

    def augment_image(self, image_id: str, image: np.ndarray,
                      label: np.ndarray | None) -> tuple[Augmented, dict[str, Tensor]]:
        """Augment ``image`` (and ``label``, moved the same way) for this epoch.

        Returns:
            ``(augmented, items)``: the :class:`Augmented` crop, and ``image`` ``[3, S, S]``
            normalised for the backbone, ``image_grid`` ``[3, h, w]`` RGB in ``[0, 1]`` averaged
            over each cell, ``valid`` ``[h, w]`` bool (cell centre inside the image).
        """
        rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(image_id.encode())])
        training = self.training
        augmented = augment(image, label, rng, crop_size=training.crop_size,
                            scale_range=training.scale_range, flip=training.flip,
                            jitter=training.color_jitter)
        pixels = torch.from_numpy(augmented.image).permute(2, 0, 1).float()
        return augmented, {
            "image": (pixels - self.pixel_mean) / self.pixel_std,
            "image_grid": downsample_image(pixels / 255.0, *self.grid),
            "valid": torch.from_numpy(grid_seeds(augmented.valid.astype(np.uint8), self.grid,
                                                 self.stride) > 0),
        }

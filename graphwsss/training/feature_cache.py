"""Backbone features computed once per image and flip, kept in memory, cropped into batches.

Training a head on a frozen backbone (the affinity CNN, docs/method.md §4) needs the backbone's
output only once per image and augmentation: :class:`FeatureCache` runs it on every image and
its horizontal mirror, stores what :func:`graphwsss.models.affinity.head_inputs` makes of the
levels (every level padded to tile the stride-``s`` node grid, the stride-2 colour maps, the
mean RGB of each node's cell) as float16 with the node seeds, and serves random crops on the
node grid. A training step then costs only the head's forward and backward pass.

Memory: about 1.8 MB per entry at MSRC size (320×213, EfficientNet-Lite0, output stride 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor

from graphwsss.models.affinity import head_inputs
from graphwsss.models.backbone import Backbone
from graphwsss.seeds.grid import grid_seeds

IGNORE_INDEX = 255


@dataclass
class CacheEntry:
    """One image (or its mirror): ``levels`` ``[C_l, h r_l, w r_l]`` (``r_l = s / s_l``),
    ``colour`` ``[6, h r_c, w r_c]``, ``image_grid`` ``[3, h, w]`` (float16), ``seeds``
    ``[h, w]`` uint8 (255 unknown)."""

    image_id: str
    flipped: bool
    levels: list[Tensor]
    colour: Tensor
    image_grid: Tensor
    seeds: Tensor

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.seeds.shape)


class FeatureCache:
    """Head inputs of a frozen backbone for every image (and mirror), with random grid crops.

    Args:
        backbone: the frozen backbone (run in evaluation mode, without gradients).
        stride: the node grid's stride ``s`` (8).
        device: where the backbone runs; the cache lives on the CPU.
    """

    def __init__(self, backbone: Backbone, stride: int, device: torch.device | str = "cpu") -> None:
        self.backbone = backbone
        self.stride = stride
        self.device = torch.device(device)
        self.ratios = tuple(stride // level_stride for level_stride in backbone.strides)
        self.colour_ratio: int | None = None
        self.entries: list[CacheEntry] = []

    @torch.no_grad()
    def add(self, image_id: str, image: np.ndarray, seeds: np.ndarray, flip: bool = True) -> None:
        """Cache ``image`` ``[H, W, 3]`` uint8 with its pixel ``seeds`` ``[H, W]`` (and, with
        ``flip``, both mirrored)."""
        if seeds.shape != image.shape[:2]:
            raise ValueError(f"seeds {seeds.shape} do not match the image {image.shape[:2]}")
        was_training = self.backbone.training
        self.backbone.eval()
        for flipped in ((False, True) if flip else (False,)):
            pixels = np.ascontiguousarray(image[:, ::-1] if flipped else image)
            labels = np.ascontiguousarray(seeds[:, ::-1] if flipped else seeds)
            inputs = self.backbone.preprocess(pixels).unsqueeze(0).to(self.device)
            rgb = torch.from_numpy(pixels).permute(2, 0, 1).float().unsqueeze(0).to(self.device) / 255
            levels, colour, image_grid = head_inputs(self.backbone(inputs), rgb,
                                                     self.backbone.strides, self.stride)
            grid = tuple(image_grid.shape[-2:])
            self.colour_ratio = colour.shape[-1] // grid[1]
            node_seeds = torch.from_numpy(grid_seeds(labels, grid, self.stride).astype(np.uint8))
            self.entries.append(CacheEntry(
                image_id, flipped, [level[0].half().cpu() for level in levels],
                colour[0].half().cpu(), image_grid[0].half().cpu(), node_seeds))
        self.backbone.train(was_training)

    def fill(self, items: Iterable[tuple[str, np.ndarray, np.ndarray]], flip: bool = True,
             progress: Callable[[Iterable], Iterable] = lambda it: it) -> "FeatureCache":
        """:meth:`add` every ``(image_id, image, seeds)``; returns ``self``."""
        for image_id, image, seeds in progress(items):
            self.add(image_id, image, seeds, flip=flip)
        return self

    def __len__(self) -> int:
        return len(self.entries)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for entry in self.entries
                   for t in (*entry.levels, entry.colour, entry.image_grid, entry.seeds))

    def batch(self, size: int, crop: int, generator: torch.Generator) -> dict:
        """``size`` random crops of ``crop × crop`` nodes (entries drawn uniformly).

        Returns a dict: ``levels`` (list of ``[B, C_l, crop r_l, crop r_l]`` float32),
        ``colour``, ``image_grid`` ``[B, 3, crop, crop]``, ``seeds`` ``[B, crop, crop]`` long
        (255 unknown and on padding), ``valid`` ``[B, crop, crop]`` bool (``False`` on padding,
        where an entry's grid is smaller than the crop; padded features are 0).
        """
        if not self.entries:
            raise ValueError("the feature cache is empty")
        picks = torch.randint(len(self.entries), (size,), generator=generator).tolist()
        crops = [self._crop(self.entries[index], crop, generator) for index in picks]
        return {"levels": [torch.stack([c["levels"][i] for c in crops]).float()
                           for i in range(len(self.ratios))],
                **{key: torch.stack([c[key] for c in crops])
                   for key in ("colour", "image_grid", "seeds", "valid")}}

    def _crop(self, entry: CacheEntry, crop: int, generator: torch.Generator) -> dict:
        height, width = entry.grid
        top = int(torch.randint(max(height - crop, 0) + 1, (1,), generator=generator))
        left = int(torch.randint(max(width - crop, 0) + 1, (1,), generator=generator))
        rows, cols = min(crop, height), min(crop, width)

        def take(value: Tensor, ratio: int, fill: float = 0.0) -> Tensor:
            out = value.new_full((*value.shape[:-2], crop * ratio, crop * ratio), fill)
            out[..., :rows * ratio, :cols * ratio] = value[
                ..., top * ratio:(top + rows) * ratio, left * ratio:(left + cols) * ratio]
            return out

        valid = torch.zeros(crop, crop, dtype=torch.bool)
        valid[:rows, :cols] = True
        return {"levels": [take(level, ratio) for level, ratio in zip(entry.levels, self.ratios)],
                "colour": take(entry.colour, self.colour_ratio).float(),
                "image_grid": take(entry.image_grid, 1).float(),
                "seeds": take(entry.seeds, 1, IGNORE_INDEX).long(), "valid": valid}

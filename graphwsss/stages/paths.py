"""The run folder and what every stage of a run shares (docs/method.md §1).

:class:`RunPaths` names every file a run writes under ``<out>``; :class:`RunContext` is what a
stage's ``run(...)`` receives: the data set, the run folder, the settings and the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from graphwsss.settings import RunSettings
from graphwsss.utils.io import inside


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


@dataclass
class RunContext:
    """What every stage of one run (one rank under ``torchrun``) works with.

    Attributes:
        dataset: the run's data set (:class:`~graphwsss.data.voc.VOCDataset`, a COCO data set,
            or either at ``max_side``).
        paths: the run folder.
        settings: the run's settings.
        device: where tensors go.
        show_progress: progress bars on (rank 0 only under ``torchrun``).
    """

    dataset: object
    paths: RunPaths
    settings: RunSettings
    device: torch.device
    show_progress: bool = True

    def progress(self, items, desc: str):
        """``items`` with a progress bar named ``desc`` (when progress is shown)."""
        return tqdm(items, desc=desc, disable=not self.show_progress, leave=False)

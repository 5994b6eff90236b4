"""Node features and graphs of a run's images (docs/method.md §4–5), shared by the propagation
stage and ``graphwsss bench-graphs``.

Per image: node features ``[C, h, w]`` on the stride-``s`` grid (ImageNet backbone, or the
trained affinity CNN for ``graph.builder=affinity``, with its embedding), the seeds on that grid,
and the graph of ``graph.builder``. Graphs are built in memory when they are needed: building one
takes milliseconds, a tenth of the feature extraction, and far less than training on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from graphwsss.data.palette import read_label_png
from graphwsss.data.records import Sample
from graphwsss.graphs import build_graph_builder
from graphwsss.graphs.base import cell_node_index
from graphwsss.losses import boxes_to_grid
from graphwsss.seeds.grid import grid_seeds
from graphwsss.settings import GraphSettings, RunSettings
from graphwsss.stages.affinity import AffinityEmbedder, load_affinity_network
from graphwsss.stages.features import FeatureExtractor


@dataclass
class PropagationItem:
    """One image's propagation problem.

    Attributes:
        graph: any graph of :mod:`graphwsss.graphs` (``x`` ``[N, F]``, ``edge_index``,
            ``edge_attr``, ``y`` ``[N]`` node seeds, ``grid_shape``; optional ``cell_node``
            ``[h * w]`` for graphs whose nodes are not the grid cells, ``grid_weight``
            ``[O, h, w]`` and ``offsets`` for grid radius graphs).
        image: ``[3, H, W]`` float RGB in ``[0, 1]``.
        pixel_seeds: ``[H, W]`` long seeds at image size (255 unknown).
        boxes, box_classes: ``[M, 4]`` boxes on the node grid and ``[M]`` their classes.
        stride: pixels per node along each axis.
    """

    image_id: str
    graph: Data
    image: Tensor
    pixel_seeds: Tensor
    boxes: Tensor
    box_classes: Tensor
    stride: int

    @property
    def grid_shape(self) -> tuple[int, int]:
        return tuple(self.graph.grid_shape)

    @property
    def is_grid_graph(self) -> bool:
        """A radius graph on the grid cells, usable by the tiled ``"grid"`` layout."""
        return (getattr(self.graph, "grid_weight", None) is not None
                and getattr(self.graph, "cell_node", None) is None)

    def cell_seeds(self) -> Tensor:
        """``[h, w]`` seeds of the grid cells: each cell takes its node's seed ``y``."""
        return self.graph.y[cell_node_index(self.graph)].view(self.grid_shape)


@dataclass
class NodeInputs:
    """What a graph builder reads for one image: ``image`` ``[3, H, W]`` in ``[0, 1]``,
    ``features`` ``[C, h, w]``, ``embedding`` ``[d_A, h, w]`` (affinity CNN) or ``None``,
    ``node_seeds`` ``[h, w]`` long (255 unknown) or ``None``, ``stride`` pixels per node."""

    image: Tensor
    features: Tensor
    embedding: Tensor | None
    node_seeds: Tensor | None
    stride: int

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.features.shape[-2:])


def builder_options(graph: GraphSettings) -> dict:
    """The keyword arguments of ``graph.builder``'s builder, from the ``graph.*`` settings."""
    if graph.builder == "superpixel":
        return {"method": graph.superpixel_method, "segments": graph.superpixels,
                "sigma_rgb": graph.sigma_rgb, "threshold": graph.threshold}
    if graph.builder == "knn":
        return {"k": graph.knn_k, "threshold": graph.threshold}
    options = {"radius": graph.radius, "threshold": graph.threshold, "shape": graph.shape}
    if graph.builder == "rgbxy":
        options.update(sigma_xy=graph.sigma_xy, sigma_rgb=graph.sigma_rgb)
    else:
        if graph.builder == "backbone":   # a trained affinity embedding is calibrated by its loss
            options.update(calibrate=graph.calibrate)
        else:
            options.update(feature_affinity=graph.feature_affinity)
        if graph.colour:
            options.update(colour=(graph.sigma_xy, graph.sigma_rgb))
    return options


def make_builder(graph: GraphSettings):
    """The graph builder ``graph.builder`` with its settings (:mod:`graphwsss.graphs`)."""
    return build_graph_builder(graph.builder, **builder_options(graph))


def node_source(settings: RunSettings, device: torch.device, affinity_dir: str | Path | None = None,
                network=None) -> FeatureExtractor | AffinityEmbedder:
    """Where node features (and the affinity embedding) come from: for ``graph.builder=affinity``
    the trained affinity CNN (``network``, else loaded from ``affinity.training.checkpoint`` or
    ``affinity_dir``), the ImageNet backbone otherwise."""
    if settings.graph.builder != "affinity":
        return FeatureExtractor(settings.backbone, device)
    if network is None:
        weights = settings.affinity.training.checkpoint or affinity_dir
        if weights is None:
            raise ValueError("graph.builder=affinity needs a trained affinity CNN: set "
                             "affinity.training.checkpoint or run the affinity stage")
        network = load_affinity_network(weights, device, settings.backbone)
    return AffinityEmbedder(network)


def typical_nodes(dataset, stride: int) -> int:
    """Grid nodes of the data set's first image at ``stride`` (sizes the propagation batches)."""
    sample = dataset.load(dataset.ids[0])
    return math.ceil(sample.height / stride) * math.ceil(sample.width / stride)


def node_inputs(sample: Sample, source, device: torch.device,
                seeds: np.ndarray | None = None) -> NodeInputs:
    """Features, embedding and grid seeds of one image (``seeds``: ``[H, W]`` or ``None``)."""
    features, embedding = source.extract(sample.image)
    grid_size = tuple(features.shape[-2:])
    image = torch.from_numpy(sample.image).to(device).permute(2, 0, 1).float() / 255.0
    node_seeds = None
    if seeds is not None:
        node_seeds = torch.from_numpy(grid_seeds(seeds, grid_size, source.stride)
                                      .astype(np.int64)).to(device)
    return NodeInputs(image, features, embedding, node_seeds, source.stride)


def build_item(sample: Sample, seed_file: str | Path, source, builder,
               device: torch.device) -> PropagationItem:
    """One image's :class:`PropagationItem`: its seeds (``seed_file``), features and graph."""
    seeds = read_label_png(seed_file)
    inputs = node_inputs(sample, source, device, seeds)
    graph = builder.build(inputs.image, inputs.features, seed_labels=inputs.node_seeds,
                          embedding=inputs.embedding)
    grid_size, stride = inputs.grid_size, inputs.stride
    padded_size = (grid_size[0] * stride, grid_size[1] * stride)
    boxes, box_classes = boxes_to_grid(sample.boxes, padded_size, grid_size, device=device)
    return PropagationItem(
        image_id=sample.image_id, graph=graph, image=inputs.image,
        pixel_seeds=torch.from_numpy(seeds.astype(np.int64)).to(device),
        boxes=boxes, box_classes=box_classes, stride=stride)

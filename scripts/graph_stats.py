#!/usr/bin/env python
"""Purity and mean neighbour affinity of a data set's graphs, within and across ground-truth classes.

For the ImageNet-feature graph (always) and each learned affinity CNN given with ``--model``, over
the first ``--limit`` images: *purity* is the share of edge weight (self loops excluded) that joins
nodes of the same ground-truth class (void cells left out); *D within / across* is the mean
affinity ``exp(-||f_i - f_j||_1)`` (docs/method.md §4) between grid neighbours within the radius
of the same / different classes, with medians. Prints one JSON line per graph source::

    python scripts/graph_stats.py --data ../shared/data/msrc-objects --limit 60 \\
        --model RUN/affinity/model.pt
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from graphwsss.data.voc import VOCDataset
from graphwsss.graphs import AffinityGraphBuilder, RadiusGraphBuilder, affinity_from_embedding
from graphwsss.graphs.grid import radius_offsets, shift
from graphwsss.metrics.graph import node_ground_truth, purity_weights
from graphwsss.seeds.grid import grid_seeds
from graphwsss.settings import BackboneSettings
from graphwsss.stages.affinity import AffinityEmbedder, load_affinity_network
from graphwsss.stages.features import FeatureExtractor

IGNORE_INDEX = 255


def graph_stats(dataset: VOCDataset, image_ids: list[str], extractor, builder,
                radius: int, stride: int) -> dict:
    """Purity and within / across-class affinity of the graphs ``builder`` makes from
    ``extractor``'s features (see the module docstring)."""
    offsets = radius_offsets(radius, "disc")
    offsets = offsets[(offsets != 0).any(1)]
    same_weight = counted_weight = 0.0
    within, across = [], []
    started = time.perf_counter()
    for image_id in image_ids:
        sample = dataset.load(image_id)
        features, embedding = extractor.extract(sample.image)
        grid = tuple(features.shape[-2:])
        image = torch.from_numpy(sample.image).permute(2, 0, 1).float() / 255
        graph = builder.build(image, features, embedding=embedding)
        truth = torch.from_numpy(grid_seeds(dataset.ground_truth(image_id), grid, stride)
                                 .astype(np.int64))
        same, counted = purity_weights(graph.edge_index, graph.edge_attr,
                                       node_ground_truth(graph, truth))
        same_weight, counted_weight = same_weight + same, counted_weight + counted
        affinity = affinity_from_embedding((features if embedding is None else embedding).float(),
                                           offsets)                          # [P, h, w]
        neighbour = torch.stack([shift(truth, int(dy), int(dx), fill=IGNORE_INDEX)
                                 for dy, dx in offsets.tolist()])            # [P, h, w]
        centre = truth.unsqueeze(0).expand_as(neighbour)
        known = (centre != IGNORE_INDEX) & (neighbour != IGNORE_INDEX)
        within.append(affinity[known & (centre == neighbour)])
        across.append(affinity[known & (centre != neighbour)])
    within, across = torch.cat(within), torch.cat(across)
    return {"purity": same_weight / max(counted_weight, 1e-12),
            "D_within": within.mean().item(), "D_across": across.mean().item(),
            "D_within_median": within.median().item(), "D_across_median": across.median().item(),
            "pairs_within": within.numel(), "pairs_across": across.numel(),
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data set in Pascal VOC layout")
    parser.add_argument("--limit", type=int, default=60, help="first N images (0: all)")
    parser.add_argument("--model", action="append", default=[],
                        help="affinity CNN weights (RUN/affinity/model.pt); repeatable")
    parser.add_argument("--radius", type=int, default=4, help="neighbour radius on the node grid")
    args = parser.parse_args()
    dataset = VOCDataset(args.data)
    image_ids = dataset.ids[:args.limit] if args.limit else list(dataset.ids)
    backbone = BackboneSettings()
    sources = {"backbone": (FeatureExtractor(backbone, torch.device("cpu")),
                            RadiusGraphBuilder(radius=args.radius))}
    for path in args.model:
        sources[path] = (AffinityEmbedder(load_affinity_network(path, "cpu", backbone)),
                         AffinityGraphBuilder(radius=args.radius))
    for name, (extractor, builder) in sources.items():
        stats = graph_stats(dataset, image_ids, extractor, builder, args.radius,
                            backbone.output_stride)
        print(name, json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Purity and mean neighbour affinity of a data set's graphs, within and across ground-truth classes.

For the ImageNet-feature graph (always) and each learned affinity CNN given with ``--model``, over
the first ``--limit`` images: *purity* is the share of edge weight (self loops excluded) that joins
nodes of the same ground-truth class (void cells left out); *D within / across* is the mean
edge weight E_ij (the affinity ``exp(-||f_i - f_j||_1 / d)`` of docs/method.md §4, or its
calibrated form) between grid neighbours within the radius
of the same / different classes, with medians; *attention self / within / across* is how the
edge term of the A²GNN's attention, softmax over a node's neighbours of β·E_ij (docs/method.md §6,
eq. 3.18; self loop E = 1), shares out a node's weight: to itself, to neighbours of its class,
to neighbours of another class (the rest goes to void neighbours). ``--calibrate`` adds the
ImageNet-feature graph with ``graph.calibrate`` (§5). Prints one JSON line per graph source::

    python scripts/graph_stats.py --data ../shared/data/msrc-objects --limit 60 \\
        --model RUN/affinity/model.pt --calibrate
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from graphwsss.data.voc import VOCDataset
from graphwsss.graphs import AffinityGraphBuilder, RadiusGraphBuilder
from graphwsss.graphs.grid import shift
from graphwsss.metrics.graph import node_ground_truth, purity_weights
from graphwsss.seeds.grid import grid_seeds
from graphwsss.settings import BackboneSettings
from graphwsss.stages.affinity import AffinityEmbedder, load_affinity_network
from graphwsss.stages.features import FeatureExtractor

IGNORE_INDEX = 255


def attention_shares(weight: torch.Tensor, is_self: torch.Tensor, same: torch.Tensor,
                     other: torch.Tensor, node: torch.Tensor, beta: float) -> list[float]:
    """Mean over the non-void nodes of the weight softmax(beta * E) over a node's window
    (``weight`` ``[O, h, w]``) gives to the node itself, to neighbours of its ground-truth class
    (``same``) and to neighbours of another class (``other``, both ``[O, h, w]``)."""
    attention = torch.softmax(torch.where(weight > 0, beta * weight, float("-inf")), dim=0)
    return [attention[is_self].sum(0)[node].mean().item(),
            (attention * same).sum(0)[node].mean().item(),
            (attention * other).sum(0)[node].mean().item()]


def graph_stats(dataset: VOCDataset, image_ids: list[str], extractor, builder,
                stride: int, beta: float = 10.0) -> dict:
    """Purity and within / across-class affinity of the graphs ``builder`` makes from
    ``extractor``'s features (see the module docstring)."""
    same_weight = counted_weight = 0.0
    within, across = [], []
    shares = []
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
        weight, offsets = graph.grid_weight, graph.offsets   # the graph's E [O, h, w], self loop in
        is_self = (offsets == 0).all(dim=1)
        neighbour = torch.stack([shift(truth, int(dy), int(dx), fill=IGNORE_INDEX)
                                 for dy, dx in offsets.tolist()])            # [O, h, w]
        centre = truth.unsqueeze(0).expand_as(neighbour)
        known = (centre != IGNORE_INDEX) & (neighbour != IGNORE_INDEX) & ~is_self.view(-1, 1, 1)
        same, other = known & (centre == neighbour), known & (centre != neighbour)
        within.append(weight[same])
        across.append(weight[other])
        shares.append(attention_shares(weight, is_self, same, other, truth != IGNORE_INDEX, beta))
    within, across = torch.cat(within), torch.cat(across)
    self_share, within_share, across_share = np.mean(shares, axis=0).tolist()
    return {"purity": same_weight / max(counted_weight, 1e-12),
            "attention_self": self_share, "attention_within": within_share,
            "attention_across": across_share,
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
    parser.add_argument("--beta", type=float, default=10.0, help="β of the attention shares")
    parser.add_argument("--calibrate", action="store_true",
                        help="also the ImageNet-feature graph with graph.calibrate")
    args = parser.parse_args()
    dataset = VOCDataset(args.data)
    image_ids = dataset.ids[:args.limit] if args.limit else list(dataset.ids)
    backbone = BackboneSettings()
    sources = {"backbone": (FeatureExtractor(backbone, torch.device("cpu")),
                            RadiusGraphBuilder(radius=args.radius))}
    if args.calibrate:
        sources["backbone, calibrated"] = (sources["backbone"][0],
                                           RadiusGraphBuilder(radius=args.radius, calibrate=True))
    for path in args.model:
        sources[path] = (AffinityEmbedder(load_affinity_network(path, "cpu", backbone)),
                         AffinityGraphBuilder(radius=args.radius))
    for name, (extractor, builder) in sources.items():
        stats = graph_stats(dataset, image_ids, extractor, builder, backbone.output_stride,
                            args.beta)
        print(name, json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()

"""Evaluation metrics of method §8, accumulated over a dataset and mergeable across processes.

- :class:`ConfusionMatrix`: per-class IoU, mIoU and pixel accuracy.
- :class:`ContourFScore`: DAVIS boundary precision / recall / F per class.
- :class:`SeedQuality`: precision and coverage of a sparse seed map;
  :class:`SingleClassImages`: images whose labels or seeds hold one class.
- :func:`graph_purity`: share of a graph's edge weight joining nodes of the same class (§5).

The three accumulators take ``[H, W]`` integer ``np.ndarray`` label maps with 255 as void, and ``summary()`` reports
percentages with ``None`` for undefined values (so the result is JSON-serialisable); the graph
metrics take a builder's tensors (``edge_index``, ``edge_attr``, node labels).
"""

from graphwsss.metrics.confusion import ConfusionMatrix
from graphwsss.metrics.contour import ContourFScore, boundary_map, tolerance_radius
from graphwsss.metrics.seeds import SeedQuality, SingleClassImages, seed_classes
from graphwsss.metrics.graph import graph_purity, node_ground_truth, node_purity, purity_weights

__all__ = ["ConfusionMatrix", "ContourFScore", "SeedQuality", "SingleClassImages",
           "seed_classes", "boundary_map", "tolerance_radius",
           "graph_purity", "node_ground_truth", "node_purity", "purity_weights"]

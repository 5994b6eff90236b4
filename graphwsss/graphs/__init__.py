"""Pixel-graph builders: image (+ stride-8 node features) in, PyG ``Data`` out (docs/method.md §5).

Registered builders (``build_graph_builder(name, **options)``):

============  ========================================  =========================================
name          class                                     edge weight
============  ========================================  =========================================
``backbone``  :class:`~.radius.RadiusGraphBuilder`      ``exp(-|F_i - F_j|_1 / d)`` on backbone
                                                        features (or ``embedding`` if given)
``affinity``  :class:`~.radius.AffinityGraphBuilder`    the same on the learned affinity
                                                        embedding ``F_A`` (required) (3.8, 3.14)
``rgbxy``     :class:`~.rgbxy.RGBXYGraphBuilder`        RGB-XY Gaussian kernel (3.12)
============  ========================================  =========================================

and two graphs that are not windows on the grid:

==============  ==============================================  ====================================
name            class                                           nodes, edges and edge weight
==============  ==============================================  ====================================
``superpixel``  :class:`~.superpixel.SuperpixelGraphBuilder`    superpixels (SLIC / Felzenszwalb),
                                                                adjacent pairs, colour Gaussian of
                                                                the region means (or region-feature
                                                                L1 affinity)
``knn``         :class:`~.knn.KNNGraphBuilder`                  grid cells, k nearest in feature
                                                                space, ``exp(-|F_i - F_j|_1 / d)``
==============  ==============================================  ====================================

The first three are radius graphs on the node grid (window ``radius_offsets(r, shape)``, edges
kept where the weight exceeds ``threshold``, self loops of weight 1) and carry ``offsets`` and
``grid_weight`` besides the common fields (see :mod:`graphwsss.graphs.base`). ``superpixel`` and
``knn`` are not window graphs (no ``offsets`` / ``grid_weight``); ``superpixel`` nodes are not
the grid cells, so its graphs carry ``cell_node`` (see :func:`cell_node_index`). Builders
register themselves with ``@register_builder("name")``; their modules are imported here so that
they are registered.
"""

from graphwsss.graphs.base import (IGNORE_INDEX, GraphBuilder, available_builders,
                                   build_graph_builder, cell_node_index, check_build_inputs, downsample_image,
                                   edge_weights, grid_node_features, grid_positions, make_graph_data,
                                   node_seed_labels, normalize_node_features, register_builder)
from graphwsss.graphs.grid import (edges_to_grid, grid_to_edges, neighbor_valid, pairwise_grid,
                                   radius_offsets, shift)
from graphwsss.graphs.radius import (AffinityGraphBuilder, RadiusGraphBuilder,
                                     affinity_from_embedding, calibrated_affinity,
                                     embedding_distance,
                                     radius_graph_data, threshold_edges)
from graphwsss.graphs.rgbxy import RGBXYGraphBuilder, rgbxy_kernel
from graphwsss.graphs.superpixel import (SuperpixelGraphBuilder, cell_centre_pixels,
                                         majority_cell_labels, region_adjacency,
                                         superpixel_labels)
from graphwsss.graphs.knn import KNNGraphBuilder, knn_edges

__all__ = [
    "IGNORE_INDEX", "GraphBuilder", "available_builders", "build_graph_builder", "cell_node_index",
    "check_build_inputs", "downsample_image", "edge_weights", "grid_node_features", "grid_positions",
    "make_graph_data", "node_seed_labels", "normalize_node_features", "register_builder",
    "edges_to_grid", "grid_to_edges", "neighbor_valid", "pairwise_grid", "radius_offsets", "shift",
    "AffinityGraphBuilder", "RadiusGraphBuilder", "affinity_from_embedding", "calibrated_affinity",
    "embedding_distance",
    "radius_graph_data", "threshold_edges", "RGBXYGraphBuilder", "rgbxy_kernel",
    "SuperpixelGraphBuilder", "cell_centre_pixels", "majority_cell_labels", "region_adjacency",
    "superpixel_labels", "KNNGraphBuilder", "knn_edges",
]

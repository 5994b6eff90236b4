"""The graph-builder interface, its registry and the node-side helpers shared by builders.

Every builder turns one image (and its stride-8 node features) into a PyG ``Data`` with the same
fields (docs/method.md §1, §5), so builders can be swapped and benchmarked:

===============  ================  ====================================================
field            shape             meaning
===============  ================  ====================================================
``x``            ``[N, C]``        node features, L1-normalised per node (3.15)
``edge_index``   ``[2, E]`` long   ``[source j, target i]`` (PyG: ``i`` aggregates)
``edge_attr``    ``[E]`` float     edge weight ``E_ij`` (self loops included)
``y``            ``[N]`` long      seed label per node, 255 = unlabeled
``pos``          ``[N, 2]`` float  ``(row, col)`` of the node on the grid
``grid_shape``   ``(h, w)``        plain tuple
``offsets``      ``[O, 2]`` long   grid radius graphs only: the window ``(dy, dx)``
``grid_weight``  ``[O, h, w]``     grid radius graphs only: the edges in grid form
``cell_node``    ``[h * w]`` long  graphs whose nodes are not the grid cells (superpixel
                                   graphs): the node of each cell ``row * w + col``
===============  ================  ====================================================

The grid ``(h, w)`` is always the stride-8 node grid of the image: ``y`` and ``pos`` describe
nodes, and :func:`cell_node_index` maps every grid cell to the node that predicts it (the
identity when ``cell_node`` is absent), so propagators and losses can work on any builder's
graph and still return ``[K, h, w]`` maps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, TypeVar

import torch
from torch import Tensor
from torch_geometric.data import Data

from graphwsss.graphs.grid import downsample_image  # noqa: F401  (re-exported)
from graphwsss.utils.shapes import check_shape, describe

IGNORE_INDEX = 255

_BUILDERS: dict[str, type["GraphBuilder"]] = {}
BuilderType = TypeVar("BuilderType", bound=type["GraphBuilder"])


class GraphBuilder(ABC):
    """Build the pixel graph of one image (docs/method.md §5).

    Subclasses set ``name`` (done by :func:`register_builder`) and implement :meth:`build`.
    Builders hold options only, no state, so one instance can build any number of graphs.
    """

    name: str = "abstract"

    @abstractmethod
    def build(self, image: Tensor, features: Tensor, seed_labels: Tensor | None = None,
              embedding: Tensor | None = None) -> Data:
        """Build the graph.

        Args:
            image: ``[3, H, W]`` float in ``[0, 1]``.
            features: ``[C, h, w]`` node features at stride 8 (post-ReLU, non-negative).
            seed_labels: ``[h, w]`` long seeds on the node grid (255 = unlabeled), or ``None``.
            embedding: ``[D, h, w]`` affinity embedding on the node grid, or ``None``.

        Returns:
            ``Data`` with the fields listed in :mod:`graphwsss.graphs.base`, on the device of
            ``features``.
        """

    def __call__(self, image: Tensor, features: Tensor, seed_labels: Tensor | None = None,
                 embedding: Tensor | None = None) -> Data:
        return self.build(image, features, seed_labels=seed_labels, embedding=embedding)

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({options})"


def register_builder(name: str) -> Callable[[BuilderType], BuilderType]:
    """Class decorator: register a :class:`GraphBuilder` under ``name`` and set its ``name``."""

    def decorator(cls: BuilderType) -> BuilderType:
        if not (isinstance(cls, type) and issubclass(cls, GraphBuilder)):
            raise TypeError(f"register_builder({name!r}) expects a GraphBuilder subclass, "
                            f"got {cls!r}")
        if name in _BUILDERS and _BUILDERS[name] is not cls:
            raise ValueError(f"graph builder {name!r} is already registered "
                             f"({_BUILDERS[name].__qualname__})")
        cls.name = name
        _BUILDERS[name] = cls
        return cls

    return decorator


def available_builders() -> list[str]:
    """Names of the registered builders, sorted."""
    return sorted(_BUILDERS)


def build_graph_builder(name: str, **options) -> GraphBuilder:
    """Instantiate the builder registered under ``name`` with keyword ``options``."""
    if name not in _BUILDERS:
        known = ", ".join(available_builders())
        raise ValueError(f"unknown graph builder {name!r}; known: {known}")
    return _BUILDERS[name](**options)


def check_build_inputs(image: Tensor, features: Tensor, seed_labels: Tensor | None = None,
                       embedding: Tensor | None = None) -> tuple[int, int]:
    """Validate the arguments of :meth:`GraphBuilder.build`; return the grid size ``(h, w)``."""
    check_shape("image", image, "[3, H, W]", shape=(3, None, None), dtype="float",
                what="tensor in [0, 1]")
    check_shape("features", features, "[C, h, w]", dims=3, dtype="float")
    h, w = features.shape[-2:]
    if seed_labels is not None:
        check_shape("seed_labels", seed_labels, f"[h, w] = [{h}, {w}]", shape=(h, w),
                    what="tensor like features")
    if embedding is not None:
        check_shape("embedding", embedding, f"[D, h, w] = [D, {h}, {w}]", shape=(None, h, w),
                    what="tensor like features")
    return int(h), int(w)


def normalize_node_features(x: Tensor, eps: float = 1e-12) -> Tensor:
    r"""L1-normalise each node's feature vector, :math:`x_i / \lVert x_i \rVert_1` (3.15).

    For the post-ReLU (non-negative) features of docs/method.md §5 this is ``x_i / sum(x_i)``; an
    all-zero row stays zero (the denominator is clamped to ``eps``).

    Args:
        x: ``[N, C]``.

    Returns:
        ``[N, C]``.
    """
    check_shape("x", x, "[N, C]", dims=2)
    return x / x.abs().sum(dim=1, keepdim=True).clamp_min(eps)


def grid_node_features(features: Tensor, eps: float = 1e-12) -> Tensor:
    """``[C, h, w]`` grid features to ``[N, C]`` L1-normalised node features (3.15)."""
    check_shape("features", features, "[C, h, w]", dims=3)
    return normalize_node_features(features.flatten(1).t(), eps=eps)


def grid_positions(h: int, w: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """``[N, 2]`` ``(row, col)`` of each node ``n = row * w + col``."""
    rows, cols = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                                torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)


def node_seed_labels(seed_labels: Tensor | None, num_nodes: int,
                     device: torch.device | str | None = None) -> Tensor:
    """``[N]`` long seeds from grid seeds (any shape with ``N`` elements), all 255 if ``None``."""
    if seed_labels is None:
        return torch.full((num_nodes,), IGNORE_INDEX, dtype=torch.long, device=device)
    if seed_labels.numel() != num_nodes:
        raise ValueError(f"seed_labels has {seed_labels.numel()} entries for {num_nodes} nodes")
    if seed_labels.is_floating_point():
        raise ValueError(f"seed_labels must be an integer tensor, got {describe(seed_labels)}")
    return seed_labels.reshape(-1).to(device=device, dtype=torch.long)


def make_graph_data(features: Tensor, edge_index: Tensor, edge_weight: Tensor,
                    seed_labels: Tensor | None = None, **extra) -> Data:
    """Assemble the ``Data`` of a graph whose nodes are the cells of the feature grid.

    Args:
        features: ``[C, h, w]`` node features (L1-normalised here, 3.15).
        edge_index: ``[2, E]``.
        edge_weight: ``[E]``.
        seed_labels: ``[h, w]`` or ``None``.
        **extra: further attributes (e.g. ``offsets``, ``grid_weight``).
    """
    h, w = features.shape[-2:]
    device = features.device
    data = Data(x=grid_node_features(features), edge_index=edge_index, edge_attr=edge_weight,
                y=node_seed_labels(seed_labels, h * w, device),
                pos=grid_positions(h, w, device), **extra)
    data.grid_shape = (int(h), int(w))
    return data


def edge_weights(data: Data) -> Tensor:
    """``[E]`` edge weights of a graph (``edge_attr``, ``[E]`` or ``[E, 1]``; 1 for every edge of
    a graph without it)."""
    num_edges = data.edge_index.shape[1]
    if data.edge_attr is None:
        return torch.ones(num_edges, device=data.edge_index.device)
    if data.edge_attr.numel() != num_edges:
        raise ValueError(f"edge_attr must hold one weight per edge ([E] or [E, 1], E = "
                         f"{num_edges}), got shape {tuple(data.edge_attr.shape)}")
    return data.edge_attr.reshape(-1)


def cell_node_index(data: Data) -> Tensor:
    """``[h * w]`` long: the node that predicts each grid cell (identity for cell graphs)."""
    h, w = data.grid_shape
    cell_node = getattr(data, "cell_node", None)
    if cell_node is None:
        if data.num_nodes != h * w:
            raise ValueError(f"graph has {data.num_nodes} nodes for a {h}x{w} grid and no "
                             "cell_node mapping")
        return torch.arange(h * w, device=data.x.device)
    check_shape("cell_node", cell_node, f"[h * w] = [{h * w}]", shape=(h * w,))
    return cell_node

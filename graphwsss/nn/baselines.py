r"""Baseline propagators with the A²GNN's batched interface, and the factory of all propagators.

Every propagator built by :func:`build_propagator` trains ``B`` independent per-image models and
shares :meth:`graphwsss.nn.a2gnn.A2GNN.forward`'s signature and outputs ``(logits [B, Nmax, K],
hidden [B, Nmax, hidden])``, for the grid and the edge layouts alike, so that the propagation
stage and the benchmarks can swap them by name:

==========  =================================================================================
name        per image
==========  =================================================================================
``a2gnn``   :class:`~graphwsss.nn.a2gnn.A2GNN` (3.16–3.19)
``gcn``     embedding, ``L`` :class:`~torch_geometric.nn.GCNConv` (edge weights used, ReLU
            between layers), output layer
``gat``     embedding, ``L`` :class:`~torch_geometric.nn.GATConv` (``heads`` heads concatenated,
            edge weight as a 1-d edge feature, ReLU between layers), output layer
``agnn``    embedding, ``L`` :class:`~torch_geometric.nn.AGNNConv` (no edge weights, no
            nonlinearity, as the A²GNN), output layer
``none``    embedding and output layer only: a per-node seed classifier, no propagation
==========  =================================================================================

The embedding is :math:`H^1 = \operatorname{dropout}(\operatorname{ReLU}(X W^0))` and the output
:math:`H^{L+1} W^{L+1}`, both without bias, as in the A²GNN. The baselines hold one small model
per image (an ``nn.ModuleList``) and loop over the images; each model is initialised under a
seed drawn from its image's generator and draws its dropout masks from it, so a batch and each
image alone give the same results.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import AGNNConv, GATConv, GCNConv

from graphwsss.graphs.grid import grid_to_edges
from graphwsss.nn.a2gnn import (A2GNN, BatchedDropout, check_propagator_inputs, grid_nodes,
                                grid_sizes, node_counts)

PROPAGATORS = ("a2gnn", "gcn", "gat", "agnn", "none")
BASELINES = ("gcn", "gat", "agnn", "none")


class _ImageModel(nn.Module):
    """One image's baseline: embedding, ``num_layers`` PyG layers, output layer."""

    def __init__(self, kind: str, in_channels: int, num_classes: int, hidden: int,
                 num_layers: int, heads: int) -> None:
        super().__init__()
        self.kind = kind
        self.embedding = nn.Linear(in_channels, hidden, bias=False)
        if kind == "gcn":
            layers = [GCNConv(hidden, hidden, bias=False) for _ in range(num_layers)]
        elif kind == "gat":
            if hidden % heads:
                raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
            layers = [GATConv(hidden, hidden // heads, heads=heads, edge_dim=1, bias=False)
                      for _ in range(num_layers)]
        elif kind == "agnn":
            layers = [AGNNConv(requires_grad=True) for _ in range(num_layers)]
        else:
            layers = []
        self.layers = nn.ModuleList(layers)
        self.output = nn.Linear(hidden, num_classes, bias=False)

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor,
                dropout_mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        h = F.relu(self.embedding(x))
        if dropout_mask is not None:
            h = h * dropout_mask
        for index, layer in enumerate(self.layers):
            if self.kind == "gcn":
                h = layer(h, edge_index, edge_weight)
            elif self.kind == "gat":
                h = layer(h, edge_index, edge_weight.unsqueeze(-1))
            else:
                h = layer(h, edge_index)
            if self.kind in ("gcn", "gat") and index < len(self.layers) - 1:
                h = F.relu(h)
        return self.output(h), h


def seed_from(generator: Optional[torch.Generator]) -> Optional[int]:
    """A seed drawn from ``generator`` (``None`` without one)."""
    if generator is None:
        return None
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


class BatchedBaseline(nn.Module):
    """``num_images`` independent baseline models (see the module table) behind the batched
    :class:`~graphwsss.nn.a2gnn.A2GNN` interface.

    Args:
        kind: ``"gcn"``, ``"gat"``, ``"agnn"`` or ``"none"``.
        in_channels: node feature size ``F``.
        num_classes: ``K``.
        num_images: ``B``.
        hidden: hidden width. (default: 256)
        num_layers: propagation layers (ignored by ``"none"``). (default: 3)
        dropout: drop probability after the embedding. (default: 0.5)
        heads: attention heads of ``"gat"``. (default: 4)
        generators: one ``torch.Generator`` per image, or ``None``.

    Shapes: as :class:`~graphwsss.nn.a2gnn.A2GNN`.
    """

    def __init__(self, kind: str, in_channels: int, num_classes: int, num_images: int,
                 hidden: int = 256, num_layers: int = 3, dropout: float = 0.5, heads: int = 4,
                 generators: Optional[Sequence[torch.Generator]] = None) -> None:
        super().__init__()
        if kind not in BASELINES:
            raise ValueError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")
        if generators is not None and len(generators) != num_images:
            raise ValueError(f"need one generator per image ({num_images}), got {len(generators)}")
        self.kind, self.in_channels, self.num_classes = kind, in_channels, num_classes
        self.num_images, self.hidden = num_images, hidden
        self.generators = list(generators) if generators is not None else None
        self.dropout = BatchedDropout(dropout, self.generators)
        models = []
        for index in range(num_images):
            seed = seed_from(self.generators[index] if self.generators is not None else None)
            with torch.random.fork_rng(devices=[]):
                if seed is not None:
                    torch.manual_seed(seed)
                models.append(_ImageModel(kind, in_channels, num_classes, hidden, num_layers, heads))
        self.models = nn.ModuleList(models)

    def forward(self, x: Tensor, edge_index: Optional[Tensor] = None,
                edge_weight: Optional[Tensor] = None, node_mask: Optional[Tensor] = None, *,
                grid_weight: Optional[Tensor] = None,
                offsets: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Logits ``[B, Nmax, K]`` and last hidden features ``[B, Nmax, hidden]``."""
        node_mask = check_propagator_inputs(x, edge_index, edge_weight, node_mask, grid_weight,
                                            offsets, self.num_images, self.in_channels)
        batch = x.shape[0]
        nodes = grid_nodes(x) if x.ndim == 4 else x
        logits = nodes.new_zeros(batch, nodes.shape[1], self.num_classes)
        hidden = nodes.new_zeros(batch, nodes.shape[1], self.hidden)
        if x.ndim == 4:
            width = x.shape[-1]
            for index, (h_b, w_b) in enumerate(grid_sizes(node_mask)):
                image_edges, image_weight = grid_to_edges(grid_weight[index, :, :h_b, :w_b],
                                                          offsets)
                image_nodes = x[index, :, :h_b, :w_b].flatten(1).t()
                mask = self._dropout_mask(index, (h_b, w_b, self.hidden), image_nodes)
                out, last = self.models[index](image_nodes, image_edges, image_weight, mask)
                rows = (torch.arange(h_b, device=x.device).unsqueeze(1) * width
                        + torch.arange(w_b, device=x.device)).reshape(-1)
                logits[index, rows], hidden[index, rows] = out, last
        else:
            num_nodes = x.shape[1]
            if edge_weight is None:
                edge_weight = torch.ones(edge_index.shape[1], device=x.device)
            image_of_edge = torch.div(edge_index[1], num_nodes, rounding_mode="floor")
            for index, count in enumerate(node_counts(node_mask)):
                local = edge_index[:, image_of_edge == index] - index * num_nodes
                keep = (local < count).all(dim=0)
                image_nodes = x[index, :count]
                mask = self._dropout_mask(index, (count, self.hidden), image_nodes)
                out, last = self.models[index](image_nodes, local[:, keep],
                                               edge_weight[image_of_edge == index][keep], mask)
                logits[index, :count], hidden[index, :count] = out, last
        return logits, hidden

    def _dropout_mask(self, index: int, shape: tuple[int, ...], like: Tensor) -> Optional[Tensor]:
        if not self.training or self.dropout.p == 0.0:
            return None
        return self.dropout.mask(index, shape, like).reshape(-1, self.hidden)

    def extra_repr(self) -> str:
        return (f"{self.kind!r}, {self.in_channels}, {self.num_classes}, "
                f"num_images={self.num_images}, hidden={self.hidden}")


def build_propagator(name: str, in_channels: int, num_classes: int, num_images: int,
                     generators: Optional[Sequence[torch.Generator]] = None,
                     **options) -> nn.Module:
    """Build a batched propagator by name (one of :data:`PROPAGATORS`).

    Args:
        name: ``"a2gnn"``, ``"gcn"``, ``"gat"``, ``"agnn"`` or ``"none"``.
        in_channels, num_classes, num_images: as :class:`~graphwsss.nn.a2gnn.A2GNN`.
        generators: one ``torch.Generator`` per image, or ``None``.
        **options: keyword options of :class:`~graphwsss.nn.a2gnn.A2GNN` (``hidden``,
            ``num_layers``, ``dropout``, ``beta``, ``form``) or of :class:`BatchedBaseline`
            (``hidden``, ``num_layers``, ``dropout``, ``heads``).
    """
    if name == "a2gnn":
        return A2GNN(in_channels, num_classes, num_images, generators=generators, **options)
    if name in BASELINES:
        return BatchedBaseline(name, in_channels, num_classes, num_images, generators=generators,
                               **options)
    raise ValueError(f"unknown propagator {name!r}; known: {', '.join(PROPAGATORS)}")

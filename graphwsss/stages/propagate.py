"""Batched transductive training of a propagator on many images' graphs (DESIGN.md §6).

Each image gets a fresh model; :func:`train_propagator` trains a chunk of images as one batched
problem (parameters with a leading image dimension, per-image losses summed), which gives each
image exactly the optimisation it would get alone: initialisation and dropout come from a
per-image generator seeded by ``(seed, image_id)``, and Adam is element-wise.

Schedule (§6): ``epochs_first`` epochs of L_ce + L_mp (+ consistency checking), then
``epochs_second`` epochs adding λ₁·L_reg (eq. 3.20).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import Data
from tqdm import trange

from graphwsss.data.records import IGNORE_INDEX
from graphwsss.graphs.grid import downsample_image, radius_offsets
from graphwsss.losses import (consistency_check, multi_point_loss, potts_kernel,
                              potts_regularization, seed_cross_entropy, select_multi_points)
from graphwsss.nn import build_propagator
from graphwsss.settings import PropagatorSettings, RunSettings

BYTES_PER_FLOAT = 4


@dataclass
class PropagationItem:
    """One image's propagation problem.

    Attributes:
        graph: a grid radius graph (``x`` ``[N, F]``, ``grid_weight`` ``[O, h, w]``,
            ``offsets``, ``y`` ``[N]`` node seeds, ``grid_shape``), see :mod:`graphwsss.graphs`.
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


def image_generator(seed: int, image_id: str, device: torch.device) -> torch.Generator:
    """A generator seeded by the run seed and the image id, independent of batch composition."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + zlib.crc32(image_id.encode())) % (2**63))
    return generator


def estimate_batch_size(in_channels: int, num_classes: int, grid_nodes: int,
                        settings: RunSettings) -> int:
    """Images per batch that fit ``propagator.memory_budget_gb``.

    Per image: parameters with gradients and two Adam moments, node features, and what every
    layer keeps for the backward pass: about 16 node-by-hidden tensors and 12 per-edge scalars
    per layer (calibrated on the CPU: 2,501-node GrabCut graphs peak at ~130 MB per image).
    """
    prop = settings.propagator
    edges = grid_nodes * len(radius_offsets(settings.graph.radius, settings.graph.shape))
    parameters = 4 * (in_channels + num_classes) * prop.hidden
    activations = (grid_nodes * (2 * in_channels + 16 * prop.hidden * prop.layers)
                   + 12 * edges * prop.layers)
    per_image = BYTES_PER_FLOAT * (parameters + activations)
    return int(max(1, prop.memory_budget_gb * 2**30 // per_image))


@dataclass
class BatchedGraphs:
    """A chunk of images' graphs in a propagator's padded input layout (see
    :mod:`graphwsss.nn.a2gnn`): ``"grid"`` puts image ``b`` in the top-left corner of a common
    ``Hmax x Wmax`` grid (node ``row * Wmax + col``); ``"edges"`` puts its ``h * w`` nodes first
    (node ``row * w + col``) in a block-diagonal edge list. Same math, different kernels."""

    inputs: dict
    layout: str
    grid_shapes: list[tuple[int, int]]

    def crop(self, values: Tensor, index: int) -> Tensor:
        """Image ``index``'s rows of ``values`` ``[B, Nmax, C]`` as ``[C, h, w]``."""
        h, w = self.grid_shapes[index]
        rows = values[index]
        if self.layout == "grid":
            return rows.view(-1, self.inputs["x"].shape[-1], rows.shape[-1])[:h, :w].permute(2, 0, 1)
        return rows[:h * w].view(h, w, rows.shape[-1]).permute(2, 0, 1)


def stack_graphs(items: list[PropagationItem], layout: str, device: torch.device) -> BatchedGraphs:
    """Pad and stack the images' grid radius graphs in ``layout`` (``"grid"`` or ``"edges"``)."""
    for item in items:
        if getattr(item.graph, "grid_weight", None) is None:
            raise ValueError(f"{item.image_id}: the propagation stage needs a grid radius graph "
                             "(builders backbone, rgbxy)")
    shapes = [item.grid_shape for item in items]
    batch, channels = len(items), items[0].graph.x.shape[1]
    if layout == "grid":
        height, width = max(h for h, _ in shapes), max(w for _, w in shapes)
        offsets = items[0].graph.offsets.to(device)
        x = torch.zeros(batch, channels, height, width, device=device)
        grid_weight = torch.zeros(batch, offsets.shape[0], height, width, device=device)
        node_mask = torch.zeros(batch, height, width, dtype=torch.bool, device=device)
        for index, (item, (h, w)) in enumerate(zip(items, shapes)):
            if not torch.equal(item.graph.offsets.to(device), offsets):
                raise ValueError("all graphs of a batch must share the same window offsets")
            x[index, :, :h, :w] = item.graph.x.to(device).T.reshape(channels, h, w)
            grid_weight[index, :, :h, :w] = item.graph.grid_weight.to(device)
            node_mask[index, :h, :w] = True
        inputs = {"x": x, "grid_weight": grid_weight, "offsets": offsets, "node_mask": node_mask}
    else:
        num_nodes = max(h * w for h, w in shapes)
        x = torch.zeros(batch, num_nodes, channels, device=device)
        node_mask = torch.zeros(batch, num_nodes, dtype=torch.bool, device=device)
        for index, (item, (h, w)) in enumerate(zip(items, shapes)):
            x[index, :h * w] = item.graph.x.to(device)
            node_mask[index, :h * w] = True
        inputs = {"x": x, "node_mask": node_mask,
                  "edge_index": torch.cat([item.graph.edge_index.to(device) + index * num_nodes
                                           for index, item in enumerate(items)], dim=1),
                  "edge_weight": torch.cat([item.graph.edge_attr.to(device) for item in items])}
    return BatchedGraphs(inputs, layout, shapes)


def _padded_pixel_seeds(item: PropagationItem) -> Tensor:
    """Pixel seeds padded with 255 to the grid's extent ``(h * stride, w * stride)``."""
    h, w = item.grid_shape
    padded = torch.full((h * item.stride, w * item.stride), IGNORE_INDEX, dtype=torch.long,
                        device=item.pixel_seeds.device)
    height, width = item.pixel_seeds.shape
    padded[:height, :width] = item.pixel_seeds
    return padded


def train_propagator(items: list[PropagationItem], settings: PropagatorSettings, num_classes: int,
                     device: torch.device, seed: int = 0, show_progress: bool = False) -> list[Tensor]:
    """Train one model per image (batched) and return each image's probabilities ``[K, h, w]``."""
    batched = stack_graphs(items, settings.layout, device)
    in_channels = items[0].graph.x.shape[1]
    generators = [image_generator(seed, item.image_id, device) for item in items]
    options = {"hidden": settings.hidden, "num_layers": settings.layers, "dropout": settings.dropout}
    if settings.name == "a2gnn":
        options.update(beta=settings.beta, form=settings.form)
    model = build_propagator(settings.name, in_channels, num_classes, len(items), generators,
                             **options).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr,
                                 weight_decay=settings.weight_decay)
    node_seeds = [item.graph.y.to(device).view(item.grid_shape) for item in items]
    pixel_seeds = [_padded_pixel_seeds(item) for item in items] if settings.ce_on_image else None
    kernels = [potts_kernel(downsample_image(item.image.to(device), *item.grid_shape),
                            radius=settings.reg_radius) for item in items]
    use_boxes = settings.multi_point or settings.consistency
    model.train()
    epochs = trange(settings.epochs_first + settings.epochs_second, leave=False,
                    desc=f"{settings.name} x {len(items)} images", disable=not show_progress)
    for epoch in epochs:
        logits, hidden = model(**batched.inputs)
        total = logits.new_zeros(())
        for index, item in enumerate(items):
            image_logits = batched.crop(logits, index)
            if settings.ce_on_image:
                total = total + seed_cross_entropy(image_logits, pixel_seeds[index],
                                                   image_size=tuple(pixel_seeds[index].shape))
            else:
                total = total + seed_cross_entropy(image_logits, node_seeds[index])
            if use_boxes and item.boxes.numel():
                image_hidden = batched.crop(hidden, index)
                probs = torch.softmax(image_logits.detach(), dim=0)
                selected = select_multi_points(probs, item.boxes, item.box_classes)
                if settings.multi_point:
                    total = total + multi_point_loss(image_logits, image_hidden, item.boxes,
                                                     item.box_classes, selected)
                if settings.consistency:
                    _check_consistency(index, item, image_hidden, selected, node_seeds, pixel_seeds)
            if epoch >= settings.epochs_first and settings.reg_weight > 0:
                total = total + settings.reg_weight * potts_regularization(
                    torch.softmax(image_logits, dim=0), kernel=kernels[index])
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits, _ = model(**batched.inputs)
    return [torch.softmax(batched.crop(logits, index), dim=0)
            for index, item in enumerate(items)]


def _check_consistency(index: int, item: PropagationItem, hidden: Tensor, selected: list[Tensor],
                       node_seeds: list[Tensor], pixel_seeds: list[Tensor] | None) -> None:
    """Consistency checking (eqs. 3.27–3.28); removals persist, at node and pixel level."""
    kept = consistency_check(hidden.detach(), node_seeds[index], item.boxes, item.box_classes,
                             selected)
    removed = (kept == IGNORE_INDEX) & (node_seeds[index] != IGNORE_INDEX)
    node_seeds[index] = kept
    if pixel_seeds is not None and bool(removed.any()):
        cells = removed.repeat_interleave(item.stride, 0).repeat_interleave(item.stride, 1)
        # Out of place: the loss of this step saved the old seeds for its backward pass.
        pixel_seeds[index] = pixel_seeds[index].masked_fill(cells, IGNORE_INDEX)

"""The propagation stage (docs/method.md §6): seeds and graphs to node probabilities.

:func:`run` reads ``seeds/<id>.png`` (and, for image tags, ``cams/<id>.npy``), builds each
image's graph (:mod:`graphwsss.stages.graph`), trains the propagator and writes
``probabilities/<id>.npy``: float16 ``[K, h, w]`` on the node grid, ``h = ceil(H / s)``, after
the output walk when it is on and before any class restriction or CRF (those are the refine
stage's). Images with probabilities (or a pseudo label) are skipped.

Batched transductive training of a propagator on many images' graphs:

Each image gets a fresh model; :func:`train_propagator` trains a chunk of images as one batched
problem (parameters with a leading image dimension, per-image losses summed), which gives each
image exactly the optimisation it would get alone: initialisation and dropout come from a
per-image generator seeded by ``(seed, image_id)``, and Adam is element-wise.

Schedule (§6): ``epochs_first`` epochs of L_ce + L_mp (+ consistency checking), then
``epochs_second`` epochs adding λ₁·L_reg (eq. 3.20).

Any graph of :mod:`graphwsss.graphs` works: the propagators predict per *node*, and the losses
work on the stride-8 *grid* ``[K, h, w]``; :meth:`BatchedGraphs.crop` maps one to the other with
:func:`~graphwsss.graphs.base.cell_node_index` (the identity for graphs whose nodes are the grid
cells, a gather for superpixel graphs, through which gradients flow). Grid radius graphs
(``grid_weight``, ``offsets``) can also use the tiled ``"grid"`` layout; other graphs always use
``"edges"`` (a ``"grid"`` request falls back to it, with a log line).

Graph propagators' probabilities are then walked over the graph (:func:`walk_output`,
``propagator.output_walk``). ``propagator.name = "random_walk"`` trains nothing: the seeds are
walked over the graph (:func:`graphwsss.nn.random_walk.random_walk_probabilities`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm, trange

from graphwsss.data.records import IGNORE_INDEX
from graphwsss.graphs.base import cell_node_index, edge_weights
from graphwsss.graphs.grid import downsample_image, radius_offsets
from graphwsss.losses import (consistency_check, multi_point_loss, potts_kernel,
                              potts_regularization, seed_cross_entropy, select_multi_points)
from graphwsss.nn import build_propagator
from graphwsss.nn.random_walk import (random_walk_probabilities, seed_label_probabilities,
                                      step_length)
from graphwsss.settings import PropagatorSettings, RunSettings
from graphwsss.stages.cam import load_image_cams
from graphwsss.stages.graph import (PropagationItem, build_item, make_builder, node_source,
                                    typical_nodes)
from graphwsss.stages.manifest import uses_affinity_network
from graphwsss.stages.paths import RunContext
from graphwsss.utils import get_logger
from graphwsss.utils.io import atomic_path

BYTES_PER_FLOAT = 4
log = get_logger(__name__)


def run(ctx: RunContext, image_ids: list[str], affinity_network=None) -> None:
    """Write ``probabilities/<id>.npy`` for every image in ``image_ids`` that has neither
    probabilities nor a pseudo label, in batches of ``propagator.batch_images`` (0: as many as
    ``propagator.memory_budget_gb`` allows). ``affinity_network``: the affinity stage's CNN
    (``graph.builder=affinity``; else loaded from ``affinity.training.checkpoint`` or the run)."""
    settings, paths = ctx.settings, ctx.paths
    todo = [image_id for image_id in image_ids
            if not (paths.probabilities(image_id).is_file()
                    or paths.pseudo_label(image_id).is_file())]
    log.info("stage propagation: %d images (%d already done), propagator %s on %s graphs, "
             "device %s -> %s", len(todo), len(image_ids) - len(todo),
             settings.propagator.name, settings.graph.builder, ctx.device,
             paths.root / "probabilities")
    if not todo:
        return
    if settings.graph.builder == "affinity" and not uses_affinity_network(settings):
        # propagator.name=none reads no graph, so no affinity CNN was trained for it.
        settings = replace(settings, graph=replace(settings.graph, builder="backbone"))
    source = node_source(settings, ctx.device, paths.affinity, affinity_network)
    builder = make_builder(settings.graph)
    batch_size = settings.propagator.batch_images or estimate_batch_size(
        source.channels, ctx.dataset.num_classes, typical_nodes(ctx.dataset, source.stride),
        settings)
    progress = tqdm(total=len(todo), desc="propagation", disable=not ctx.show_progress,
                    leave=False)
    for start in range(0, len(todo), batch_size):
        samples = [ctx.dataset.load(image_id) for image_id in todo[start:start + batch_size]]
        items = [build_item(sample, paths.seed(sample.image_id), source, builder, ctx.device)
                 for sample in samples]
        probabilities = train_propagator(items, settings.propagator, ctx.dataset.num_classes,
                                         ctx.device, seed=settings.seed,
                                         show_progress=ctx.show_progress)
        for sample, item, probs in zip(samples, items, probabilities):
            probs = walk_output(item, probs, settings.propagator)
            if settings.supervision == "image":
                probs = fuse_random_walk(item, probs, load_image_cams(ctx, sample), settings)
            with atomic_path(paths.probabilities(sample.image_id)) as tmp:
                np.save(tmp, probs.detach().cpu().numpy().astype(np.float16))
        progress.update(len(samples))
    progress.close()


def walk_output(item: PropagationItem, probs: Tensor, settings: PropagatorSettings) -> Tensor:
    r"""The propagator's ``[K, h, w]`` node probabilities :math:`O` walked over the image's own
    graph (``propagator.output_walk``, graph propagators only): :math:`T^t O` with
    :math:`T_{ij} = E_{ij}^{\beta} / \sum_k E_{ik}^{\beta}` (``rw_beta``) and
    :math:`t = 2^{\texttt{output\_walk\_log\_steps}}` exact sparse products. Each node's
    probabilities become an average over the region the graph connects it to, so that decisions
    the network takes node by node agree within a region and change where the affinities drop
    (docs/method.md §6.5). With ``output_walk_box_reach`` the cells of each box stop earlier
    (:func:`box_walk_steps`). Unchanged when off or for ``none`` / ``random_walk``."""
    if not settings.output_walk or settings.name in ("none", "random_walk"):
        return probs                       # no graph, or an output that is a walk already
    steps = None
    if settings.output_walk_box_reach is not None and len(item.boxes):
        steps = box_walk_steps(item, settings.output_walk_box_reach,
                               step_length(item.graph, settings.rw_beta),
                               2 ** settings.output_walk_log_steps)
    return random_walk_probabilities(item.graph, probs, beta=settings.rw_beta,
                                     log_steps=settings.output_walk_log_steps, method="matvec",
                                     cell_steps=steps)


def box_walk_steps(item: PropagationItem, reach: float, sigma: float, steps: int) -> Tensor:
    r"""``[h, w]`` long: how many steps each cell walks in a box run. A walk of :math:`t` steps
    of root-mean-square length :math:`\sigma` cells (:func:`~graphwsss.nn.random_walk.step_length`)
    reaches about :math:`\sigma\sqrt{t}` cells; a box of short side :math:`s` cells walks

    .. math::
        t_b = \min\big(t, \lfloor (\rho\, s / \sigma)^2 \rfloor\big), \qquad
        \rho = \texttt{output\_walk\_box\_reach},

    so that its walk stays inside its object and a small object is not averaged away into the
    background around it. A cell takes the fewest steps of the boxes covering it; cells outside
    every box walk all :math:`t` (they are background after the refine stage)."""
    cell_steps = torch.full(item.grid_shape, steps, dtype=torch.long)
    for x0, y0, x1, y1 in item.boxes.tolist():
        side = min(x1 - x0, y1 - y0)
        box_steps = min(steps, int((reach * side / max(sigma, 1e-6)) ** 2))
        cell_steps[y0:y1, x0:x1].clamp_(max=box_steps)
    return cell_steps


def fuse_random_walk(item: PropagationItem, probs: Tensor, cams: np.ndarray,
                     settings: RunSettings) -> Tensor:
    """Image tags (§2): the propagator's ``[K, h, w]`` probabilities fused with the random walk
    of the CAM scores ``cams`` ``[K - 1, H, W]`` over the same graph, 1 : 3
    (``cam.random_walk_share``)."""
    grid = downsample_image(torch.from_numpy(cams).to(probs.device), *item.grid_shape)
    background = (1 - grid.max(dim=0, keepdim=True).values).clamp_min(0)
    scores = torch.cat([background ** settings.cam.background_power, grid]).clamp_min(1e-5)
    walked = random_walk_probabilities(item.graph, scores / scores.sum(0, keepdim=True),
                                       beta=settings.propagator.rw_beta,
                                       log_steps=settings.propagator.rw_log_steps,
                                       method=settings.propagator.rw_method,
                                       tolerance=settings.propagator.rw_tolerance)
    share = settings.cam.random_walk_share
    return (1 - share) * probs + share * walked


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
    :mod:`graphwsss.nn.batched`): ``"grid"`` puts image ``b`` in the top-left corner of a common
    ``Hmax x Wmax`` grid (node ``row * Wmax + col``); ``"edges"`` puts its ``n_b`` nodes first
    (padded to ``Nmax``) in a block-diagonal edge list. Same math, different kernels.

    Attributes:
        inputs: keyword arguments of the propagator's ``forward``.
        layout: ``"grid"`` or ``"edges"``.
        grid_shapes: ``(h, w)`` of each image's grid.
        cell_nodes: per image, ``[h * w]`` long node of each grid cell, or ``None`` where the
            nodes are the cells in raster order (the first ``h * w`` rows).
    """

    inputs: dict
    layout: str
    grid_shapes: list[tuple[int, int]]
    cell_nodes: list[Optional[Tensor]]

    def crop(self, values: Tensor, index: int) -> Tensor:
        """Image ``index``'s grid map ``[C, h, w]`` from node values ``[B, Nmax, C]``: each cell
        takes its node's row (differentiable)."""
        h, w = self.grid_shapes[index]
        rows = values[index]
        if self.layout == "grid":
            return rows.view(-1, self.inputs["x"].shape[-1], rows.shape[-1])[:h, :w].permute(2, 0, 1)
        return cell_map(rows, h, w, self.cell_nodes[index])

    def input_map(self, items: list[PropagationItem], index: int) -> Tensor:
        """Image ``index``'s node input features ``[C, h, w]`` (``items[index].graph.x``)."""
        h, w = self.grid_shapes[index]
        rows = items[index].graph.x.to(self.inputs["x"].device)
        return cell_map(rows, h, w, self.cell_nodes[index])


def cell_map(rows: Tensor, h: int, w: int, cell_node: Optional[Tensor]) -> Tensor:
    """Grid map ``[C, h, w]`` from one image's node rows ``[N, C]``: each cell takes its node's
    row (``cell_node`` ``[h * w]``, or ``None`` where the nodes are the cells in raster order)."""
    cells = rows[:h * w] if cell_node is None else rows.index_select(0, cell_node)
    return cells.view(h, w, rows.shape[-1]).permute(2, 0, 1)


def stack_graphs(items: list[PropagationItem], layout: str, device: torch.device) -> BatchedGraphs:
    """Pad and stack the images' graphs in ``layout`` (``"grid"`` or ``"edges"``).

    ``"edges"`` takes any graph. ``"grid"`` needs grid radius graphs (``grid_weight``,
    ``offsets``, nodes = grid cells) sharing one window; for any other graph it falls back to
    ``"edges"`` (logged), which computes the same thing.
    """
    if layout not in ("grid", "edges"):
        raise ValueError(f"layout must be 'grid' or 'edges', got {layout!r}")
    if not items:
        raise ValueError("stack_graphs needs at least one item")
    for item in items:
        if item.graph.x is None or item.graph.edge_index is None:
            raise ValueError(f"{item.image_id}: the graph needs node features x and edge_index")
    if layout == "grid" and not all(item.is_grid_graph for item in items):
        others = [item.image_id for item in items if not item.is_grid_graph]
        log.info("layout 'grid' needs grid radius graphs (grid_weight, offsets); %d of %d graphs "
                 "(e.g. %s) are not: using layout 'edges'", len(others), len(items), others[0])
        layout = "edges"
    shapes = [item.grid_shape for item in items]
    batch, channels = len(items), items[0].graph.x.shape[1]
    cell_nodes = [None if getattr(item.graph, "cell_node", None) is None
                  else cell_node_index(item.graph).to(device) for item in items]
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
        return BatchedGraphs(inputs, layout, shapes, cell_nodes)
    counts = [item.graph.num_nodes for item in items]
    num_nodes = max(counts)
    x = torch.zeros(batch, num_nodes, channels, device=device)
    node_mask = torch.zeros(batch, num_nodes, dtype=torch.bool, device=device)
    edge_index, edge_weight = [], []
    for index, (item, count) in enumerate(zip(items, counts)):
        x[index, :count] = item.graph.x.to(device)
        node_mask[index, :count] = True
        edge_index.append(item.graph.edge_index.to(device) + index * num_nodes)
        edge_weight.append(_edge_weight(item))
    inputs = {"x": x, "node_mask": node_mask, "edge_index": torch.cat(edge_index, dim=1),
              "edge_weight": torch.cat(edge_weight).to(device)}
    return BatchedGraphs(inputs, layout, shapes, cell_nodes)


def _edge_weight(item: PropagationItem) -> Tensor:
    """``[E]`` float edge weights of the item's graph (:func:`~graphwsss.graphs.edge_weights`)."""
    try:
        return edge_weights(item.graph).float()
    except ValueError as error:
        raise ValueError(f"{item.image_id}: {error}") from None


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
    """Train one model per image (batched) and return each image's probabilities ``[K, h, w]``.

    ``settings.name = "random_walk"`` trains nothing and returns :func:`random_walk_items`.
    """
    if settings.name == "random_walk":
        return random_walk_items(items, settings, num_classes, device)
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
    node_seeds = [item.cell_seeds().to(device) for item in items]
    seeded_before = sum(int((seeds != IGNORE_INDEX).sum()) for seeds in node_seeds)
    pixel_seeds = [_padded_pixel_seeds(item) for item in items] if settings.ce_on_image else None
    kernels = [potts_kernel(downsample_image(item.image.to(device), *item.grid_shape),
                            radius=settings.reg_radius) for item in items]
    use_boxes = settings.multi_point or settings.consistency
    split_background = settings.ce_balance == "classes"
    in_boxes = [box_allowed_classes(item.boxes, item.box_classes, num_classes,
                                    item.grid_shape)[1:].any(0).to(device)
                if settings.unknown_background_weight > 0 and item.boxes.numel() else None
                for item in items]
    # The nodes' input features never change: their grid maps are made once, not per epoch.
    input_maps = ([batched.input_map(items, index) for index in range(len(items))]
                  if settings.consistency and settings.consistency_features == "input" else None)
    model.train()
    epochs = trange(settings.epochs_first + settings.epochs_second, leave=False,
                    desc=f"{settings.name} x {len(items)} images", disable=not show_progress)
    for epoch in epochs:
        logits, hidden = model(**batched.inputs)
        checking = settings.consistency and (settings.consistency_rule == "reference"
                                             or epoch >= settings.epochs_first)
        checked = hidden
        if checking and settings.consistency_features == "first":
            checked = _first_hidden(model, batched)
        total = logits.new_zeros(())
        for index, item in enumerate(items):
            image_logits = batched.crop(logits, index)
            if settings.ce_on_image:
                total = total + seed_cross_entropy(image_logits, pixel_seeds[index],
                                                   split_background=split_background,
                                                   image_size=tuple(pixel_seeds[index].shape),
                                                   gce_q=settings.gce_q)
            else:
                total = total + seed_cross_entropy(image_logits, node_seeds[index],
                                                   split_background=split_background,
                                                   gce_q=settings.gce_q)
            if use_boxes and item.boxes.numel():
                image_hidden = batched.crop(hidden, index)
                probs = torch.softmax(image_logits.detach(), dim=0)
                selected = select_multi_points(probs, item.boxes, item.box_classes)
                if settings.multi_point:
                    total = total + multi_point_loss(image_logits, image_hidden, item.boxes,
                                                     item.box_classes, selected)
                if checking:
                    features = (input_maps[index] if input_maps is not None
                                else batched.crop(checked, index))
                    _check_consistency(index, item, features, selected, node_seeds,
                                       pixel_seeds, settings.consistency_rule)
            if in_boxes[index] is not None:
                total = total + settings.unknown_background_weight * unknown_background_loss(
                    image_logits, node_seeds[index], in_boxes[index])
            if epoch >= settings.epochs_first and settings.reg_weight > 0:
                total = total + settings.reg_weight * potts_regularization(
                    torch.softmax(image_logits, dim=0), kernel=kernels[index])
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    model.eval()
    if settings.consistency:  # the only step that unlabels node seeds (eq. 3.28)
        seeded_after = sum(int((seeds != IGNORE_INDEX).sum()) for seeds in node_seeds)
        log.info("consistency checking unlabeled %d of %d seeded nodes in %d images",
                 seeded_before - seeded_after, seeded_before, len(items))
    with torch.no_grad():
        logits, _ = model(**batched.inputs)
    return [torch.softmax(batched.crop(logits, index), dim=0)
            for index, item in enumerate(items)]


def unknown_background_loss(logits: Tensor, seeds: Tensor, in_boxes: Tensor) -> Tensor:
    r"""Background cross-entropy on the unknown cells inside boxes, :math:`-\frac{1}{|U|}
    \sum_{i \in U} \log O_i^0` with :math:`U` the unlabeled cells among ``in_boxes``.

    Box seeds leave unknown what GrabCut did not call foreground; that is weak evidence for
    background, which this term adds at a weight below the seeds' (``logits`` ``[K, h, w]``,
    ``seeds`` ``[h, w]`` with 255 unknown, ``in_boxes`` ``[h, w]`` bool: cells inside a box).
    0 when there are no such cells.
    """
    weight = (in_boxes & (seeds == IGNORE_INDEX)).to(logits.dtype)
    node_loss = -torch.log_softmax(logits, dim=0)[0]
    return (node_loss * weight).sum() / weight.sum().clamp(min=1.0)


@torch.no_grad()
def _first_hidden(model, batched: BatchedGraphs) -> Tensor:
    """:math:`H^1` ``[B, Nmax, hidden]`` without dropout: each node's own embedding, before the
    graph layers mix it with its neighbours'."""
    was_training = model.training
    model.eval()
    first = model.embed(batched.inputs["x"], batched.inputs["node_mask"])
    model.train(was_training)
    return first


def _check_consistency(index: int, item: PropagationItem, hidden: Tensor, selected: list[Tensor],
                       node_seeds: list[Tensor], pixel_seeds: list[Tensor] | None,
                       rule: str = "reference") -> None:
    """Consistency checking (eqs. 3.27–3.28); removals persist, at node and pixel level."""
    kept = consistency_check(hidden.detach(), node_seeds[index], item.boxes, item.box_classes,
                             selected, rule=rule)
    removed = (kept == IGNORE_INDEX) & (node_seeds[index] != IGNORE_INDEX)
    node_seeds[index] = kept
    if pixel_seeds is not None and bool(removed.any()):
        cells = removed.repeat_interleave(item.stride, 0).repeat_interleave(item.stride, 1)
        # Out of place: the loss of this step saved the old seeds for its backward pass.
        pixel_seeds[index] = pixel_seeds[index].masked_fill(cells, IGNORE_INDEX)


def box_allowed_classes(boxes: Tensor, box_classes: Tensor, num_classes: int,
                        grid_shape: tuple[int, int]) -> Tensor:
    """``[K, h, w]`` bool: the classes a cell may take under box supervision: background
    everywhere, and each box's class on the cells of the box (``boxes`` ``[M, 4]`` half-open
    grid cells ``(x0, y0, x1, y1)``, ``box_classes`` ``[M]``)."""
    h, w = grid_shape
    device = boxes.device
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    x0, y0, x1, y1 = (boxes[:, k].view(-1, 1, 1) for k in range(4))
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)             # [M, h, w]
    covered = torch.zeros(num_classes, h * w, device=device).index_add_(
        0, box_classes.to(device).long(), inside.reshape(-1, h * w).float())
    allowed = covered.view(num_classes, h, w) > 0
    allowed[0] = True
    return allowed


def random_walk_items(items: list[PropagationItem], settings: PropagatorSettings,
                      num_classes: int, device: torch.device) -> list[Tensor]:
    """The ``random_walk`` propagator (no training): per image, the seeds as initial scores
    (one-hot where seeded; unknown cells uniform over background and the classes of the boxes
    covering them, or over all classes without boxes) walked over the graph with
    ``rw_beta`` / ``rw_log_steps`` (``rw_method``, ``rw_tolerance``). Returns ``[K, h, w]`` per
    image."""
    results = []
    for item in items:
        seeds = item.cell_seeds().to(device)
        allowed = (box_allowed_classes(item.boxes.to(device), item.box_classes, num_classes,
                                       item.grid_shape) if item.boxes.numel() else None)
        initial = seed_label_probabilities(seeds, num_classes, allowed)
        results.append(random_walk_probabilities(item.graph.to(device), initial,
                                                 beta=settings.rw_beta,
                                                 log_steps=settings.rw_log_steps,
                                                 method=settings.rw_method,
                                                 tolerance=settings.rw_tolerance))
    return results

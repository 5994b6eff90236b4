"""Training speed and memory of the A²GNN propagation (docs/method.md §6) against the dense form.

Cases (each timed in a fresh subprocess, so that peak-memory readings are its own):

* ``ours``: :class:`graphwsss.nn.A2GNN` as graphwsss runs it (grid radius graph, tiled
  window affinity attention, no N x N tensor);
* ``dense``: the same math as the published code computes it, with dense N x N matrices: the
  cosine matrix from normalised ``H H^T``, a dense edge-weight matrix, a masked row softmax
  and ``P @ H``;
* ``batched`` / ``single``: many MSRC-size images trained as one batched problem against one at
  a time (each with its own model), the same code with batches of 16 and of 1; in the tiled
  ``grid`` layout (the headline ``batched_throughput_gain``) and in the ``edges`` layout (CSR
  products, graphwsss's default layout: ``batched_throughput_gain_edges``);
* ``--propagators``: per-epoch time of every propagator of :func:`graphwsss.nn.build_propagator`
  (A²GNN, GCN, GAT, AGNN, none) on 14 GrabCut-size graphs (50 x 50 nodes, 472-d features, the
  default r = 4 disc window) trained as one batch, in the ``edges`` layout (the default) and,
  for the A²GNN, also the ``grid`` layout.

Sizes: a VOC-size graph (63 x 47 nodes, r = 4 square window as the reference code, 5,632-d
node features), the same at 4x the nodes (126 x 94), and 16 MSRC-size graphs (27 x 40, one
30 x 40; 472-d features, the size of the default backbone's last three levels). Features and
edge weights are random (the cost does not depend on their values).

One epoch = forward, cross-entropy on seeded nodes, backward and an Adam step (lr 0.035,
weight decay 5e-4). Memory: on CPU the peak resident set size during training minus the
resident size once the inputs exist (``/proc/self/clear_refs`` resets the peak where allowed);
on CUDA ``torch.cuda.max_memory_allocated`` above the same point.

Threads: the timed subprocesses run with ``OMP_WAIT_POLICY=PASSIVE`` unless told otherwise. On
a 2-core machine shared with other work, OpenMP's default spinning makes every small parallel
operation wait for a descheduled thread (5-10x slower epochs measured here), which would time
the machine's load rather than the methods; ``--threads 1`` gives the same numbers.

Where the time goes, batched against one at a time (profiled with ``torch.profiler`` on the
MSRC case, grid layout): with one thread, a batch of 16 and 16 single images cost the same CPU
time per epoch (1.23-1.34 s against 1.19-1.31 s, repeated runs). About 85 % of it is the
three affinity attention layers, and three quarters of those are batched matrix products
whose size is fixed per image (per layer and 8 x 8 tile: four ``[64 x 256] x [256 x 256]``
products and two with an inner size of 64 for the backward pass through the window's
neighbours); the rest are memory-bound passes over ``[tiles, 64, 256]`` per-edge tensors and
the tiles' neighbourhood copies, also proportional to the image. There is no per-image
overhead for batching to remove on one thread: the single path's Python, dispatch and
optimizer costs are a few percent. What batching saves is thread hand-offs: with two
threads, every one of the ~400 operations of a single image's epoch wakes the second thread
(``OMP_WAIT_POLICY=PASSIVE``), which a batch 16 times larger amortises. So the gain depends
on how busy the machine is: 1.3-1.5 when the two cores are free, about 1 when other jobs
keep them busy (then the batch's larger working set, ~930 MB for 16 images against ~150 MB
for one image at a time, also costs cache misses). The ``edges`` layout (CSR products) batches a
little better (per-call costs of the sparse kernels).

Prints a table (wall and CPU seconds per epoch: on a shared machine the CPU time, summed over
threads, shows the work when the wall time shows the load); the last line is one JSON object
with the headline ratios (with ``--propagators``: the seconds per epoch of each propagator).
``--quick`` runs fewer epochs and skips the (slow) dense 4x case, whose ratios are then
``null``.

Usage: ``python scripts/bench_propagation.py [--quick] [--propagators] [--device auto|cpu|cuda]
[--threads N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

from graphwsss.graphs.grid import grid_to_edges, neighbor_valid, radius_offsets
from graphwsss.nn import build_propagator
from graphwsss.nn.a2gnn import A2GNN
from graphwsss.nn.batched import grid_block_edges
from graphwsss.utils import resolve_device
from graphwsss.utils.memory import (memory_increase, memory_mark, run_case_if_asked,
                                    run_in_subprocess, synchronize)

VOC = dict(height=63, width=47, in_channels=5632, num_classes=21)
VOC_4X = dict(height=126, width=94, in_channels=5632, num_classes=21)
MSRC_SIZES = [(27, 40)] * 15 + [(30, 40)]
MSRC = dict(in_channels=472, num_classes=24)
GRABCUT = dict(height=50, width=50, in_channels=472, num_classes=2, images=14, window="disc")
PROPAGATOR_NAMES = ("a2gnn", "gcn", "gat", "agnn", "none")
RADIUS, WINDOW = 4, "square"
LR, WEIGHT_DECAY = 0.035, 5e-4


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

def random_image(height: int, width: int, in_channels: int, num_classes: int, offsets, seed: int):
    """L1-normalised non-negative features [F, h, w] (3.15), edge weights [O, h, w] in (0, 1]
    with self loops of weight 1, and seeds [h * w] on about 30 % of the nodes."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(in_channels, height, width, generator=generator)
    features /= features.sum(0, keepdim=True)
    grid_weight = torch.rand(offsets.shape[0], height, width, generator=generator)
    grid_weight[0] = 1.0
    grid_weight *= neighbor_valid(height, width, offsets)
    seeds = torch.randint(0, num_classes, (height * width,), generator=generator)
    seeds[torch.rand(height * width, generator=generator) > 0.3] = 255
    return features, grid_weight, seeds


def pad_batch(images):
    height = max(f.shape[1] for f, _, _ in images)
    width = max(f.shape[2] for f, _, _ in images)
    x = torch.stack([F.pad(f, (0, width - f.shape[2], 0, height - f.shape[1])) for f, _, _ in images])
    grid_weight = torch.stack([F.pad(g, (0, width - g.shape[2], 0, height - g.shape[1]))
                               for _, g, _ in images])
    seeds = torch.stack([F.pad(s.view(f.shape[1:]), (0, width - f.shape[2], 0, height - f.shape[1]),
                               value=255).reshape(-1) for f, _, s in images])
    return x, grid_weight, seeds


# --------------------------------------------------------------------------------------------
# The dense reference (published-code form)
# --------------------------------------------------------------------------------------------

class DenseA2GNN(torch.nn.Module):
    """One image's A²GNN with dense [N, N] cosine, edge-weight and propagation matrices."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 256, num_layers: int = 3,
                 dropout: float = 0.5, beta: float = 10.0, form: str = "reference",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        # Same initialisation as A2GNN for one image.
        reference = A2GNN(in_channels, num_classes, 1, hidden, num_layers, dropout, beta, form,
                          generators=[generator] if generator is not None else None)
        self.embedding_weight = torch.nn.Parameter(reference.embedding_weight[0].detach().clone())
        self.attention_weight = torch.nn.Parameter(reference.attention_weight[0].detach().clone())
        self.output_weight = torch.nn.Parameter(reference.output_weight[0].detach().clone())
        self.dropout, self.beta, self.form = dropout, beta, form

    def forward(self, x: torch.Tensor, dense_weight: torch.Tensor):
        """``x`` [N, F], ``dense_weight`` [N, N] (row = target i, column = source j, 0 = no edge)."""
        h = F.dropout(F.relu(x @ self.embedding_weight), self.dropout, self.training)
        present = dense_weight > 0
        for layer in range(self.attention_weight.shape[0]):
            unit = F.normalize(h, dim=1)
            cos = unit @ unit.t()
            positive = cos > 0
            logits = self.attention_weight[layer] * cos + self.beta * positive * dense_weight
            keep = present & positive if self.form == "reference" else present
            h = torch.softmax(logits.masked_fill(~keep, float("-inf")), dim=1) @ h
        return h @ self.output_weight, h


def dense_weight_matrix(grid_weight: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    edge_index, edge_weight = grid_to_edges(grid_weight, offsets)
    num_nodes = grid_weight.shape[1] * grid_weight.shape[2]
    dense = grid_weight.new_zeros(num_nodes, num_nodes)
    dense[edge_index[1], edge_index[0]] = edge_weight
    return dense


# --------------------------------------------------------------------------------------------
# Measurement in a subprocess
# --------------------------------------------------------------------------------------------

def per_image_cross_entropy(logits: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Sum over images of each image's mean cross-entropy on its seeded nodes, in one pass over
    the batch (``logits`` ``[B, N, K]``, ``seeds`` ``[B, N]``, 255 unseeded)."""
    batch, num_nodes, num_classes = logits.shape
    node_loss = F.cross_entropy(logits.reshape(-1, num_classes), seeds.reshape(-1),
                                ignore_index=255, reduction="none").view(batch, num_nodes)
    seeded = (seeds != 255).sum(1).clamp_min(1)
    return (node_loss.sum(1) / seeded).sum()


def edge_inputs(x: torch.Tensor, grid_weight: torch.Tensor, offsets: torch.Tensor) -> dict:
    """The padded grid batch in the ``edges`` layout: ``[B, H * W, F]`` nodes, one
    block-diagonal edge list, the node mask."""
    batch, channels, height, width = x.shape
    node_mask = (grid_weight > 0).any(dim=1)
    edge_index, edge_weight = grid_block_edges(grid_weight, offsets, node_mask)
    nodes = x.reshape(batch, channels, -1).transpose(1, 2).contiguous()
    return dict(x=nodes, edge_index=edge_index, edge_weight=edge_weight,
                node_mask=node_mask.reshape(batch, -1))


def run_case(case: dict) -> dict:
    """Build the case's inputs, then time ``warmup + epochs`` training epochs."""
    device = resolve_device(case["device"])
    torch.manual_seed(0)
    kind = case["kind"]
    layout = case.get("layout", "grid")
    offsets = radius_offsets(RADIUS, GRABCUT["window"] if kind == "propagator" else WINDOW)
    if kind in ("ours", "dense"):
        size = VOC if case["size"] == "voc" else VOC_4X
        images = [random_image(size["height"], size["width"], size["in_channels"],
                               size["num_classes"], offsets, seed=0)]
        in_channels, num_classes = size["in_channels"], size["num_classes"]
    elif kind == "propagator":
        images = [random_image(GRABCUT["height"], GRABCUT["width"], GRABCUT["in_channels"],
                               GRABCUT["num_classes"], offsets, seed=i)
                  for i in range(GRABCUT["images"])]
        in_channels, num_classes = GRABCUT["in_channels"], GRABCUT["num_classes"]
    else:
        images = [random_image(h, w, MSRC["in_channels"], MSRC["num_classes"], offsets, seed=i)
                  for i, (h, w) in enumerate(MSRC_SIZES)]
        in_channels, num_classes = MSRC["in_channels"], MSRC["num_classes"]
    groups = [list(range(len(images)))] if kind != "single" else [[i] for i in range(len(images))]
    batches = []
    for group in groups:
        x, grid_weight, seeds = pad_batch([images[i] for i in group])
        batches.append((x.to(device), grid_weight.to(device), seeds.to(device), group))
    del images
    mark = memory_mark(device)

    steps = []
    for x, grid_weight, seeds, group in batches:
        generators = [torch.Generator().manual_seed(index) for index in group]
        device_offsets = offsets.to(device)
        if kind == "dense":
            dense = dense_weight_matrix(grid_weight[0], device_offsets)
            model = DenseA2GNN(in_channels, num_classes, generator=generators[0]).to(device)
            nodes = x[0].flatten(1).t().contiguous()

            def forward(model=model, nodes=nodes, dense=dense):
                return model(nodes, dense)[0].unsqueeze(0)
        else:
            model = build_propagator(case.get("name", "a2gnn"), in_channels, num_classes,
                                     len(group), generators).to(device)
            if layout == "edges":
                inputs = edge_inputs(x, grid_weight, device_offsets)
            else:
                inputs = dict(x=x, grid_weight=grid_weight, offsets=device_offsets,
                              node_mask=(grid_weight > 0).any(dim=1))

            def forward(model=model, inputs=inputs):
                return model(**inputs)[0]
        optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

        def step(forward=forward, optimizer=optimizer, seeds=seeds):
            loss = per_image_cross_entropy(forward(), seeds)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        steps.append(step)

    times, cpu_times = [], []
    for epoch in range(case["warmup"] + case["epochs"]):
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        for step in steps:  # one epoch of every model (16 of them for "single")
            step()
        synchronize(device)
        if epoch >= case["warmup"]:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)

    memory = memory_increase(device, mark) or 0
    return dict(seconds_per_epoch=statistics.median(times),
                cpu_seconds_per_epoch=statistics.median(cpu_times), epochs=len(times),
                images=len(batches) if kind == "single" else len(batches[0][3]),
                memory_bytes=memory, device=str(device), threads=torch.get_num_threads())


def check_dense_matches(device: torch.device) -> float:
    """Largest logit difference between A2GNN and the dense reference on a small graph."""
    offsets = radius_offsets(RADIUS, WINDOW)
    features, grid_weight, _ = random_image(14, 11, 32, 5, offsets, seed=3)
    model = A2GNN(32, 5, 1, generators=[torch.Generator().manual_seed(0)]).to(device).eval()
    dense = DenseA2GNN(32, 5, generator=torch.Generator().manual_seed(0)).to(device).eval()
    with torch.no_grad():
        ours = model(features[None].to(device), grid_weight=grid_weight[None].to(device),
                     offsets=offsets.to(device))[0][0]
        theirs = dense(features.flatten(1).t().to(device),
                       dense_weight_matrix(grid_weight.to(device), offsets.to(device)))[0]
    return float((ours - theirs).abs().max())


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def describe_graph(case: dict) -> str:
    if case["kind"] in ("ours", "dense"):
        size = VOC if case["size"] == "voc" else VOC_4X
        return f"{size['height']}x{size['width']} nodes, F={size['in_channels']}"
    if case["kind"] == "propagator":
        return (f"{GRABCUT['images']} x {GRABCUT['height']}x{GRABCUT['width']} nodes, "
                f"F={GRABCUT['in_channels']}")
    return f"16 x ~27x40 nodes, F={MSRC['in_channels']}"


def run_cases(cases: dict, device: torch.device, args) -> dict:
    """Run every case in its own subprocess and print a table row for each."""
    header = (f"{'case':18s} {'graph':30s} {'layout':6s} {'s/epoch':>8s} {'cpu s':>7s} "
              f"{'images/s':>9s} {'peak MiB':>9s}")
    print(header)
    print("-" * len(header))
    results = {}
    for name, case in cases.items():
        if case is None:
            print(f"{name:18s} {'(skipped with --quick)':30s}")
            continue
        case = dict(case, device=str(device), threads=args.threads)
        result = run_in_subprocess(__file__, case, 600, args.omp_wait_policy)
        results[name] = result
        graph, layout = describe_graph(case), case.get("layout", "grid")
        if case["kind"] == "dense":
            layout = "dense"
        if "error" in result:
            print(f"{name:18s} {graph:30s} {layout:6s} failed: {result['error']}")
            continue
        rate = result["images"] / result["seconds_per_epoch"]
        print(f"{name:18s} {graph:30s} {layout:6s} {result['seconds_per_epoch']:8.3f} "
              f"{result['cpu_seconds_per_epoch']:7.3f} {rate:9.2f} "
              f"{result['memory_bytes'] / 2**20:9.1f}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, no dense 4x case")
    parser.add_argument("--propagators", action="store_true",
                        help="time every propagator on 14 GrabCut-size graphs instead")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in every case (default: torch's default)")
    parser.add_argument("--omp-wait-policy", default="PASSIVE",
                        choices=["PASSIVE", "ACTIVE", "inherit"],
                        help="OMP_WAIT_POLICY of the timed subprocesses (default PASSIVE: on a "
                             "shared machine spinning OpenMP threads stall small operations)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if run_case_if_asked(args, run_case):
        return

    device = resolve_device(args.device)
    quick = args.quick
    print(f"device {device}, threads {args.threads or torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY {args.omp_wait_policy}, load average {os.getloadavg()[0]:.1f}")
    if args.propagators:
        epochs = 2 if quick else 4
        cases = {f"{name}": dict(kind="propagator", name=name, layout="edges", warmup=1,
                                 epochs=epochs) for name in PROPAGATOR_NAMES}
        cases["a2gnn_grid"] = dict(kind="propagator", name="a2gnn", layout="grid", warmup=1,
                                     epochs=epochs)
        print(f"window {GRABCUT['window']} r={RADIUS}; one epoch = all {GRABCUT['images']} "
              "images")
        results = run_cases(cases, device, args)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        print(json.dumps({f"{name}_seconds_per_epoch": round(result["seconds_per_epoch"], 3)
                          if "error" not in result else None
                          for name, result in results.items()}))
        return

    cases = {
        "voc_ours": dict(kind="ours", size="voc", warmup=1, epochs=2 if quick else 4),
        "voc_dense": dict(kind="dense", size="voc", warmup=0 if quick else 1,
                          epochs=1 if quick else 2),
        "4x_ours": dict(kind="ours", size="4x", warmup=1, epochs=1 if quick else 3),
        "4x_dense": None if quick else dict(kind="dense", size="4x", warmup=0, epochs=1),
        "msrc_batched": dict(kind="batched", warmup=1, epochs=2 if quick else 4),
        "msrc_single": dict(kind="single", warmup=1, epochs=2 if quick else 4),
        "msrc_batched_edges": dict(kind="batched", layout="edges", warmup=1,
                                   epochs=2 if quick else 4),
        "msrc_single_edges": dict(kind="single", layout="edges", warmup=1,
                                  epochs=2 if quick else 4),
    }
    print(f"window {WINDOW} r={RADIUS}; dense reference max |logit difference| "
          f"{check_dense_matches(device):.2e}")
    results = run_cases(cases, device, args)

    def ratio(numerator, denominator, key):
        a, b = results.get(numerator), results.get(denominator)
        if not a or not b or "error" in a or "error" in b or not b[key]:
            return None
        return round(a[key] / b[key], 2)

    def gain(batched_name, single_name, key="seconds_per_epoch"):
        """Images per second batched over images per second one at a time (wall time, or CPU
        time with ``key="cpu_seconds_per_epoch"``: the work saved, whatever the load)."""
        batched, single = results.get(batched_name), results.get(single_name)
        if not batched or not single or "error" in batched or "error" in single:
            return None
        return round((batched["images"] / batched[key]) / (single["images"] / single[key]), 2)

    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    summary = {
        "speedup_vs_dense_voc": ratio("voc_dense", "voc_ours", "seconds_per_epoch"),
        "speedup_vs_dense_4x": ratio("4x_dense", "4x_ours", "seconds_per_epoch"),
        "memory_dense_over_ours_4x": ratio("4x_dense", "4x_ours", "memory_bytes"),
        "batched_throughput_gain": gain("msrc_batched", "msrc_single"),
        "batched_throughput_gain_edges": gain("msrc_batched_edges", "msrc_single_edges"),
        "batched_cpu_gain": gain("msrc_batched", "msrc_single", "cpu_seconds_per_epoch"),
        "batched_cpu_gain_edges": gain("msrc_batched_edges", "msrc_single_edges",
                                       "cpu_seconds_per_epoch"),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

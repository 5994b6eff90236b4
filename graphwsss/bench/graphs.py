"""``graphwsss bench-graphs``: the graph builders of docs/method.md §5 side by side.

For each builder (``backbone``, ``rgbxy``, ``superpixel``, ``knn``, ``affinity``):

1. **downstream**: a full ``graphwsss run`` (:func:`graphwsss.stages.run.run`) into
   ``<out>/<builder>/`` with ``graph.builder=<builder>`` and otherwise the same settings: its
   A²GNN (+ CRF) pseudo labels give ``miou`` and ``contour_f``. The runs share one set of seeds:
   the first run's ``seeds/`` are copied into each later run folder before it starts (the seeds
   stage skips images whose seed file exists), so the builders differ in the graph only. The
   ``affinity`` run trains its affinity CNN on those seeds (``<out>/affinity/affinity/``). Runs
   are resumable like any run; a run that fails is reported in the row's ``note``.
2. **the graph itself**, over the same images: node features come from the run's node source
   (the ImageNet backbone, :class:`~graphwsss.stages.features.FeatureExtractor`, or for
   ``affinity`` the trained affinity CNN, which also gives the embedding), node seeds from the
   shared seeds, then ``builder.build`` is timed alone (features are not part of the time; one
   untimed warm-up build first; CUDA synchronised). Reported per image (mean): ``build_ms``,
   ``nodes``, ``edges`` (directed, self loops included, as in ``edge_index``); ``peak_mib``: the
   largest memory increase during one build (below); ``purity``: the weight-pooled graph purity
   (:mod:`graphwsss.metrics.graph`: share of edge weight between nodes of the same ground-truth
   class, self loops and void nodes left out; node labels = majority ground truth of the
   node's cells, cells sampled at their centres like the seeds); ``node_purity``: share of
   non-void cells whose ground truth is their node's label (1 for graphs of grid cells; below 1
   when a superpixel mixes classes, which edge purity cannot see).

Peak memory: Python's ``tracemalloc`` does not see torch's allocations, so on CUDA it is
``torch.cuda.max_memory_allocated`` above the allocation before the build; on the CPU it is the
resident-set high-water mark (``VmHWM``, reset by writing ``5`` to ``/proc/self/clear_refs``)
minus the resident size before the build, after ``malloc_trim(0)`` has handed the C heap's free
pages back to the kernel (graphwsss keeps freed memory in the heap for speed, which would let a
build reuse pages unseen). That build is a second one, after the timed build, so that the time
is the steady-state one (re-faulting trimmed pages costs time). Each builder is measured in its
own subprocess (``isolate=True``, default), away from the memory state the run left behind.
Where ``clear_refs`` cannot be written the CPU figure is ``None``.

:func:`radius_vs_loop` times the vectorised radius builder
(:class:`~graphwsss.graphs.RadiusGraphBuilder`) against :func:`radius_graph_loop_reference`, a
straightforward Python loop over pixels and their window, at VOC size (63 x 47 nodes, r = 4,
472-d features), and checks that both give the same edges.

Outputs: ``<out>/bench_graphs.csv`` and ``<out>/bench_graphs.json`` (atomic).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor
from tqdm import tqdm

from graphwsss.config import ConfigError, load_config, to_yaml
from graphwsss.data.palette import read_label_png
from graphwsss.data.voc import VOCDataset
from graphwsss.graphs import RadiusGraphBuilder, available_builders
from graphwsss.metrics.graph import node_ground_truth, node_purity, purity_weights
from graphwsss.seeds.grid import grid_seeds
from graphwsss.settings import RunSettings
from graphwsss.stages.graph import make_builder, node_inputs, node_source
from graphwsss.utils.io import atomic_path, atomic_write
from graphwsss.utils.runtime import get_logger, resolve_device
from graphwsss.utils.memory import memory_increase, memory_mark, memory_method, synchronize

log = get_logger(__name__)

BUILDERS = ("backbone", "rgbxy", "superpixel", "knn", "affinity")
COLUMNS = ("builder", "images", "build_ms", "nodes", "edges", "peak_mib", "purity", "node_purity",
           "miou", "contour_f", "run_seconds", "device", "memory_method", "note")
AFFINITY_MISSING = "n/a (affinity stage not available)"


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------

def bench_graphs(data_root: str | os.PathLike, out_dir: str | os.PathLike,
                 builders: list[str] | tuple[str, ...] = BUILDERS,
                 settings: RunSettings | None = None, limit: int | None = None, *,
                 isolate: bool = True, radius_loop: bool = True,
                 show_progress: bool = True) -> dict:
    """Benchmark graph builders on ``data_root`` (see the module docstring).

    Args:
        data_root: data set in Pascal VOC layout (box supervision; ground truth for purity and
            mIoU).
        out_dir: benchmark folder: one run folder per builder, ``bench_graphs.csv|json``.
        builders: registered builder names, in order (the first run's seeds are shared).
        settings: run settings (default :class:`RunSettings`); ``graph.builder`` is set per
            builder.
        limit: first N images of the split (default ``settings.limit``, else all).
        isolate: measure each builder's graphs in a subprocess (reliable peak memory).
        radius_loop: also run :func:`radius_vs_loop` (VOC size, a few seconds).
        show_progress: progress bars.

    Returns:
        ``{"data", "images", "settings", "builders": [row, ...], "radius_vs_loop"}``; a row has
        the fields of :data:`COLUMNS` (``None`` where not available, with the reason in
        ``note``).
    """
    settings = settings or RunSettings()
    if limit is not None:
        settings = dataclasses.replace(settings, limit=limit)
    builders = list(builders)
    unknown = [name for name in builders if name not in available_builders()]
    if unknown or not builders:
        raise ConfigError(f"builders: unknown graph builder(s) {unknown or '(none given)'}; "
                          f"known: {', '.join(available_builders())}")
    dataset = VOCDataset(data_root, split=settings.split)
    image_ids = dataset.ids[:settings.limit] if settings.limit else list(dataset.ids)
    out_dir = Path(out_dir)
    log.info("bench-graphs: builders %s on %d images of %s -> %s", ", ".join(builders),
             len(image_ids), dataset.root, out_dir)
    rows, shared_seeds = [], None
    for name in builders:
        run_dir = out_dir / name
        run_settings = dataclasses.replace(settings,
                                           graph=dataclasses.replace(settings.graph, builder=name))
        row = {column: None for column in COLUMNS}
        row.update(builder=name, images=len(image_ids))
        if name == "affinity" and not affinity_stage_available():
            row["note"] = AFFINITY_MISSING
            rows.append(row)
            log.warning("bench-graphs: %s: %s", name, AFFINITY_MISSING)
            continue
        notes = []
        if shared_seeds is not None:
            share_seeds(shared_seeds, run_dir / "seeds")
        log.info("bench-graphs: %s: downstream run -> %s", name, run_dir)
        try:
            from graphwsss.stages.run import run

            metrics = run(data_root, run_dir, run_settings, show_progress=show_progress)
            if metrics is not None:
                row.update(miou=metrics["miou"], contour_f=metrics["contour_f"],
                           run_seconds=metrics["seconds"])
        except Exception as error:  # noqa: BLE001 - one failing builder must not end the bench
            log.warning("bench-graphs: %s: the run failed: %s", name, error,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            notes.append(f"run failed: {type(error).__name__}: {error}")
        if shared_seeds is None and all((run_dir / "seeds" / f"{i}.png").is_file()
                                        for i in image_ids):
            shared_seeds = run_dir / "seeds"
        log.info("bench-graphs: %s: measuring %d graphs%s", name, len(image_ids),
                 " in a subprocess" if isolate else "")
        try:
            if isolate:
                measured = measure_in_subprocess(data_root, run_dir, run_settings, image_ids)
            else:
                measured = measure_builder(data_root, run_dir, run_settings, image_ids,
                                           show_progress=show_progress)
            row.update(measured)
        except Exception as error:  # noqa: BLE001
            log.warning("bench-graphs: %s: measuring the graphs failed: %s", name, error,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            notes.append(f"measurement failed: {type(error).__name__}: {error}")
        row["note"] = "; ".join(notes) or None
        rows.append(row)
    result = {"data": str(dataset.root), "images": len(image_ids),
              "settings": yaml.safe_load(to_yaml(settings)), "builders": rows,
              "radius_vs_loop": None}
    if radius_loop:
        log.info("bench-graphs: vectorised radius builder against the per-pixel Python loop")
        result["radius_vs_loop"] = radius_vs_loop(device=resolve_device(settings.device))
    write_results(out_dir, result)
    return result


def affinity_stage_available() -> bool:
    """Whether :mod:`graphwsss.stages.affinity` (training and loading the affinity CNN) exists."""
    try:
        return importlib.util.find_spec("graphwsss.stages.affinity") is not None
    except ImportError:
        return False


def share_seeds(source: Path, target: Path) -> int:
    """Copy the seed PNGs of ``source`` missing from ``target`` (atomically); return how many."""
    copied = 0
    for path in sorted(source.glob("*.png")):
        destination = target / path.name
        if not destination.is_file():
            with atomic_path(destination) as temporary:
                shutil.copyfile(path, temporary)
            copied += 1
    if copied:
        log.info("bench-graphs: %d shared seeds %s -> %s", copied, source, target)
    return copied


# --------------------------------------------------------------------------------------------
# Measuring one builder's graphs
# --------------------------------------------------------------------------------------------

def measure_builder(data_root: str | os.PathLike, run_dir: str | os.PathLike,
                    settings: RunSettings, image_ids: list[str],
                    show_progress: bool = False) -> dict:
    """Build ``settings.graph.builder``'s graph of every image and measure it (this process).

    Node features and embedding come from the run's node source (for ``affinity``: the CNN the
    run in ``run_dir`` trained), seeds from ``run_dir/seeds`` where present.

    Returns:
        ``build_ms``, ``nodes``, ``edges`` (means per image), ``peak_mib``, ``purity``,
        ``node_purity`` (``None`` without ground truth), ``device``, ``memory_method``.
    """
    if not image_ids:
        raise ValueError("image_ids is empty: nothing to measure")
    device = resolve_device(settings.device)
    dataset = VOCDataset(data_root, split=settings.split)
    source = node_source(settings, device, affinity_dir=Path(run_dir) / "affinity")
    builder = make_builder(settings.graph)
    times, nodes, edges, peaks = [], [], [], []
    same_weight = counted_weight = agreeing_cells = valid_cells = 0
    for index, image_id in enumerate(tqdm(image_ids, desc=f"graphs {builder.name}",
                                          disable=not show_progress, leave=False)):
        sample = dataset.load(image_id)
        seed_path = Path(run_dir) / "seeds" / f"{image_id}.png"
        inputs = node_inputs(sample, source, device,
                             read_label_png(seed_path) if seed_path.is_file() else None)
        image, features, embedding = inputs.image, inputs.features, inputs.embedding
        seeds, grid_size = inputs.node_seeds, inputs.grid_size
        if index == 0:  # warm-up: lazy imports and first-call costs are not the builder's
            builder.build(image, features, seed_labels=seeds, embedding=embedding)
        synchronize(device)
        start = time.perf_counter()
        graph = builder.build(image, features, seed_labels=seeds, embedding=embedding)
        synchronize(device)
        times.append(time.perf_counter() - start)
        del graph  # the memory build starts from the same state as the timed one
        mark = memory_mark(device)
        graph = builder.build(image, features, seed_labels=seeds, embedding=embedding)
        peaks.append(memory_increase(device, mark))
        nodes.append(graph.num_nodes)
        edges.append(graph.edge_index.shape[1])
        if dataset.has_ground_truth:
            truth = torch.from_numpy(grid_seeds(dataset.ground_truth(image_id), grid_size,
                                                source.stride).astype(np.int64)).to(device)
            same, counted = purity_weights(graph.edge_index, graph.edge_attr,
                                           node_ground_truth(graph, truth))
            agree, valid = node_purity(graph, truth)
            same_weight, counted_weight = same_weight + same, counted_weight + counted
            agreeing_cells, valid_cells = agreeing_cells + agree, valid_cells + valid
    known_peaks = [peak for peak in peaks if peak is not None]
    return {
        "build_ms": round(1000 * statistics.fmean(times), 3),
        "nodes": round(statistics.fmean(nodes), 1),
        "edges": round(statistics.fmean(edges), 1),
        "peak_mib": round(max(known_peaks) / 2**20, 2) if known_peaks else None,
        "purity": round(same_weight / counted_weight, 4) if counted_weight else None,
        "node_purity": round(agreeing_cells / valid_cells, 4) if valid_cells else None,
        "device": str(device),
        "memory_method": memory_method(device),
    }


def measure_in_subprocess(data_root: str | os.PathLike, run_dir: str | os.PathLike,
                          settings: RunSettings, image_ids: list[str],
                          timeout: float | None = None) -> dict:
    """:func:`measure_builder` in a fresh Python process (see the module docstring)."""
    settings_path = Path(run_dir) / "bench_settings.yaml"
    atomic_write(settings_path, to_yaml(settings))
    spec = {"data_root": str(data_root), "run_dir": str(run_dir),
            "settings": str(settings_path), "image_ids": list(image_ids)}
    command = [sys.executable, "-m", "graphwsss.bench.graphs", "--measure", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# The vectorised radius builder against a per-pixel loop
# --------------------------------------------------------------------------------------------

def radius_graph_loop_reference(features: Tensor, radius: int = 4, shape: str = "disc",
                                threshold: float = 1e-3,
                                backend: str = "torch") -> tuple[Tensor, Tensor]:
    """THE REFERENCE, deliberately unvectorised: the ``backbone`` radius graph (3.8, 3.14) with
    a Python loop over pixels and, for each, over its window.

    For every node ``i = (y, x)`` and every ``(dy, dx)`` of the window whose neighbour ``j``
    lies inside the grid, ``E_ij = exp(-|F_i - F_j|_1 / C)`` is computed on the two feature
    vectors (one vector operation per pair: ``backend="torch"`` on the builder's own tensor,
    ``"numpy"`` on a host copy), kept if above ``threshold``; self loops get 1. Only for
    :func:`radius_vs_loop`; use :class:`~graphwsss.graphs.RadiusGraphBuilder`.

    Args:
        features: ``[C, h, w]``.

    Returns:
        ``edge_index`` ``[2, E]`` (source = neighbour, target = node) and ``edge_weight`` ``[E]``
        (float64, on the CPU), in loop order.
    """
    if backend not in ("torch", "numpy"):
        raise ValueError(f"backend must be 'torch' or 'numpy', got {backend!r}")
    channels, height, width = features.shape
    pixels = features.detach().cpu().permute(1, 2, 0).numpy() if backend == "numpy" else features
    sources, targets, weights = [], [], []
    for y in range(height):
        for x in range(width):
            for dy in range(-radius, radius + 1):
                for dx in range(-radius, radius + 1):
                    if shape == "disc" and dy * dy + dx * dx > radius * radius:
                        continue
                    ny, nx = y + dy, x + dx
                    if not (0 <= ny < height and 0 <= nx < width):
                        continue
                    if dy == 0 and dx == 0:
                        weight = 1.0
                    else:
                        if backend == "numpy":
                            distance = float(np.abs(pixels[y, x] - pixels[ny, nx]).sum())
                        else:
                            distance = float((pixels[:, y, x] - pixels[:, ny, nx]).abs().sum())
                        weight = math.exp(-distance / channels)
                        if weight <= threshold:
                            continue
                    sources.append(ny * width + nx)
                    targets.append(y * width + x)
                    weights.append(weight)
    return (torch.tensor([sources, targets], dtype=torch.long),
            torch.tensor(weights, dtype=torch.float64))


def same_edges(first: tuple[Tensor, Tensor], second: tuple[Tensor, Tensor], num_nodes: int,
               rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """Whether two ``(edge_index, edge_weight)`` have the same edges (any order), same weights."""
    orders = []
    for edge_index, _ in (first, second):
        keys = edge_index[1].cpu() * num_nodes + edge_index[0].cpu()
        orders.append((keys, torch.argsort(keys)))
    (keys_a, order_a), (keys_b, order_b) = orders
    if keys_a.numel() != keys_b.numel() or not torch.equal(keys_a[order_a], keys_b[order_b]):
        return False
    return torch.allclose(first[1].cpu().double()[order_a], second[1].cpu().double()[order_b],
                          rtol=rtol, atol=atol)


def radius_vs_loop(height: int = 63, width: int = 47, channels: int = 472, radius: int = 4,
                   shape: str = "disc", threshold: float = 1e-3, repeats: int = 5,
                   backends: tuple[str, ...] = ("torch", "numpy"), seed: int = 0,
                   device: torch.device | str = "cpu") -> dict:
    """Time :class:`~graphwsss.graphs.RadiusGraphBuilder` against the per-pixel loop.

    Random non-negative features of VOC size (a 500 x 375 image at stride 8 by default); the
    builder's time is the median of ``repeats`` builds after one warm-up, each loop is timed
    once. ``speedup`` is against the ``torch`` loop (the same tensor operations one pair at a
    time), ``speedup_numpy`` against the loop on a numpy copy.

    Returns:
        ``{"nodes", "edges", "vectorised_ms", "loop_s": {backend: s}, "speedup",
        "speedup_numpy", "edges_equal", "device"}``.
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(channels, height, width, generator=generator).to(device)
    image = torch.rand(3, height * 8, width * 8, generator=generator).to(device)
    builder = RadiusGraphBuilder(radius=radius, threshold=threshold, shape=shape)
    graph = builder.build(image, features)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        graph = builder.build(image, features)
        synchronize(device)
        times.append(time.perf_counter() - start)
    vectorised = statistics.median(times)
    loop_seconds, equal = {}, True
    for backend in backends:
        start = time.perf_counter()
        reference = radius_graph_loop_reference(features, radius, shape, threshold, backend)
        loop_seconds[backend] = round(time.perf_counter() - start, 3)
        equal &= same_edges((graph.edge_index, graph.edge_attr), reference, height * width)
    speedups = {backend: round(seconds / vectorised, 1)
                for backend, seconds in loop_seconds.items()}
    result = {"nodes": height * width, "edges": int(graph.edge_index.shape[1]),
              "vectorised_ms": round(1000 * vectorised, 2), "loop_s": loop_seconds,
              "speedup": speedups.get("torch"), "speedup_numpy": speedups.get("numpy"),
              "edges_equal": bool(equal), "device": str(device)}
    log.info("radius builder %.1f ms vs per-pixel loop %s: %sx faster (numpy loop %sx), edges "
             "equal: %s", result["vectorised_ms"], loop_seconds, result["speedup"],
             result["speedup_numpy"], result["edges_equal"])
    return result


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def write_results(out_dir: Path, result: dict) -> tuple[Path, Path]:
    """``bench_graphs.json`` (everything) and ``bench_graphs.csv`` (one row per builder)."""
    json_path = atomic_write(out_dir / "bench_graphs.json", json.dumps(result, indent=2))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in result["builders"]:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in COLUMNS})
    csv_path = atomic_write(out_dir / "bench_graphs.csv", buffer.getvalue())
    log.info("bench-graphs: results -> %s, %s", csv_path, json_path)
    return csv_path, json_path


def format_table(result: dict) -> str:
    """The per-builder table (and the radius-vs-loop line) as printable text."""
    columns = [("builder", "builder", "{}"), ("build_ms", "ms/img", "{:.1f}"),
               ("nodes", "nodes", "{:.0f}"), ("edges", "edges", "{:.0f}"),
               ("peak_mib", "peak MiB", "{:.1f}"), ("purity", "purity %", "{:.1%}"),
               ("node_purity", "node pur. %", "{:.1%}"), ("miou", "mIoU", "{:.2f}"),
               ("contour_f", "contour F", "{:.2f}")]

    def cell(row, key, style):
        value = row.get(key)
        return "n/a" if value is None else style.format(value).rstrip("%")

    table = [[title for _, title, _ in columns] + ["note"]]
    for row in result["builders"]:
        table.append([cell(row, key, style) for key, _, style in columns] + [row.get("note") or ""])
    widths = [max(len(line[index]) for line in table) for index in range(len(columns))]
    lines = []
    for number, line in enumerate(table):
        text = "  ".join(value.ljust(width) if index == 0 else value.rjust(width)
                         for index, (value, width) in enumerate(zip(line, widths)))
        lines.append(f"{text}  {line[-1]}".rstrip())
        if number == 0:
            lines.append("-" * len(lines[0]))
    loop = result.get("radius_vs_loop")
    if loop:
        lines.append(f"radius builder vs per-pixel Python loop ({loop['nodes']} nodes, "
                     f"{loop['edges']} edges, {loop['device']}): {loop['vectorised_ms']:.1f} ms vs "
                     f"{loop['loop_s'].get('torch', float('nan')):.2f} s (torch loop) = "
                     f"{loop['speedup']}x, numpy loop {loop['speedup_numpy']}x; edges equal: "
                     f"{loop['edges_equal']}")
    return "\n".join(lines)


def headline(result: dict) -> dict:
    """The per-builder headline numbers and the radius-vs-loop speedup, for one JSON line."""
    keys = ("build_ms", "nodes", "edges", "peak_mib", "purity", "miou", "contour_f")
    loop = result.get("radius_vs_loop") or {}
    return {"builders": {row["builder"]: {key: row.get(key) for key in keys}
                         | ({"note": row["note"]} if row.get("note") else {})
                         for row in result["builders"]},
            "radius_vs_loop_speedup": loop.get("speedup"),
            "radius_vs_numpy_loop_speedup": loop.get("speedup_numpy"),
            "radius_loop_edges_equal": loop.get("edges_equal")}


def _measure_main(argv: list[str]) -> int:
    """Entry of the measuring subprocess: ``--measure JSON``; prints the result as JSON."""
    if len(argv) != 2 or argv[0] != "--measure":
        print("usage: python -m graphwsss.bench.graphs --measure JSON", file=sys.stderr)
        return 2
    spec = json.loads(argv[1])
    settings = load_config(RunSettings, spec["settings"])
    result = measure_builder(spec["data_root"], spec["run_dir"], settings, spec["image_ids"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_measure_main(sys.argv[1:]))

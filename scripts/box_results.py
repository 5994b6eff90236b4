#!/usr/bin/env python
"""Reproduce the box-supervision table of docs/results.md on one data set.

Runs the filled-box and GrabCut baselines and a list of ``graphwsss run`` configurations,
sharing the GrabCut seeds between runs (the seeds stage is resumable, so later runs start from
the first run's ``seeds/``), and prints a Markdown table with mIoU, contour F, the command of
each row and its wall time. Example::

    python scripts/box_results.py --data ../shared/data/grabcut --out outputs/results/grabcut
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from graphwsss.data import VOCDataset, read_label_png, write_label_png
from graphwsss.settings import load_run_settings
from graphwsss.stages import filled_boxes
from graphwsss.stages.evaluate import evaluate_folder
from graphwsss.stages.run import run

ROWS = {
    "A²GNN + CRF": [],
    "A²GNN": ["crf.enabled=false"],
    "A²GNN + CRF, RGB-XY graph": ["graph.builder=rgbxy"],
    "GCN + CRF": ["propagator.name=gcn"],
    "GAT + CRF": ["propagator.name=gat"],
    "AGNN + CRF": ["propagator.name=agnn"],
    "no propagation (seed classifier) + CRF": ["propagator.name=none"],
    "loss: CE": ["crf.enabled=false", "propagator.multi_point=false",
                 "propagator.consistency=false", "propagator.reg_weight=0"],
    "loss: CE + reg": ["crf.enabled=false", "propagator.multi_point=false",
                       "propagator.consistency=false"],
    "loss: CE + MP": ["crf.enabled=false", "propagator.consistency=false",
                      "propagator.reg_weight=0"],
    "loss: CE + MP + CC": ["crf.enabled=false", "propagator.reg_weight=0"],
}
# "loss: all (CE + MP + CC + reg)" is the "A²GNN" row: the default losses without CRF.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", help="base YAML (default: the built-in defaults)")
    parser.add_argument("--limit", type=int, help="first N images only")
    parser.add_argument("--rows", nargs="*", default=list(ROWS), help="subset of rows")
    parser.add_argument("overrides", nargs="*", help="key=value for every run (e.g. limit=20)")
    args = parser.parse_args()
    out = Path(args.out)
    dataset = VOCDataset(args.data)
    ids = dataset.ids[:args.limit] if args.limit else dataset.ids
    limit = [f"limit={args.limit}"] if args.limit else []
    table = []

    started = time.perf_counter()
    filled_boxes.run(args.data, out / "filled_boxes", limit=args.limit)
    metrics = evaluate_folder(args.data, out / "filled_boxes", ids=ids)
    table.append(("filled boxes", metrics, f"graphwsss fill-boxes --data {args.data} --out PRED",
                  time.perf_counter() - started))

    shared_seeds = None
    for name in args.rows:
        overrides = [*limit, *args.overrides, *ROWS[name]]
        run_dir = out / name.replace(" ", "_").replace("+", "plus").replace(":", "")
        if shared_seeds is not None and not (run_dir / "seeds").exists():
            shutil.copytree(shared_seeds, run_dir / "seeds")
        settings = load_run_settings(args.config, overrides)
        started = time.perf_counter()
        metrics = run(args.data, run_dir, settings)
        seconds = time.perf_counter() - started
        if shared_seeds is None:
            shared_seeds = run_dir / "seeds"
            table.append(("GrabCut seeds (unknown = background)",
                          _grabcut_baseline(dataset, ids, shared_seeds, out / "grabcut"), "", 0.0))
        command = (f"graphwsss run --data {args.data} --supervision box --out RUN "
                   + " ".join(overrides))
        table.append((name, metrics, command, seconds))

    lines = ["| method | mIoU | contour F | seed precision | wall time (s) | command |",
             "|---|---|---|---|---|---|"]
    for name, metrics, command, seconds in table:
        precision = metrics.get("seed_precision")
        lines.append(f"| {name} | {metrics['miou']:.1f} | {metrics['contour_f']:.1f} | "
                     f"{'' if precision is None else f'{precision:.1f}'} | {seconds:.0f} | "
                     f"`{command}` |")
    print("\n".join(lines))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "table.json").write_text(json.dumps(
        [{"method": n, "metrics": m, "command": c, "seconds": s} for n, m, c, s in table], indent=1))


def _grabcut_baseline(dataset: VOCDataset, ids: list[str], seeds_dir: Path, out: Path) -> dict:
    """GrabCut in boxes with background outside: the seeds with unknown pixels as background."""
    for image_id in ids:
        seeds = read_label_png(seeds_dir / f"{image_id}.png")
        write_label_png(out / f"{image_id}.png", np.where(seeds == 255, 0, seeds))
    return evaluate_folder(dataset.root, out, ids=ids)


if __name__ == "__main__":
    main()

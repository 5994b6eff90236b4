"""Graph-builder benchmark (docs/method.md §5): ``graphwsss bench-graphs`` as a script.

Per builder (backbone, rgbxy, superpixel, knn, affinity): build time per image, nodes, edges,
peak memory, graph purity and downstream A²GNN mIoU / contour F (a full box-supervised run per
builder, seeds shared); then the vectorised radius builder against a per-pixel Python loop at
VOC size. See :mod:`graphwsss.bench.graphs` for what is measured and how.

Prints a table; the last line is one JSON object with the per-builder headline numbers and
``radius_vs_loop_speedup``. CSV and JSON land in ``--out``.

Usage::

    python scripts/bench_graph_builders.py --data ../shared/data/msrc-objects \\
        [--builders backbone rgbxy superpixel knn affinity] [--out DIR] [--config YAML] \\
        [--in-process] [--skip-radius-loop] [key=value ...]
"""

import sys

from graphwsss.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-graphs", *sys.argv[1:]]))

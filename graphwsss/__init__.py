"""graphwsss: weak labels (boxes, scribbles, points, tags) to dense segmentation labels by
propagating them over learned pixel graphs (A²GNN). See ``../shared/DESIGN.md`` for the method."""

import os

# OpenMP threads that spin while waiting stall every small parallel op when cores are shared
# (5-10x slower epochs measured on a loaded 2-core machine). Must be set before torch loads;
# an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

"""graphwsss: weak labels (boxes, scribbles, points, tags) to dense segmentation labels by
propagating them over learned pixel graphs (A²GNN). See ``../shared/DESIGN.md`` for the method."""

__version__ = "0.1.0"

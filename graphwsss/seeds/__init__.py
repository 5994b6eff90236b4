"""Pixel-level seed labels from weak labels (docs/method.md §2)."""

from graphwsss.seeds.box import fill_boxes, paint_order
from graphwsss.seeds.grid import grid_seeds

__all__ = ["fill_boxes", "grid_seeds", "paint_order"]

"""Pixel-level seed labels from weak labels (DESIGN.md §2)."""

from graphwsss.seeds.box import fill_boxes, paint_order

__all__ = ["fill_boxes", "paint_order"]

"""Evaluation metrics of DESIGN.md §8, accumulated over a dataset and mergeable across processes.

- :class:`ConfusionMatrix`: per-class IoU, mIoU and pixel accuracy.
- :class:`ContourFScore`: DAVIS boundary precision / recall / F per class.
- :class:`SeedQuality`: precision and coverage of a sparse seed map.

All take ``[H, W]`` integer ``np.ndarray`` label maps with 255 as void, and ``summary()`` reports
percentages with ``None`` for undefined values (so the result is JSON-serialisable).
"""

from graphwsss.metrics.confusion import ConfusionMatrix
from graphwsss.metrics.contour import ContourFScore, boundary_map, tolerance_radius
from graphwsss.metrics.seeds import SeedQuality

__all__ = ["ConfusionMatrix", "ContourFScore", "SeedQuality", "boundary_map", "tolerance_radius"]

"""graphwsss: weak labels (boxes, scribbles, points, tags) to dense segmentation labels by
propagating them over learned pixel graphs (A²GNN). See ``docs/method.md`` for the method."""

import ctypes
import os
import sys

# OpenMP threads that spin while waiting stall every small parallel op when cores are shared
# (5-10x slower epochs measured on a loaded 2-core machine). Must be set before torch loads;
# an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _keep_freed_memory() -> None:
    """Ask glibc to reuse freed memory instead of returning it to the kernel.

    Propagation allocates and frees the same large tensors every epoch; with glibc's defaults
    each of them is a fresh ``mmap`` whose pages the kernel faults in and zeroes again (a third
    of the CPU time went to the kernel in a GrabCut-set run). Same effect as the environment
    variables ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>``; skipped when either is set
    or the C library is not glibc.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_MAX_" in os.environ \
            or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, 2**30)
    except (OSError, AttributeError):
        pass


_keep_freed_memory()

__version__ = "0.1.0"

"""Peak-memory measurement for the benchmarks, on CPU and CUDA alike.

Usage: ``mark = memory_mark(device)``, run the work, ``memory_increase(device, mark)`` gives the
peak usage above the mark in bytes. On CUDA that is ``torch.cuda.max_memory_allocated``; on the
CPU it is the resident set size's high-water mark (``VmHWM``), reset through
``/proc/self/clear_refs`` (Linux). ``graphwsss`` keeps freed memory in the C heap (see
``graphwsss/__init__.py``), so the heap is trimmed first: otherwise the work could reuse pages
already resident and look smaller than it is.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trim_heap() -> None:
    """Return the C heap's free pages to the kernel (glibc ``malloc_trim``)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def resident_bytes() -> int:
    """The process's resident set size now."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> bool:
    """Reset the resident-size high-water mark to the current size; ``False`` if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # 5: reset the peak resident set size (VmHWM)
        return True
    except OSError:
        return False


def peak_bytes() -> int:
    """The resident-size high-water mark (``VmHWM``; ``ru_maxrss`` where that is missing)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_method(device: torch.device) -> str:
    """How :func:`memory_increase` measures on ``device``."""
    if device.type == "cuda":
        return "cuda_max_allocated"
    return "rss_hwm" if reset_peak() else "unavailable"


def memory_mark(device: torch.device) -> int | None:
    """Reset the peak and return the current usage (bytes); ``None`` if the peak cannot be
    reset (then no increase can be measured)."""
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    trim_heap()
    return resident_bytes() if reset_peak() else None


def memory_increase(device: torch.device, mark: int | None) -> int | None:
    """Peak usage since :func:`memory_mark` minus the usage then (bytes, ``>= 0``)."""
    if mark is None:
        return None
    synchronize(device)
    if device.type == "cuda":
        return max(torch.cuda.max_memory_allocated(device) - mark, 0)
    return max(peak_bytes() - mark, 0)


def run_case_if_asked(args, run_case: Callable[[dict], dict]) -> bool:
    """Benchmarks time each case in a fresh subprocess started with ``--case JSON``: set the
    thread count (``--threads`` or the case's ``threads``), run it, print its result as one JSON
    line, and return ``True``; ``False`` in the parent process (no ``--case``)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.case:
        return False
    case = json.loads(args.case)
    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    print(json.dumps(run_case(case)))
    return True


def run_in_subprocess(script: str, case: dict, timeout: float, wait_policy: str) -> dict:
    """Run ``script --case JSON`` in a fresh Python process (its peak memory is its own) and
    return the JSON result it prints last, or ``{"error": ...}`` on timeout or failure.
    ``wait_policy`` sets ``OMP_WAIT_POLICY`` for it, unless ``"inherit"``."""
    command = [sys.executable, os.path.abspath(script), "--case", json.dumps(case)]
    environment = dict(os.environ)
    if wait_policy != "inherit":
        environment["OMP_WAIT_POLICY"] = wait_policy
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=environment)
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {timeout:.0f} s")
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return dict(error=lines[-1] if lines else f"exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])

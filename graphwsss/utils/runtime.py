"""Device selection, seeding and logging shared by every stage."""

from __future__ import annotations

import logging
import os
import random
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when present, else CPU; pass other names through."""
    import torch     # here, not at module level: the CLI's logger must not load torch

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was asked for but CUDA is not available")
    return resolved


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so that runs are reproducible."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def get_logger(name: str = "graphwsss") -> logging.Logger:
    """The package logger, configured once with a plain ``time level message`` format."""
    logger = logging.getLogger(name)
    root = logging.getLogger("graphwsss")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("GRAPHWSSS_LOG_LEVEL", "INFO"))
        root.propagate = False
    return logger

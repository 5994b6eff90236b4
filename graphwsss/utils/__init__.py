"""Small shared helpers: atomic file writes, device selection, seeding, logging."""

from graphwsss.utils.io import atomic_write, atomic_path, inside
from graphwsss.utils.runtime import get_logger, resolve_device, seed_everything

__all__ = ["atomic_write", "atomic_path", "inside", "get_logger", "resolve_device",
           "seed_everything"]

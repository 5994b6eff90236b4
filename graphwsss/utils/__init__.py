"""Small shared helpers: atomic file writes, device selection, seeding, logging."""

# Loaded on first use (PEP 562), so that importing a light helper does not load torch.
from graphwsss.utils.lazy import lazy_exports

_EXPORTS = {"atomic_write": "io", "atomic_path": "io", "inside": "io", "get_logger": "runtime",
            "resolve_device": "runtime", "seed_everything": "runtime"}


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = ["atomic_write", "atomic_path", "inside", "get_logger", "resolve_device",
           "seed_everything"]

"""Small shared helpers: atomic file writes, device selection, seeding, logging."""

# Loaded on first use (PEP 562), so that importing a light helper does not load torch.
_EXPORTS = {"atomic_write": "io", "atomic_path": "io", "inside": "io", "get_logger": "runtime",
            "resolve_device": "runtime", "seed_everything": "runtime"}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value

__all__ = ["atomic_write", "atomic_path", "inside", "get_logger", "resolve_device",
           "seed_everything"]

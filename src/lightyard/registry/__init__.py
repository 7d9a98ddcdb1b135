"""The model registry: versions in BentoML's model store with checksums, stages and lineage.

`load`, `register_export` and `RegisteredModel` need torch; they are imported on first use, so the store
alone (and `lightyard models ...`) starts quickly.
"""

from typing import Any

from lightyard.registry.store import STAGES, ModelStore, Version, verify

_NEEDS_TORCH = ("RegisteredModel", "load", "register_export")
__all__ = ["STAGES", "ModelStore", "Version", "verify", *_NEEDS_TORCH]


def __getattr__(name: str) -> Any:
    if name in _NEEDS_TORCH:
        from lightyard.registry import registered

        return getattr(registered, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

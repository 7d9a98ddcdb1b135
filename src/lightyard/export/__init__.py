"""Export to ONNX, TorchScript and torch.export, each artifact verified against the eager network.

`manifest` (what an export folder holds) and `runtimes` (running an artifact) need no torch; the
exporters do and are imported on first use.
"""

from typing import Any

from lightyard.export.manifest import ExportReport
from lightyard.export.runtimes import load_artifact

_NEEDS_TORCH = {
    "FORMATS": "lightyard.export.formats",
    "export_model": "lightyard.export.exporter",
    "Parity": "lightyard.export.parity",
    "check_parity": "lightyard.export.parity",
}
__all__ = ["ExportReport", "load_artifact", *_NEEDS_TORCH]


def __getattr__(name: str) -> Any:
    if name in _NEEDS_TORCH:
        import importlib

        return getattr(importlib.import_module(_NEEDS_TORCH[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

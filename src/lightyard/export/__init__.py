"""Export to ONNX, TorchScript and torch.export, each artifact verified against the eager network.

`formats` (the table of artifact formats), `manifest` (what an export folder holds) and `runtimes`
(running an artifact) need no torch; the exporters do and are imported on first use.
"""

from lightyard.export.formats import FORMATS
from lightyard.export.manifest import ExportReport
from lightyard.export.runtimes import load_artifact
from lightyard.lazy import lazy_attributes

_NEEDS_TORCH = {
    "export_model": "lightyard.export.exporter",
    "Parity": "lightyard.export.parity",
    "check_parity": "lightyard.export.parity",
}
__all__ = ["FORMATS", "ExportReport", "load_artifact", *_NEEDS_TORCH]

__getattr__ = lazy_attributes(__name__, _NEEDS_TORCH)

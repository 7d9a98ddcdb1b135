"""Export to ONNX, TorchScript and torch.export, each artifact verified against the eager network."""

from lightyard.export.exporter import ExportReport, export_model
from lightyard.export.formats import FORMATS
from lightyard.export.parity import Parity, check_parity

__all__ = ["FORMATS", "ExportReport", "Parity", "check_parity", "export_model"]

"""lightyard's own Lightning callbacks (Lightning's built-ins are configured in conf/callbacks/)."""

from lightyard.callbacks.best_checkpoint import BestCheckpoint
from lightyard.callbacks.export import ExportCallback
from lightyard.callbacks.prediction_samples import PredictionSamples
from lightyard.callbacks.preemption import Preemption
from lightyard.callbacks.pruning import IterativePruning, StructuredPruning
from lightyard.callbacks.quantize import QuantizeCallback

__all__ = [
    "BestCheckpoint",
    "ExportCallback",
    "IterativePruning",
    "PredictionSamples",
    "Preemption",
    "QuantizeCallback",
    "StructuredPruning",
]

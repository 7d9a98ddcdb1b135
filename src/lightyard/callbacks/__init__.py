"""lightyard's own Lightning callbacks (Lightning's built-ins are configured in conf/callbacks/)."""

from lightyard.callbacks.best_checkpoint import BestCheckpoint
from lightyard.callbacks.export import ExportCallback
from lightyard.callbacks.prediction_samples import PredictionSamples

__all__ = ["BestCheckpoint", "ExportCallback", "PredictionSamples"]

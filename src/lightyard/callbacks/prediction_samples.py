"""Logs a grid of images labelled predicted/true from the first validation and test batch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lightyard.data.preprocess import PreprocessSpec
from lightyard.tracking.figures import prediction_grid_figure
from lightyard.tracking.loggers import log_figure


class PredictionSamples(L.Callback):
    """Expects the module's validation/test steps to return `{"preds": ...}` (ClassifierModule does)."""

    def __init__(self, max_images: int = 16) -> None:
        self.max_images = max_images

    def _log(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, stage: str
    ) -> None:
        if trainer.sanity_checking or not isinstance(outputs, dict) or "preds" not in outputs:
            return
        x, y = batch
        n = self.max_images
        spec = pl_module.spec
        log_figure(
            trainer,
            f"{stage}/predictions",
            lambda: prediction_grid_figure(
                denormalize(x[:n].float().cpu(), spec),
                outputs["preds"][:n].cpu(),
                y[:n].cpu(),
                spec.class_names,
            ),
        )

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if batch_idx == 0 and dataloader_idx == 0:
            self._log(trainer, pl_module, outputs, batch, "val")

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0 and dataloader_idx == 0:
            self._log(trainer, pl_module, outputs, batch, "test")


def denormalize(inputs: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """Model inputs (N×C×H×W) back to [0, 1] pixels, for the image grid."""
    mean = torch.tensor(spec.mean).view(-1, 1, 1)
    std = torch.tensor(spec.std).view(-1, 1, 1)
    return (inputs * std + mean).clamp(0, 1)

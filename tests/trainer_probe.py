"""A Lightning callback for tests that set Trainer arguments from the command line: it records what the
Trainer really did (the largest gradient after clipping, the batches each loop ran) to a JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch


class TrainerProbe(L.Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.record: dict[str, list] = {"train_batches": [], "largest_gradient": [], "val_batches": []}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        """Gradients are zeroed before the next backward, so here they are the ones the step used."""
        grads = [p.grad.abs().max() for p in pl_module.parameters() if p.grad is not None]
        self.record["train_batches"].append(trainer.global_step)
        self.record["largest_gradient"].append(float(torch.stack(grads).max()) if grads else None)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.record["val_batches"].append(0)

    def on_validation_batch_end(self, trainer: L.Trainer, *args) -> None:
        if not trainer.sanity_checking:
            self.record["val_batches"][-1] += 1

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path.write_text(json.dumps(self.record))

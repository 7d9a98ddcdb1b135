"""ExportCallback: after `trainer.test`, export the tested weights and run every artifact's parity gate."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from lightyard.export.exporter import check_formats, export_model
from lightyard.export.formats import EXPORTED
from lightyard.export.manifest import ExportReport
from lightyard.export.parity import DEFAULT_ATOL
from lightyard.tracking.loggers import log_scalars


class ExportCallback(L.Callback):
    """Exports at the end of testing, so the artifacts are the weights whose test metrics were reported
    (the best checkpoint after fit, or the checkpoint given with `train=false`).

    Runs on rank zero; the other ranks wait, so none tears down its process group mid-export. Parity
    figures go to the loggers as `export/<format>/{max_abs_diff,top1_agreement,passed}`.
    """

    def __init__(
        self,
        dirpath: str | Path,
        formats: Sequence[str] = EXPORTED,
        opset: int | None = None,
        atol: float = DEFAULT_ATOL,
        images: int = 32,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.formats = check_formats(formats)
        self.opset = opset
        self.atol = atol
        self.images = images
        self.report: ExportReport | None = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.report = export_model(
                pl_module.net,
                pl_module.spec,
                _test_images(trainer, self.images),
                self.dirpath,
                net_config=dict(pl_module.hparams.get("net_config") or {}),
                formats=self.formats,
                opset=self.opset,
                atol=self.atol,
            )
            log_scalars(trainer, _parity_scalars(self.report))
        trainer.strategy.barrier("exported")


def _test_images(trainer: L.Trainer, count: int) -> torch.Tensor:
    """The first `count` images of the test loader, as the model sees them."""
    loaders = trainer.test_dataloaders
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    batches, total = [], 0
    for images, _ in loader:
        batches.append(images)
        total += len(images)
        if total >= count:
            break
    return torch.cat(batches)[:count]


def _parity_scalars(report: ExportReport) -> dict[str, float]:
    scalars = {}
    for fmt, entry in report.formats.items():
        scalars[f"export/{fmt}/passed"] = float(entry["passed"])
        if "parity" in entry:
            scalars[f"export/{fmt}/max_abs_diff"] = entry["parity"]["max_abs_diff"]
            scalars[f"export/{fmt}/top1_agreement"] = entry["parity"]["top1_agreement"]
    return scalars

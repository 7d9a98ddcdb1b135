"""QuantizeCallback: INT8 variants of the tested weights, chosen on the validation split and gated on the
full test split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L

from lightyard.callbacks.compression import CompressionStep, full_split
from lightyard.compress.gate import DEFAULT_MAX_DROP
from lightyard.compress.quantization import RUNTIMES, check_mode, quantize_export, quantize_lineage
from lightyard.cpu import scheme_candidates
from lightyard.export.manifest import ExportReport
from lightyard.tracking.loggers import log_scalars


class QuantizeCallback(CompressionStep):
    """Runs after testing and after the export step, on the weights that were tested (the best
    checkpoint): writes the INT8 formats of `runtimes` (ONNX Runtime, torch-native) into the export
    folder, each kept only if it loses at most `max_drop` accuracy points against FP32.

    Calibration batches come from the train split with the evaluation transform (no augmentation). The
    ONNX Runtime scheme fields left None are chosen for this host's CPU (`lightyard.cpu`).
    Runs on rank zero; the other ranks wait.
    """

    def __init__(
        self,
        dirpath: str | Path,
        mode: str = "static",
        calibration_batches: int = 32,
        runtimes: Sequence[str] = RUNTIMES,
        max_drop: float = DEFAULT_MAX_DROP,
        activation_type: str | None = None,
        weight_type: str | None = None,
        per_channel: bool | None = None,
        reduce_range: bool | None = None,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.mode = check_mode(mode)
        self.calibration_batches = calibration_batches
        self.runtimes = list(runtimes)
        self.max_drop = max_drop
        self.schemes = scheme_candidates(
            activation_type=activation_type,
            weight_type=weight_type,
            per_channel=per_channel,
            reduce_range=reduce_range,
        )
        self.parents: list[str] = []
        self.calibrated = 0
        self.report: ExportReport | None = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            static = self.mode == "static"
            calibration = trainer.datamodule.calibration_batches(self.calibration_batches) if static else []
            self.calibrated = len(calibration)  # the train split may hold fewer batches than asked
            self.report = quantize_export(
                pl_module.net,
                pl_module.spec,
                self.dirpath,
                net_config=dict(pl_module.hparams.get("net_config") or {}),
                mode=self.mode,
                calibration=calibration,
                val=full_split(trainer, "val"),
                test=full_split(trainer),
                max_drop=self.max_drop,
                runtimes=self.runtimes,
                schemes=self.schemes,
            )
            log_scalars(trainer, self._scalars())
        trainer.strategy.barrier("quantized")

    def _results(self) -> dict[str, dict]:
        if self.report is None:
            return {}
        return self.report.int8

    def _scalars(self) -> dict[str, float]:
        scalars = {}
        for name, entry in self._results().items():
            scalars[f"quantize/{name}/passed"] = float(entry["passed"])
            if "accuracy" in entry:
                scalars[f"quantize/{name}/accuracy"] = entry["accuracy"]["accuracy"]
                scalars[f"quantize/{name}/acc_drop"] = entry["accuracy"]["drop"]
                scalars[f"quantize/{name}/top1_agreement"] = entry["accuracy"]["top1_agreement"]
        return scalars

    def verdict(self) -> str:
        lines = []
        for name, entry in self._results().items():
            if entry["passed"]:
                lines.append(f"{name} passed: {entry['accuracy']['drop']:+.2f} points")
            else:
                lines.append(f"{name} rejected: {entry.get('error', '')}")
        return f"{self.mode} INT8 quantization: " + ("; ".join(lines) or "not run")

    def lineage_step(self) -> dict:
        return quantize_lineage(self.mode, self.calibrated, self.max_drop, self.report)

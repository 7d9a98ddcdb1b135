"""What the compression callbacks share, and the report a compression run ends with."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch import nn

from lightyard.compress.gate import AccuracyGate, predict
from lightyard.compress.measure import Row, eager_runner
from lightyard.compress.report import markdown_table, measure_variants, write_report
from lightyard.export.exporter import cpu_float_copy
from lightyard.models.loading import TrainedNet
from lightyard.tracking.loggers import log_scalars, tensorboard_logger

log = logging.getLogger("lightyard")


def full_split(trainer: L.Trainer, split: str = "test") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every batch of the `val` or `test` split, on the CPU. From the data module, not the trainer's
    loaders: under DDP those hold only this rank's shard."""
    loader = trainer.datamodule.val_dataloader() if split == "val" else trainer.datamodule.test_dataloader()
    return [(images.float(), labels) for images, labels in loader]


class CompressionStep(L.Callback):
    """A callback that changes the model (pruning, quantization): it says how, for the registry's lineage,
    and whether the result may be registered at all."""

    parents: list[str]  # registry tags or checkpoints the compressed model started from

    def lineage_step(self) -> dict:
        raise NotImplementedError

    def refusal(self) -> str | None:
        """Why the model must not be registered (over the accuracy-drop limit), or None."""
        return None

    def verdict(self) -> str:
        """One line for the report: what the step's gate found."""
        raise NotImplementedError


class PruningStep(CompressionStep):
    """A pruning callback: it keeps the network before pruning as the reference the gate compares to.
    With a `parent` (registry tag or checkpoint), `train()` loads it into `parent_net` before fit."""

    method: str
    max_drop: float
    parent: str | None = None
    parent_net: TrainedNet | None = None
    reference: str = "the network before pruning"
    reference_net: nn.Module | None = None
    gate: AccuracyGate | None = None

    def check_against_reference(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The accuracy gate: pruned vs unpruned network on the full test split (rank zero)."""
        if self.reference_net is None or not trainer.is_global_zero:
            return
        test = full_split(trainer)
        reference = predict(eager_runner(self.reference_net), test)
        pruned = predict(eager_runner(cpu_float_copy(pl_module.net)), test)
        self.gate = AccuracyGate(
            reference.accuracy,
            pruned.accuracy,
            pruned.agreement(reference),
            len(reference.labels),
            self.max_drop,
        )
        log_scalars(
            trainer,
            {
                "prune/reference_acc": reference.accuracy,
                "prune/acc_drop": self.gate.drop,
                "prune/top1_agreement": self.gate.top1_agreement,
            },
        )

    def refusal(self) -> str | None:
        if self.gate is None or self.gate.passed:
            return None
        return f"{self.method} pruning failed the accuracy gate: {self.gate.summary()}"

    def verdict(self) -> str:
        if self.gate is None:
            return f"{self.method} pruning: no unpruned reference to compare with (resumed after pruning)"
        outcome = "passed" if self.gate.passed else "FAILED (not registered)"
        return (
            f"{self.method} pruning {outcome} the accuracy gate against {self.reference}: "
            f"{self.gate.summary()}"
        )


class CompressionReport(L.Callback):
    """After testing, export and quantization: `report.md`, the accuracy/latency plot and the TensorBoard
    text of every variant of the run, timed with the same thread count."""

    def __init__(
        self, run_dir: str | Path, export_dir: str | Path, threads: int = 2, repeats: int = 20
    ) -> None:
        self.run_dir = Path(run_dir)
        self.export_dir = Path(export_dir)
        self.threads = threads
        self.repeats = repeats
        self.rows: list[Row] = []

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.rows = self._measure(trainer, pl_module)
            title = f"Compression report: {type(pl_module.net).__name__}, {self.threads} threads"
            path = write_report(self.run_dir, title, self.rows, self._notes(trainer))
            logger = tensorboard_logger(trainer)
            if logger is not None:
                table = markdown_table(self.rows)
                logger.experiment.add_text("compression/report", table, trainer.global_step)
            log.info(f"compression report: {path}")
        trainer.strategy.barrier("compression_report")

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[Row]:
        pruning = next((cb for cb in trainer.callbacks if isinstance(cb, PruningStep)), None)
        return measure_variants(
            cpu_float_copy(pl_module.net),
            self.export_dir,
            full_split(trainer),
            reference_net=pruning.reference_net if pruning else None,
            label=f"pruned ({pruning.method}), eager" if pruning else "FP32 eager",
            threads=self.threads,
            repeats=self.repeats,
        )

    def _notes(self, trainer: L.Trainer) -> list[str]:
        notes = [f"latency: median of {self.repeats} calls after warm-up; throughput at batch 32"]
        for callback in trainer.callbacks:
            if isinstance(callback, CompressionStep):
                notes.append(callback.verdict())
        return notes

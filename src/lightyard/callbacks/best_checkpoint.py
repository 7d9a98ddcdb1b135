"""best.ckpt: the epoch with the best validation score, ties broken by a second metric."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """A `ModelCheckpoint` for the single best epoch by `monitor`, where ties go to the lower `tiebreak`.

    Validation accuracy on a few hundred images saturates: several epochs share the top score, and the
    first of them is usually an early one, trained at a high learning rate, that does worse on unseen data.
    Among epochs with equal `monitor`, this keeps the one with the lower `tiebreak` (validation loss).
    """

    def __init__(self, *args: Any, tiebreak: str = "val/loss", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.save_top_k != 1:
            raise ValueError("BestCheckpoint keeps exactly one checkpoint: leave save_top_k at 1")
        self.tiebreak = tiebreak
        self.best_tiebreak = math.inf

    def check_monitor_top_k(self, trainer: L.Trainer, current: torch.Tensor | None = None) -> bool:
        if super().check_monitor_top_k(trainer, current):
            return True
        if current is None or self.best_model_score is None:
            return False
        tie = float(current) == float(self.best_model_score)
        value = trainer.callback_metrics.get(self.tiebreak)
        better = tie and value is not None and float(value) < self.best_tiebreak
        return trainer.strategy.reduce_boolean_decision(better)

    def _update_best_and_save(
        self, current: torch.Tensor, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]
    ) -> None:
        value = monitor_candidates.get(self.tiebreak)
        self.best_tiebreak = float(value) if value is not None else math.inf
        super()._update_best_and_save(current, trainer, monitor_candidates)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_tiebreak": self.best_tiebreak}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_tiebreak = state_dict.get("best_tiebreak", math.inf)

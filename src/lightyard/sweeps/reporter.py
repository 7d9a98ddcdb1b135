"""The trial side of a sweep: a Lightning callback that reports the optimised metric to the study after
every validation epoch and stops training when the pruner says so.

Only rank zero talks to the database; the verdict is broadcast so that every DDP rank stops after the
same epoch. The verdict is also written to the trial's row (`pruned_epoch`), which is how the sweeping
process and `train()` learn of it, even when training ran in spawned workers or a SLURM job.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L

from lightyard.errors import UserError
from lightyard.sweeps.pruners import build_pruner
from lightyard.sweeps.study import EPOCHS, PRUNED_EPOCH, open_storage

log = logging.getLogger("lightyard")


class TrialReporter(L.Callback):
    def __init__(self, storage: str, study_name: str, trial: int, monitor: str, pruner: Any = None) -> None:
        self.storage, self.study_name, self.number = storage, study_name, trial
        self.monitor, self.pruner = monitor, pruner
        self._trial = None  # opened on rank zero when training starts: spawned workers open their own

    def _open(self):
        import optuna

        study = optuna.load_study(
            study_name=self.study_name,
            storage=open_storage(self.storage, heartbeat_s=None, grace_s=None),
            pruner=build_pruner(self.pruner),
        )
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, self.number)
        return optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                raise UserError(
                    f"optimized_metric={self.monitor} is not logged during validation: use one of "
                    f"{', '.join(sorted(trainer.callback_metrics))}"
                )
            self._trial = self._trial or self._open()
            epoch = trainer.current_epoch
            value = float(value)
            if math.isfinite(value):  # Optuna refuses NaN; such an epoch is simply not reported
                self._trial.report(value, step=epoch)
            self._trial.set_user_attr(EPOCHS, epoch + 1)
            prune = self._trial.should_prune()
            if prune:
                self._trial.set_user_attr(PRUNED_EPOCH, epoch)
                log.info(f"trial {self.number} pruned after epoch {epoch}: {self.monitor}={value:.4f}")
        if trainer.world_size > 1:
            prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            trainer.should_stop = True

    def pruned_epoch(self) -> int | None:
        """The epoch after which this trial was pruned, read from its row (any process may ask)."""
        trial = self._trial or self._open()
        return trial.study._storage.get_trial_user_attrs(trial._trial_id).get(PRUNED_EPOCH)

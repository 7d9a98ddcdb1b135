"""Preemption on SLURM: a job warned that it is about to be stopped checkpoints where it is, is requeued,
and the requeued job resumes from that step.

SLURM warns a job with a signal some time before it preempts it or its time runs out (submitit asks for
SIGUSR2 `signal_delay_s` ahead). submitit's own handler requeues the job and exits at once, and
Lightning's requeue handler (SIGUSR1) saves from inside the signal handler, which can meet the other
ranks in the middle of a collective. Here the handler only takes note; at the end of the step every rank
agrees, `last.ckpt` is written (atomically) with the step in progress, and then rank zero hands over to
the handler that was there before (submitit's: it resubmits the same job and requeues it) or, in a plain
`sbatch` job, runs `scontrol requeue` itself. The requeued job reruns into the same run dir, where
`train(cfg)` finds `last.ckpt` and continues at its epoch and step.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path

import lightning as L

log = logging.getLogger("lightyard")


class Preemption(L.Callback):
    def __init__(self, dirpath: str | Path, signal_name: str = "SIGUSR2") -> None:
        self.dirpath = Path(dirpath)
        self.signal = signal.Signals[signal_name]
        self.requested = False
        self.active = False  # on SLURM, where the handler is installed: the same on every rank
        self._before: object = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "SLURM_JOB_ID" in os.environ and threading.current_thread() is threading.main_thread():
            self._before = signal.signal(self.signal, self._take_note)
            self.active = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has restored the loops by now: the epoch and step the run goes on from, which the SLURM
        # tests compare with the ones the preempted run saved
        if trainer.ckpt_path and trainer.is_global_zero:
            log.info(f"resumed at epoch {trainer.current_epoch} step {trainer.global_step}")

    def _take_note(self, signum: int, frame: object) -> None:
        self.requested = True
        log.warning(f"{self.signal.name} received: checkpointing after this step, then requeueing")

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if not self.active or not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        last, partial = self.dirpath / "last.ckpt", self.dirpath / "last.ckpt.part"
        trainer.save_checkpoint(partial)  # every rank takes part; rank zero writes
        if trainer.is_global_zero:
            os.replace(partial, last)
            log.warning(f"checkpointed epoch {trainer.current_epoch} step {trainer.global_step} to {last}")
        trainer.strategy.barrier("preemption checkpoint")
        if trainer.is_global_zero:
            self._requeue()
        raise SystemExit(0)  # the other ranks: the requeue stops the job, whose rerun resumes

    def _requeue(self) -> None:
        if callable(self._before):  # submitit's handler: saves the resubmission, requeues, exits
            self._before(self.signal, None)
            return
        job = os.environ["SLURM_JOB_ID"]
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        target = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else job
        subprocess.run(["scontrol", "requeue", target], check=True, timeout=60)
        log.warning(f"requeued SLURM job {target}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active:
            signal.signal(self.signal, self._before if self._before is not None else signal.SIG_DFL)
            self.active = False

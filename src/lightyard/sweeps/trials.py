"""The trial loop every sweep worker runs: ask the study for a trial, run it as a Hydra job, tell the
study how it ended, until the study has `n_trials` finished trials.

Workers share nothing but the database, so the same loop runs in the sweeping process, in local worker
processes (`hydra.sweeper.n_jobs=N`) and in SLURM jobs. Each worker asks for a new trial as soon as its
previous one ends: no batch waits for its slowest trial. A running trial records a heartbeat; one whose
worker died is marked FAIL (at once when that worker ran on this machine, otherwise once its heartbeat is
`grace_s` old) and does not count. In a SLURM job of several tasks (DDP ranks), rank zero asks and the
other ranks run the trial it was given, with the same parameters.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, run_job
from hydra.types import HydraContext
from omegaconf import DictConfig, open_dict

from lightyard.errors import UserError, first_line
from lightyard.io import process_alive
from lightyard.sweeps.space import SearchSpace, as_override
from lightyard.sweeps.study import ERROR, RUN_DIR, open_storage

log = logging.getLogger("lightyard.sweeps")
OWNER = "lightyard:owner"  # host:pid of the worker running a trial, to fail it at once if that pid died
SURPLUS = "lightyard:surplus"  # asked in the same instant as another worker's last trial: never run
ASSIGNED = "lightyard:assigned:{job}:{index}"  # study attr: the trial rank zero of a SLURM job runs next
FINISHED = ("COMPLETE", "PRUNED")


@dataclass
class StudyPlan:
    """What every worker needs to know of the sweep, small enough to pickle to a SLURM job."""

    study_name: str
    storage: str
    direction: str
    n_trials: int
    max_failures: int | None
    sampler: dict[str, Any] | None
    pruner: Any
    heartbeat_s: int
    grace_s: int
    started: datetime = field(default_factory=datetime.now)


def trial_overrides(plan: StudyPlan, space: SearchSpace, params: dict[str, Any], number: int) -> list[str]:
    """A trial's overrides: the fixed ones, its sampled values, then where it reports (`optuna.*`)."""
    where = {"study_name": plan.study_name, "storage": plan.storage, "trial": number}
    return [*space.overrides(params), *(f"optuna.{key}={as_override(value)}" for key, value in where.items())]


class TrialLoop:
    """One worker: `loop(worker)` runs trials until the study is done; returns how many it ran."""

    def __init__(
        self,
        plan: StudyPlan,
        space: SearchSpace,
        config: DictConfig,
        hydra_context: HydraContext,
        task_function: Callable[[DictConfig], Any],
    ) -> None:
        self.plan, self.space, self.config = plan, space, config
        self.hydra_context = hydra_context
        # The undecorated task: a trial's `UserError` becomes its FAIL record instead of ending the worker.
        self.task_function = getattr(task_function, "__wrapped__", task_function)

    def __call__(self, worker: int = 0) -> int:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        rank, job = int(os.environ.get("SLURM_PROCID", 0)), os.environ.get("SLURM_JOB_ID", "")
        storage = open_storage(self.plan.storage, self.plan.heartbeat_s, self.plan.grace_s)
        study = optuna.load_study(
            study_name=self.plan.study_name, storage=storage, sampler=self._sampler(worker, storage)
        )
        if rank > 0:
            return self._follow(study, job)
        ran = 0
        while (trial := self._next_trial(study)) is not None:
            if job:
                self._assign(study, job, ran, trial.number)
            self._run(study, trial)
            ran += 1
        if job:
            self._assign(study, job, ran, -1)
        return ran

    def _sampler(self, worker: int, storage) -> Any:
        """The configured sampler, seeded apart for each worker and each run of the sweep, so that
        workers and a resumed sweep do not sample the same points again."""
        from hydra.utils import instantiate

        config = dict(self.plan.sampler or {"_target_": "optuna.samplers.TPESampler"})
        if config.get("seed") is not None:
            study_id = storage.get_study_id_from_name(self.plan.study_name)
            config["seed"] = int(config["seed"]) + 1000 * worker + len(storage.get_all_trials(study_id))
        return instantiate(config)

    def _next_trial(self, study):
        """A new trial, or None once the study has `n_trials` finished trials (or too many failures)."""
        from optuna.trial import TrialState

        while True:
            self._fail_dead_trials(study)
            trials = study.get_trials(deepcopy=False)
            finished = sum(t.state.name in FINISHED for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if finished >= self.plan.n_trials or self._too_many_failures(trials):
                return None
            if finished + running >= self.plan.n_trials:
                time.sleep(1)  # the last trials run elsewhere: one of them may still fail
                continue
            trial = study.ask(self.space.distributions)
            storage, trial_id = study._storage, trial._trial_id
            storage.set_trial_system_attr(trial_id, OWNER, f"{socket.gethostname()}:{os.getpid()}")
            ahead = [
                t
                for t in study.get_trials(deepcopy=False)
                if t.number < trial.number and (t.state.name in FINISHED or t.state == TrialState.RUNNING)
            ]
            if len(ahead) >= self.plan.n_trials:  # another worker asked in the same instant
                storage.set_trial_system_attr(trial_id, SURPLUS, True)
                study.tell(trial, state=TrialState.FAIL)
                continue
            return trial

    def _too_many_failures(self, trials) -> bool:
        limit = self.plan.max_failures
        return limit is not None and len(failures(trials, self.plan.started)) > limit

    def _fail_dead_trials(self, study) -> None:
        """Running trials whose worker is gone: those of dead processes on this machine at once, others
        once their heartbeat is older than the grace period."""
        from optuna.exceptions import ExperimentalWarning
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        host = socket.gethostname()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner_host, _, pid = str(trial.system_attrs.get(OWNER, "")).rpartition(":")
            if owner_host == host and pid.isdigit() and not process_alive(int(pid)):
                study._storage.set_trial_user_attr(trial._trial_id, ERROR, "its worker process died")
                study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        with warnings.catch_warnings():  # "experimental" since Optuna 2.9; the heartbeat needs it
            warnings.simplefilter("ignore", ExperimentalWarning)
            fail_stale_trials(study)

    def _run(self, study, trial) -> None:
        """Run one trial as a Hydra job in this process and record how it ended."""
        from optuna.storages._heartbeat import get_heartbeat_thread
        from optuna.trial import TrialState

        overrides = trial_overrides(self.plan, self.space, trial.params, trial.number)
        run_dir = Path(str(self.config.hydra.sweep.dir)) / str(trial.number)
        trial.set_user_attr(RUN_DIR, str(run_dir))
        log.info(f"trial {trial.number}: {' '.join(overrides[len(self.space.fixed) : -3])}")
        with get_heartbeat_thread(trial._trial_id, study._storage):
            result = self._run_job(overrides, trial.number)
        pruned = study._storage.get_trial_user_attrs(trial._trial_id).get("pruned_epoch")
        if result.status == JobStatus.COMPLETED and pruned is not None:
            frozen = study.tell(trial, state=TrialState.PRUNED)
        elif result.status == JobStatus.COMPLETED and _is_number(result.return_value):
            frozen = study.tell(trial, float(result.return_value))
        else:
            error = self._error(result, run_dir)
            trial.set_user_attr(ERROR, error)
            frozen = study.tell(trial, state=TrialState.FAIL)
        self._progress(study, frozen)

    def _run_job(self, overrides: list[str], number: int) -> JobReturn:
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config.hydra.job):
            sweep_config.hydra.job.id = os.environ.get("SLURM_JOB_ID", str(number))
            sweep_config.hydra.job.num = number
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    @staticmethod
    def _error(result: JobReturn, run_dir: Path) -> str:
        """A failed trial's one line; a traceback, if it was not a `UserError`, goes to its run dir."""
        error = result._return_value
        if result.status == JobStatus.COMPLETED:
            return f"the task returned {error!r}, not a number: check optimized_metric"
        if isinstance(error, UserError):
            return str(error)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.log").write_text("".join(traceback.format_exception(error)))
        return f"{first_line(error)} (traceback in {run_dir / 'error.log'})"

    def _progress(self, study, trial) -> None:
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state.name in FINISHED for t in trials)
        best = ""
        if any(t.state.name == "COMPLETE" for t in trials):
            best = f"; best {study.best_value:.4f} (trial {study.best_trial.number})"
        log.info(f"{outcome(trial)}; {finished}/{self.plan.n_trials} finished{best}")

    def _assign(self, study, job: str, index: int, number: int) -> None:
        key = ASSIGNED.format(job=job, index=index)
        study._storage.set_study_system_attr(study._study_id, key, number)

    def _follow(self, study, job: str) -> int:
        """A SLURM task other than rank zero: run, as a DDP rank, each trial rank zero was given."""
        index = 0
        while True:
            key = ASSIGNED.format(job=job, index=index)
            while (number := study._storage.get_study_system_attrs(study._study_id).get(key)) is None:
                time.sleep(0.5)
            if number < 0:
                return index
            trial = study._storage.get_trial(
                study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
            )
            self._run_job(trial_overrides(self.plan, self.space, trial.params, number), number)
            index += 1


def outcome(trial) -> str:
    """How a finished trial ended, as the sweep's progress lines say it."""
    value = f" {trial.value:.4f}" if trial.value is not None else ""
    error = f": {trial.user_attrs.get(ERROR)}" if trial.state.name == "FAIL" else ""
    return f"trial {trial.number} {trial.state.name}{value}{error}"


def failures(trials, since: datetime) -> list:
    """Trials that failed in this run of the sweep (not the one a kill left, nor surplus asks)."""
    return [
        t
        for t in trials
        if t.state.name == "FAIL"
        and not t.system_attrs.get(SURPLUS)
        and t.datetime_start is not None
        and t.datetime_start >= since
    ]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

"""The Hydra sweeper behind `python train.py -m hparams_search=optuna`, on a current Optuna.

It checks everything it can before the first trial (the storage, the pruner, the search space, the keys
each trial overrides), opens or continues the study, and runs `n_jobs` workers of the trial loop
(`lightyard.sweeps.trials`): in this process when one worker will do and the launcher is Hydra's basic
one, else as jobs of a submitit launcher (local processes, or SLURM jobs with `submitit_slurm`). At the
end it writes `optimization_results.yaml` and, with `register.enabled=true`, registers the best trial's
model, once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.errors import ConfigCompositionException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from lightyard.errors import UserError, exit_on_user_error
from lightyard.sweeps.pruners import check_pruner
from lightyard.sweeps.space import SearchSpace, parse_space
from lightyard.sweeps.study import (
    ERROR,
    GRACE_S,
    HEARTBEAT_S,
    REGISTRATION_FILE,
    RUN_DIR,
    default_storage,
    open_storage,
    redact,
)
from lightyard.sweeps.trials import FINISHED, StudyPlan, TrialLoop, failures, outcome, trial_overrides

log = logging.getLogger("lightyard.sweeps")
RESULTS_FILE = "optimization_results.yaml"
REGISTERED = "lightyard:registered_trial"  # study attr: the trial whose model the sweep registered


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        study_name: str | None = None,
        storage: str | None = None,
        direction: str = "maximize",
        n_trials: int = 20,
        n_jobs: int = 1,
        sampler: Mapping[str, Any] | None = None,
        pruner: str | Mapping[str, Any] | None = "median",
        max_failures: int | None = 3,
        heartbeat_s: int = HEARTBEAT_S,
        grace_s: int = GRACE_S,
        params: Mapping[str, str] | None = None,
    ) -> None:
        def plain(value: Any) -> Any:
            return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

        self.plan = StudyPlan(
            study_name=study_name or "",
            storage=storage or "",
            direction=str(direction),
            n_trials=int(n_trials),
            max_failures=None if max_failures is None else int(max_failures),
            sampler=plain(sampler),
            pruner=plain(pruner),
            heartbeat_s=int(heartbeat_s),
            grace_s=int(grace_s),
        )
        self.n_jobs = int(n_jobs)
        self.params = plain(params) or {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        HydraConfig.instance().set_config(config)  # for ${hydra:...} in paths.log_dir, as in a job
        choices = config.hydra.runtime.choices
        self.plan.study_name = self.plan.study_name or f"{choices.get('data')}-{choices.get('model/net')}"
        self.plan.storage = self.plan.storage or default_storage(config.paths.log_dir, self.plan.study_name)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    @exit_on_user_error
    def sweep(self, arguments: list[str]) -> float | None:
        plan = self.plan
        _check_settings(plan, self.n_jobs)
        space = parse_space(self.params, arguments)
        self._check_trial_config(space)
        study = _open_study(plan)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        done = sum(t.state.name in FINISHED for t in study.get_trials(deepcopy=False))
        log.info(
            f"study {plan.study_name} in {redact(plan.storage)}: {done}/{plan.n_trials} trials finished, "
            f"{max(plan.n_trials - done, 0)} to run with {self.n_jobs} worker(s); run dirs in {sweep_dir}/"
        )
        started = time.monotonic()
        self._run_workers(TrialLoop(plan, space, self.config, self.hydra_context, self.task_function))
        wall = time.monotonic() - started
        trials = study.get_trials(deepcopy=False)
        failed = failures(trials, plan.started)
        if plan.max_failures is not None and len(failed) > plan.max_failures:
            last = failed[-1]
            raise UserError(
                f"{len(failed)} trials failed (hydra.sweeper.max_failures={plan.max_failures}); the last, "
                f"trial {last.number}: {last.user_attrs.get(ERROR, 'no error recorded')}"
            )
        results = _results(study, plan, wall)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
        if results.get("best_trial") is None:
            log.info(f"no trial completed; results in {sweep_dir / RESULTS_FILE}")
            return None
        log.info(
            f"best trial {results['best_trial']}: {results['best_value']:.4f} "
            f"{' '.join(f'{k}={v}' for k, v in results['best_params'].items())}; "
            f"run dir {results['best_run_dir']}"
        )
        _register_best(study, plan)
        log.info(
            f"results in {sweep_dir / RESULTS_FILE}; trials: lightyard sweeps show {plan.study_name}; "
            f"tensorboard --logdir {sweep_dir}"
        )
        return results["best_value"]

    def _check_trial_config(self, space: SearchSpace) -> None:
        """Compose one trial's config before any trial runs: a key the config lacks fails here, in one
        line, not in every trial."""
        overrides = trial_overrides(self.plan, space, space.first_point(), 0)
        try:
            self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        except ConfigCompositionException as err:
            cause = err.__cause__ or err
            key = getattr(cause, "full_key", None)
            reason = f"{key} is not a setting of this config" if key else str(cause).strip().splitlines()[0]
            raise UserError(
                f"a trial's config cannot be composed: {reason} "
                "(check hydra.sweeper.params and the overrides)"
            ) from None

    def _run_workers(self, loop: TrialLoop) -> None:
        """One worker in this process with Hydra's basic launcher; otherwise `n_jobs` jobs of a
        submitit launcher (its local one if none was chosen), while this process reports progress."""
        launcher = self.launcher
        if not hasattr(launcher, "run_workers"):
            if self.n_jobs == 1:
                loop(0)
                return
            launcher = self._local_launcher()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                launcher.run_workers(loop, self.n_jobs)
            except BaseException as err:  # reported by the main thread
                errors.append(err)

        thread = threading.Thread(target=run, name="sweep-workers", daemon=True)
        thread.start()
        _report_progress(self.plan, thread)
        if errors:
            raise errors[0]

    def _local_launcher(self):
        """Local worker processes through submitit, as `hydra/launcher=submitit_local` would start."""
        from hydra_plugins.lightyard_launchers import LocalLauncher

        launcher = LocalLauncher(
            submitit_folder=f"{self.config.hydra.sweep.dir}/.submitit/%j",
            timeout_min=7 * 24 * 60,
            nodes=1,
            tasks_per_node=1,
            gpus_per_node=0,
            name=str(self.config.hydra.job.name),
        )
        launcher.setup(hydra_context=self.hydra_context, task_function=self.task_function, config=self.config)
        return launcher


def _check_settings(plan: StudyPlan, n_jobs: int) -> None:
    if plan.direction not in ("maximize", "minimize"):
        raise UserError(f"hydra.sweeper.direction={plan.direction}: use maximize or minimize")
    if plan.n_trials < 0 or n_jobs < 1:
        raise UserError("hydra.sweeper.n_trials must be ≥ 0 and hydra.sweeper.n_jobs ≥ 1")
    check_pruner(plan.pruner)


def _open_study(plan: StudyPlan):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(plan.storage, plan.heartbeat_s, plan.grace_s)
    try:
        study = optuna.create_study(
            study_name=plan.study_name, storage=storage, direction=plan.direction, load_if_exists=True
        )
    except Exception as err:  # the server refused, or the file is not an Optuna database
        raise UserError(f"cannot open study {plan.study_name} in {redact(plan.storage)}: {err}") from None
    if study.direction.name.lower() != plan.direction:
        raise UserError(
            f"study {plan.study_name} was created to {study.direction.name.lower()}, not {plan.direction}: "
            "give hydra.sweeper.study_name a new name"
        )
    return study


def _report_progress(plan: StudyPlan, workers: threading.Thread) -> None:
    """While workers run elsewhere, one line each time a trial ends (they log to their own files)."""
    import optuna

    study = optuna.load_study(
        study_name=plan.study_name, storage=open_storage(plan.storage, heartbeat_s=None, grace_s=None)
    )
    seen: set[int] = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    while workers.is_alive():
        workers.join(timeout=2)
        ended = [
            t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.number not in seen
        ]
        for trial in ended:
            seen.add(trial.number)
            log.info(f"{outcome(trial)} ({trial.user_attrs.get(RUN_DIR)})")


def _results(study, plan: StudyPlan, wall_s: float) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for trial in trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    results: dict[str, Any] = {
        "name": "optuna",
        "study": plan.study_name,
        "storage": redact(plan.storage),
        "direction": plan.direction,
        "n_trials": plan.n_trials,
        "states": states,
        "wall_s": round(wall_s, 3),
        "trial_s": round(
            sum(_duration(t) for t in trials if t.datetime_start and t.datetime_start >= plan.started), 3
        ),
        "best_trial": None,
    }
    if any(t.state.name == "COMPLETE" for t in trials):
        best = study.best_trial
        results.update(
            best_trial=best.number,
            best_value=float(best.value),
            best_params=dict(best.params),
            best_run_dir=best.user_attrs.get(RUN_DIR),
        )
    return results


def _duration(trial) -> float:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def _register_best(study, plan: StudyPlan) -> None:
    """The best trial's model, registered once, its study and trial in the lineage; only if its trials
    registered (`register.enabled=true`), which in a sweep means leaving the record in their run dir."""
    best = study.best_trial
    record_file = Path(str(best.user_attrs.get(RUN_DIR))) / REGISTRATION_FILE
    if not record_file.is_file():
        if any(
            (Path(str(t.user_attrs.get(RUN_DIR))) / REGISTRATION_FILE).is_file()
            for t in study.get_trials(deepcopy=False)
        ):
            log.info(
                f"not registered: the best trial {best.number} left no {REGISTRATION_FILE} "
                "(its gate refused it)"
            )
        return
    registered = study._storage.get_study_system_attrs(study._study_id).get(REGISTERED)
    if registered == best.number:  # a rerun of a finished study: its best is in the registry already
        log.info(f"the best trial {best.number} was registered by an earlier run of this sweep")
        return
    from lightyard.registry import register_run

    record = json.loads(record_file.read_text())
    step = {"step": "sweep", "study": plan.study_name, "trial": best.number, "storage": redact(plan.storage)}
    record["lineage"]["steps"].append(step)
    log.info(register_run(record))
    study._storage.set_study_system_attr(study._study_id, REGISTERED, best.number)

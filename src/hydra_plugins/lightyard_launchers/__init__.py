"""Hydra's submitit launchers with a failed job said in one line (`lightyard.launchers`), which can also
run an Optuna sweep's workers as their jobs (`run_workers`). Hydra takes launchers from the
`hydra_plugins` namespace only, hence this module."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, setup_globals
from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from lightyard.errors import exit_on_user_error
from lightyard.launchers import checked_launch, submitted


class _Workers:
    """Runs `worker(index)` as the launcher's jobs instead of one Hydra job per override list: submitit
    pickles the launcher itself and calls it on the node, so the worker travels with it."""

    _worker: Callable[[int], Any] | None = None

    def run_workers(self, worker: Callable[[int], Any], count: int) -> list[Any]:
        self._worker = worker
        try:
            jobs = [[f"worker={index}"] for index in range(count)]
            return submitted(super().launch, self.params["submitit_folder"], jobs, 0)
        finally:
            self._worker = None

    def __call__(self, sweep_overrides, job_dir_key, job_num, job_id, singleton_state):
        if self._worker is None:
            return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        Singleton.set_state(singleton_state)
        setup_globals()
        return self._worker(job_num)


class SlurmLauncher(_Workers, submitit_launcher.SlurmLauncher):
    @exit_on_user_error
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return checked_launch(super().launch, self.params["submitit_folder"], job_overrides, initial_job_idx)


class LocalLauncher(_Workers, submitit_launcher.LocalLauncher):
    @exit_on_user_error
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return checked_launch(super().launch, self.params["submitit_folder"], job_overrides, initial_job_idx)

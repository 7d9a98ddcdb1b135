"""Hydra's submitit launchers with a failed job said in one line (`lightyard.launchers`). Hydra takes
launchers from the `hydra_plugins` namespace only, hence this module."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from lightyard.errors import exit_on_user_error
from lightyard.launchers import checked_launch


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    @exit_on_user_error
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return checked_launch(super().launch, self.params["submitit_folder"], job_overrides, initial_job_idx)


class LocalLauncher(submitit_launcher.LocalLauncher):
    @exit_on_user_error
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return checked_launch(super().launch, self.params["submitit_folder"], job_overrides, initial_job_idx)

"""A sweep's study: where it is stored, how it is opened, and what each trial records in it.

Everything a sweep knows lives in the study's database (SQLite by default, any SQLAlchemy URL): the
sweeping process, its worker processes, SLURM jobs and DDP rank zero all read and write the same rows,
so a sweep can be killed and run again, and `lightyard sweeps` can show one from another shell.
Optuna is imported here, not torch.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from lightyard.errors import UserError, first_line

if TYPE_CHECKING:
    import optuna

# What each trial records as user attributes (shown by `lightyard sweeps show` and optuna-dashboard).
RUN_DIR = "run_dir"  # the trial's run dir: checkpoints/, tensorboard/, metrics.json, export/
EPOCHS = "epochs"  # validation epochs the trial ran before it ended or was pruned
PRUNED_EPOCH = "pruned_epoch"  # the epoch after which the pruner stopped the trial
ERROR = "error"  # a failed trial's one-line error
REGISTRATION_FILE = "registration.json"  # what a trial leaves in its run dir for the sweep to register
HEARTBEAT_S = 10  # a running trial's heartbeat; a trial silent for GRACE_S is marked FAIL
GRACE_S = 30


def default_storage(log_dir: str | Path, study_name: str) -> str:
    """`sqlite:///<log_dir>/optuna/<study>.db`: one file per study, beside its sweep dir."""
    return f"sqlite:///{Path(log_dir).resolve() / 'optuna' / f'{study_name}.db'}"


def storage_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for a server database)."""
    prefix = "sqlite:///"
    return Path(url.removeprefix(prefix)) if url.startswith(prefix) else None


def open_storage(url: str, heartbeat_s: int | None = HEARTBEAT_S, grace_s: int | None = GRACE_S):
    """The study database at `url`, created if it is a SQLite file that does not exist yet; one line
    naming the URL when it cannot be reached or read."""
    import optuna

    if path := storage_path(url):
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (
            warnings.catch_warnings()
        ):  # the heartbeat is "experimental" since Optuna 2.9: it is what we want
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=heartbeat_s,
                grace_period=grace_s,
            )
    except Exception as err:  # SQLAlchemy's errors for a bad URL, a missing driver, a refused connection
        raise UserError(
            f"cannot open the study storage {redact(url)}: {first_line(err)} "
            "(check hydra.sweeper.storage: a SQLAlchemy URL such as sqlite:///logs/optuna/NAME.db)"
        ) from None


def load_study(name: str, url: str) -> optuna.Study:
    """An existing study, or one line saying which studies the storage holds."""
    import optuna

    storage = open_storage(url, heartbeat_s=None, grace_s=None)
    names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
    if name not in names:
        have = f"it holds {', '.join(sorted(names))}" if names else "it holds no study"
        raise UserError(f"no study named '{name}' in {redact(url)}: {have}")
    return optuna.load_study(study_name=name, storage=storage)


def redact(url: str) -> str:
    """A storage URL without its password, for messages, logs and the registry."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: the caller's message says so
        return url

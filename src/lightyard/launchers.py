"""What Hydra's submitit launchers (`hydra/launcher=submitit_slurm`, `submitit_local`) report of a failed
job, in one line; the launchers themselves are in `hydra_plugins.lightyard_launchers`, where Hydra finds
plugins.

A job that fails on the cluster reaches the submitting shell through submitit as a multi-line error
with the job's traceback or stderr inside; a job whose task function raised comes back as a failed
`JobReturn` that Hydra turns into a traceback. Here each becomes `error: job 12 failed: <the
job's own one-line error, its last exception line, or the state Slurm ended it in>; its log: <path>`,
exit 2. Waiting stays bounded: submitit reads the job's state from `sacct` at most every half of the
job's age (10 minutes at most), so a job that dies early is noticed early.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus

from lightyard.errors import UserError, first_line

_JOB = re.compile(r"Job (?P<id>[\w-]+) \(task: ?(?P<task>\d+)\)")
_LOG = re.compile(r"(?P<path>\S*/(?P<id>[\w-]+?)_(?P<task>\d+)_log\.err)")
_EXCEPTION = re.compile(r"^[\w.]*(Error|Exception|Interrupt|Exit)\b.*")
# submitit: "... has not produced any output (state: X)", "Error stream produced:", this rule, the log
_STREAM_RULE = "-" * 40


def job_failure(message: str, folder: str) -> str:
    """The one line a user needs from submitit's report of a failed job: which job, why, where its log
    is; or, when nothing ran, why the submission was refused."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    log, job = _LOG.search(message), _JOB.search(message)
    if not (log or job):  # sbatch refused the jobs: its own message is the reason
        return f"the jobs could not be submitted: {lines[-1] if lines else 'no reason given'}"
    # submitit's own words come first, then a rule, then the job's stream: reasons are read from the stream
    _, rule, stream = message.partition(_STREAM_RULE)
    job_lines = [line.strip() for line in (stream if rule else message).splitlines() if line.strip()]
    ours = [line.removeprefix("error: ") for line in job_lines if line.startswith("error: ")]
    raised = [line for line in job_lines if _EXCEPTION.match(line)]
    state = re.search(r"state: (\w+)", message)
    reason = (ours or raised or [f"it ended {state[1] if state else 'without a result'}"])[-1]
    found = log or job
    where = (
        log["path"]
        if log
        else str(Path(folder.replace("%j", job["id"])) / f"{job['id']}_{job['task']}_log.err")
    )
    return f"job {found['id']} failed: {reason}; its log: {where}"


def submitted(launch, folder: str, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """`launch(job_overrides, initial_job_idx)` of a submitit launcher, a job that ended without a result
    (or a refused submission) as a `UserError`."""
    import submitit

    try:
        return launch(job_overrides, initial_job_idx)
    except (
        submitit.core.utils.UncompletedJobError,
        submitit.core.utils.FailedSubmissionError,
        submitit.core.utils.FailedJobError,  # a sweep worker that raised (Hydra jobs return their errors)
    ) as err:
        raise UserError(job_failure(str(err), folder)) from None


def checked_launch(launch, folder: str, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
    """`submitted(...)` of Hydra jobs, those whose task failed as `UserError`s too."""
    returns: Sequence[JobReturn] = submitted(launch, folder, job_overrides, initial_job_idx)
    for number, job in enumerate(returns, start=initial_job_idx):
        if job.status == JobStatus.FAILED:
            raise UserError(f"job #{number} failed: {first_line(job._return_value)}; its log: {folder}")
    return returns

"""What users run on SLURM, run for real: jobs submitted through Hydra's submitit launcher to the two-node
cluster of `tests/slurm_cluster.py` (`make test-cluster`; CI runs it after `make test`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightyard.models.checkpoints import read_checkpoint
from lightyard.registry import ModelStore
from tests import slurm_cluster
from tests.conftest import ALWAYS_PRUNE, NOISE, QUIET, ROOT, run_train

pytestmark = pytest.mark.slurm
FAST = ["trainer.accelerator=cpu", "trainer.max_epochs=2", *QUIET]
STEPS_PER_EPOCH = 20  # digits: 1,257 training images in global batches of 64


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    """The cluster's client environment; brought up for these tests and taken down after them."""
    try:
        slurm_cluster.up()
    except slurm_cluster.ClusterError as err:
        if os.environ.get("CI"):
            pytest.fail(f"the SLURM test cluster did not start: {err}")
        pytest.skip(f"no SLURM test cluster here: {err}")
    yield slurm_cluster.environment(slurm_cluster.DEFAULT_DIR)
    slurm_cluster.down()
    deadline = time.monotonic() + 10  # what down() killed may take a moment to be gone
    while (left := slurm_cluster.left_running(slurm_cluster.DEFAULT_DIR)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == []  # nothing outlives the tests


def submit(args: list[str], tmp_path: Path, env: dict[str, str], timeout: int = 420):
    """`python train.py -m hydra/launcher=submitit_slurm ARGS` from the submitting shell."""
    tmp_path.mkdir(exist_ok=True)
    env = {**env, "BENTOML_HOME": os.environ["BENTOML_HOME"]}  # this test's store, not the session's
    return run_train(["-m", "hydra/launcher=submitit_slurm", f"paths.log_dir={tmp_path / 'logs'}", *args],
                     cwd=tmp_path, env=env, timeout=timeout)  # fmt: skip


def sweep_dir(tmp_path: Path) -> Path:
    (folder,) = (tmp_path / "logs" / "multirun").iterdir()
    return folder


def submitted(sweep: Path) -> set[str]:
    """The SLURM job ids of a sweep, from the logs submitit keeps per job."""
    return {log.parent.name for log in (sweep / ".submitit").glob("*/*_log.out")}


def settled(
    job_id: str, env: dict[str, str], seconds: float = 60.0, duplicates: bool = False
) -> list[dict[str, str]]:
    """sacct's rows of a job once none is still running: submitit returns as soon as a job has written its
    result, a moment before Slurm records the job's end."""
    deadline = time.monotonic() + seconds
    while True:
        rows = accounting(job_id, env, duplicates)
        busy = any(row["State"] in ("PENDING", "RUNNING", "COMPLETING") for row in rows)
        if not busy or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def accounting(job_id: str, env: dict[str, str], duplicates: bool = False) -> list[dict[str, str]]:
    """sacct's rows of a job: its allocation and each step (with `duplicates`, its requeued runs too)."""
    command = [
        "sacct",
        "-j",
        job_id,
        "-o",
        "JobID,State,NNodes,NodeList",
        "--parsable2",
        *(["-D"] * duplicates),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    header, *rows = result.stdout.splitlines()
    return [dict(zip(header.split("|"), row.split("|"), strict=True)) for row in rows]


def test_a_multi_node_job_trains_one_model(
    cluster: dict[str, str], tmp_path: Path, single_process_acc: float
) -> None:
    """The default run (30 epochs) as one 2-node job: one model, with the single-process accuracy."""
    args = ["trainer.num_nodes=2", "trainer.devices=1", "trainer.accelerator=cpu", *QUIET]
    result = submit(args, tmp_path, cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    run = sweep / "0"
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == ["0", "multirun.yaml"]
    log = (run / "train.log").read_text()
    assert "distributed: SLURMEnvironment, world size 2 = 2 node(s) × 1 device(s)" in log
    (job_id,) = submitted(sweep)
    allocation = settled(job_id, cluster)[0]
    assert (allocation["State"], allocation["NNodes"]) == ("COMPLETED", "2")
    assert allocation["NodeList"] == "lightyard-node[1-2]"
    metrics = json.loads((run / "metrics.json").read_text())
    assert abs(metrics["test/acc"] - single_process_acc) <= NOISE, (metrics["test/acc"], single_process_acc)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert len(ModelStore().versions("digits-cnn")) == 1


def test_a_sweep_runs_one_job_per_point(cluster: dict[str, str], tmp_path: Path) -> None:
    lrs = ["0.01", "0.003"]
    result = submit([f"model.optimizer.lr={','.join(lrs)}", "register.enabled=false", "export.enabled=false",
                     *FAST], tmp_path, cluster)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    for number, lr in enumerate(lrs):
        run = sweep / str(number)
        assert (run / "metrics.json").is_file()
        assert f"lr: {lr}" in (run / ".hydra" / "config.yaml").read_text()
    (array,) = {job_id.split("_")[0] for job_id in submitted(sweep)}
    states = {row["JobID"]: row["State"] for row in settled(array, cluster)}
    assert states[f"{array}_0"] == states[f"{array}_1"] == "COMPLETED"


def test_a_failing_job_is_one_line_in_bounded_time(cluster: dict[str, str], tmp_path: Path) -> None:
    started = time.monotonic()
    result = submit(["data=imagefolder", f"data.root={tmp_path / 'missing'}", *FAST], tmp_path, cluster)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: job ") and "data root" in last and "does not exist" in last, last
    assert Path(last.rsplit("its log: ", 1)[1]).is_file()
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 180


def test_a_job_killed_on_the_cluster_is_one_line_in_bounded_time(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    """A job that dies without writing a result (cancelled here, as an administrator or a node failure
    would end it) is reported from Slurm's accounting, not waited for."""
    tmp_path.mkdir(exist_ok=True)
    started = time.monotonic()
    submitting = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=submitit_slurm",
         f"paths.log_dir={tmp_path / 'logs'}", "trainer.accelerator=cpu", *QUIET],
        cwd=tmp_path, env=cluster, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("logs/multirun/*/0/checkpoints/last.ckpt")):  # it is training
        assert time.monotonic() < deadline and submitting.poll() is None, "the job did not start training"
        time.sleep(0.5)
    (job_id,) = submitted(sweep_dir(tmp_path))
    subprocess.run(["scancel", job_id], env=cluster, check=True)
    cancelled = time.monotonic()
    _, stderr = submitting.communicate(timeout=300)
    # submitit looks at sacct at most every half of the job's age, then waits a little for a result file
    assert time.monotonic() - cancelled < (cancelled - started) / 2 + 60
    assert submitting.returncode == 2, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: job {job_id}") and "CANCELLED" in last, last
    assert "Traceback" not in stderr


def test_a_refused_submission_is_one_line(cluster: dict[str, str], tmp_path: Path) -> None:
    result = submit(["hydra.launcher.partition=nowhere", *FAST], tmp_path, cluster, timeout=120)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: the jobs could not be submitted: sbatch: error:") and "partition" in last
    ), last
    assert "Traceback" not in result.stderr


def test_a_preempted_job_checkpoints_requeues_and_resumes(cluster: dict[str, str], tmp_path: Path) -> None:
    """Signalled the way the cluster warns before preempting (submitit's SIGUSR2), a 2-node job saves the
    step in progress, is requeued and finishes its epochs from there; it ends as an unpreempted twin does."""
    epochs = 10
    args = [
        "trainer.num_nodes=2",
        "trainer.devices=1",
        "trainer.accelerator=cpu",
        f"trainer.max_epochs={epochs}",
        "export.enabled=false",
        "register.enabled=false",
        *QUIET,
    ]
    twin = submit(args, tmp_path / "twin", cluster)
    assert twin.returncode == 0, twin.stderr[-3000:]

    preempted = tmp_path / "preempted"
    preempted.mkdir()
    submitting = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=submitit_slurm",
         f"paths.log_dir={preempted / 'logs'}", *args],
        cwd=preempted, env=cluster, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not list(preempted.glob("logs/multirun/*/0/checkpoints/last.ckpt")):  # an epoch is done
        assert time.monotonic() < deadline and submitting.poll() is None, "the job did not start training"
        time.sleep(0.5)
    (job_id,) = submitted(sweep_dir(preempted))
    subprocess.run(["scancel", "--signal=USR2", job_id], env=cluster, check=True)
    _, stderr = submitting.communicate(timeout=420)
    assert submitting.returncode == 0, stderr[-3000:]

    run = sweep_dir(preempted) / "0"
    log = (run / "train.log").read_text()
    saved = re.search(r"checkpointed epoch (\d+) step (\d+) to ", log)
    assert saved and 0 < int(saved[2]) < epochs * STEPS_PER_EPOCH, log[-2000:]
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in log
    resumed = re.search(r"resumed at epoch (\d+) step (\d+)", log)
    assert resumed and resumed.groups() == saved.groups(), log[-2000:]
    rows = [row for row in settled(job_id, cluster, duplicates=True) if row["JobID"] == job_id]
    states = [row["State"] for row in rows]
    assert "REQUEUED" in states and states[-1] == "COMPLETED", states
    assert {row["NNodes"] for row in rows} == {"2"}, rows  # the rerun is a 2-node job too
    # the steps before the signal plus those after the resume point are the planned ones: none ran twice
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == epochs * STEPS_PER_EPOCH
    finished = json.loads((run / "metrics.json").read_text())
    unpreempted = json.loads((sweep_dir(tmp_path / "twin") / "0" / "metrics.json").read_text())
    assert abs(finished["test/acc"] - unpreempted["test/acc"]) <= NOISE, (finished, unpreempted)


def test_a_plain_sbatch_job_is_requeued_by_the_callback(cluster: dict[str, str], tmp_path: Path) -> None:
    """Without submitit, the preemption callback requeues the job itself; the rerun of the batch script
    resumes in the same run dir."""
    epochs, run = 8, tmp_path / "run"
    script = tmp_path / "train.sbatch"
    script.write_text(
        "#!/bin/bash\n#SBATCH --nodes=1 --ntasks-per-node=1 --signal=USR2@60 --requeue\n"
        f"#SBATCH --output={tmp_path}/slurm-%j.out\n"
        f"srun {sys.executable} {ROOT / 'train.py'} trainer.accelerator=cpu trainer.max_epochs={epochs} "
        f"hydra.run.dir={run} export.enabled=false register.enabled=false {' '.join(QUIET)}\n"
    )
    submitted_job = subprocess.run(["sbatch", "--parsable", str(script)], env=cluster, capture_output=True,
                                   text=True, check=True, cwd=tmp_path)  # fmt: skip
    job_id = submitted_job.stdout.strip()
    deadline = time.monotonic() + 180
    while not (run / "checkpoints" / "last.ckpt").is_file():
        assert time.monotonic() < deadline, "the job did not start training"
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR2", job_id], env=cluster, check=True)
    deadline = time.monotonic() + 400
    while accounting(job_id, cluster)[0]["State"] != "COMPLETED":
        assert time.monotonic() < deadline, accounting(job_id, cluster, duplicates=True)
        time.sleep(2)
    log = (run / "train.log").read_text()
    assert "requeued SLURM job" in log and f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in log
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == epochs * STEPS_PER_EPOCH
    assert json.loads((run / "metrics.json").read_text())["test/acc"] > 0.8


def test_sweep_workers_in_slurm_jobs_pull_trials_from_a_mariadb_study(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    """hparams_search=optuna with n_jobs=2 on the cluster: two SLURM jobs ask the study on the cluster's
    MariaDB for trials until it has n_trials, each trial reporting and pruned from inside its job."""
    import optuna

    url = slurm_cluster.study_database()
    name = f"slurm-{tmp_path.name}"
    study = [f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={name}"]
    args = ["hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", ALWAYS_PRUNE, "trainer.max_epochs=4"]
    result = submit(["hparams_search=optuna", *study, *args, "trainer.accelerator=cpu",
                     "export.enabled=false", *QUIET], tmp_path, cluster)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert [t.state.name for t in trials] == ["PRUNED"] * 4
    assert all(t.user_attrs["epochs"] == 2 for t in trials)
    jobs = submitted(sweep_dir(tmp_path))
    assert len(jobs) == 2
    assert len({t.system_attrs["lightyard:owner"] for t in trials}) == 2  # both jobs ran trials
    for job_id in jobs:
        assert settled(job_id, cluster)[0]["State"] == "COMPLETED"


def test_a_two_node_trial_runs_every_rank_with_the_trial_rank_zero_was_given(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    """A sweep job of 2 tasks (DDP over 2 nodes): rank zero asks the study, rank one runs the same trial;
    a second trial reuses the job. Ranks with different parameters would not train together."""
    import optuna

    url = slurm_cluster.study_database()
    name = f"ddp-{tmp_path.name}"
    study = [f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={name}"]
    result = submit(["hparams_search=optuna", *study, "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=none",
                     "trainer.num_nodes=2", "trainer.devices=1", *FAST, "export.enabled=false",
                     "register.enabled=false"], tmp_path, cluster)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    for trial in trials:
        log = (Path(trial.user_attrs["run_dir"]) / "train.log").read_text()
        assert "world size 2 = 2 node(s) × 1 device(s)" in log
    (job_id,) = submitted(sweep_dir(tmp_path))
    assert settled(job_id, cluster)[0]["NNodes"] == "2"

"""Hydra multirun with the basic launcher, an Optuna sweep, and the submitit local launcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lightyard.launchers import job_failure
from lightyard.registry import ModelStore
from tests.conftest import QUIET, assert_ok, assert_user_error, run_train

QUICK = ["trainer.max_epochs=1", *QUIET]


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())


def test_basic_multirun_makes_one_dir_per_job(tmp_path: Path) -> None:
    result = run_train(
        ["-m", "model.optimizer.lr=1e-3,3e-3", f"hydra.sweep.dir={tmp_path}", *QUICK], cwd=tmp_path
    )
    assert_ok(result)
    jobs = job_dirs(tmp_path)
    assert [j.name for j in jobs] == ["0", "1"]
    lrs = []
    for job in jobs:
        assert "test/acc" in json.loads((job / "metrics.json").read_text())
        lrs.append(yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["model"]["optimizer"]["lr"])
    assert lrs == [1e-3, 3e-3]


@pytest.mark.launchers
def test_submitit_local_launcher(tmp_path: Path) -> None:
    result = run_train(
        ["-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path}", *QUICK],
        cwd=tmp_path,
        timeout=400,
    )
    assert_ok(result)
    (job,) = job_dirs(tmp_path)
    assert "test/acc" in json.loads((job / "metrics.json").read_text())
    assert list(
        (tmp_path / ".submitit").iterdir()
    )  # submitit's own job folder: it really went through submitit


@pytest.mark.launchers
def test_a_failed_submitit_job_is_one_line(tmp_path: Path) -> None:
    """What a job leaves behind (its own error line, its log) reaches the submitting shell as one line,
    the same way on SLURM (tests/test_slurm.py) as with local processes."""
    result = run_train(
        ["-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path}", "data=imagefolder",
         f"data.root={tmp_path / 'missing'}"],
        cwd=tmp_path,
        timeout=400,
    )  # fmt: skip
    last = assert_user_error(result, "failed: data root", "does not exist", "its log: ")
    assert result.returncode == 2 and Path(last.rsplit("its log: ", 1)[1]).is_file()


def test_a_job_that_left_no_result_is_named_by_its_state() -> None:
    """submitit's report of a job that ended without a result (cancelled, its node lost) heads the job's
    stream with "Error stream produced:": the reason is Slurm's state, or an exception the stream shows."""
    report = (
        "Job 5 (task: 0) with path /runs/.submitit/5/5_0_result.pkl\n"
        "has not produced any output (state: CANCELLED)\nError stream produced:\n" + "-" * 40 + "\n"
        "srun: got SIGCONT\n"
        "slurmstepd-node1: error: *** JOB 5 ON node1 CANCELLED AT 2026-11-27T22:52:41 ***\n"
    )
    where = "its log: /runs/.submitit/5/5_0_log.err"
    assert job_failure(report, "/runs/.submitit/%j") == f"job 5 failed: it ended CANCELLED; {where}"
    crashed = report.replace("srun: got SIGCONT", "Traceback (most recent call last):\nRuntimeError: boom")
    assert job_failure(crashed, "/runs/.submitit/%j") == f"job 5 failed: RuntimeError: boom; {where}"


@pytest.mark.launchers
def test_ddp_spawn_inside_a_multirun(tmp_path: Path) -> None:
    result = run_train(
        ["-m", "trainer=ddp_spawn", "trainer.accelerator=cpu", f"hydra.sweep.dir={tmp_path}", *QUICK],
        cwd=tmp_path,
    )
    assert_ok(result)
    assert "Starting with 2 processes" in result.stdout + result.stderr
    (job,) = job_dirs(tmp_path)
    assert json.loads((job / "metrics.json").read_text())["test/acc"] > 0.5
    # the export ran in a spawned worker; the main process registered what it wrote
    assert "passed their gates" in result.stdout
    assert [v.stage for v in ModelStore().versions("digits-cnn")] == ["none"]

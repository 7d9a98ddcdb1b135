"""Hydra multirun with the basic launcher, an Optuna sweep, and the submitit local launcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

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


def test_optuna_sweep_runs_trials_and_reports_the_best(tmp_path: Path) -> None:
    result = run_train(
        ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
         f"hydra.sweep.dir={tmp_path}", *QUICK],
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(result)
    assert len(job_dirs(tmp_path)) == 2
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"model.optimizer.lr", "model.net.width", "data.batch_size"}
    accuracies = [json.loads((j / "metrics.json").read_text())["val/acc_best"] for j in job_dirs(tmp_path)]
    assert best["best_value"] == max(accuracies)


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

"""`python train.py -m hparams_search=optuna`: a study in a real SQLite database, continued by the same
command, trials pruned after a validation epoch, failures recorded, a killed sweep resumed, the best trial
registered once, parallel workers and DDP trials. The slower ones (marker `sweeps`) run in `make
test-cluster`; SLURM workers on a MariaDB study are in tests/test_slurm.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import optuna
import pytest
import yaml

from lightyard.registry import ModelStore
from tests.conftest import ALWAYS_PRUNE, QUIET, ROOT, assert_ok, assert_user_error, run_train
from tests.tensorboard_reader import hparams_of, read_events

FAST = ["trainer.max_epochs=2", "export.enabled=false", *QUIET]


def sweep(tmp_path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The sweep command as a user types it, run from `tmp_path` (logs/ and the study land there)."""
    return run_train(["hparams_search=optuna", *args], cwd=tmp_path, timeout=timeout)


def study(tmp_path: Path, name: str = "digits-cnn") -> optuna.Study:
    storage = f"sqlite:///{tmp_path / 'logs' / 'optuna' / f'{name}.db'}"
    return optuna.load_study(study_name=name, storage=storage)


def states(tmp_path: Path, name: str = "digits-cnn") -> list[str]:
    return [trial.state.name for trial in study(tmp_path, name).trials]


def results(tmp_path: Path) -> dict:
    (path,) = (tmp_path / "logs" / "multirun").glob("*/optimization_results.yaml")
    return yaml.safe_load(path.read_text())


@pytest.mark.sweeps
def test_a_sweep_keeps_its_study_registers_its_best_trial_and_logs_every_trial_to_one_logdir(
    tmp_path: Path,
) -> None:
    result = sweep(tmp_path, "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner=none",
                   "trainer.max_epochs=2", "export.formats=[onnx]", *QUIET)  # fmt: skip
    assert_ok(result)
    trials = study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    best = max(trials, key=lambda t: t.value)
    found = results(tmp_path)
    assert found["best_trial"] == best.number and found["best_value"] == best.value
    assert set(found["best_params"]) == {"model.optimizer.lr", "model.net.width", "data.batch_size"}
    (sweep_dir,) = (tmp_path / "logs" / "multirun").iterdir()
    for trial in trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        assert run_dir == sweep_dir / str(trial.number)
        assert trial.user_attrs["epochs"] == 2 and sorted(trial.intermediate_values) == [0, 1]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["val/acc_best"] == pytest.approx(trial.value)
        # the sweep dir is the one TensorBoard logdir: each trial's HParams carry its sampled values
        values, _ = hparams_of(read_events(run_dir / "tensorboard"))
        assert values["model/optimizer/lr"] == pytest.approx(trial.params["model.optimizer.lr"])
        assert values["model/net/width"] == trial.params["model.net.width"]
    # one version for the sweep, the best trial's, its study and trial in the lineage
    (version,) = ModelStore().versions("digits-cnn")
    steps = version.metadata["lineage"]["steps"]
    assert steps[0]["run_dir"] == best.user_attrs["run_dir"]
    assert {"step": "sweep", "study": "digits-cnn", "trial": best.number}.items() <= steps[-1].items()
    assert "lightyard sweeps show digits-cnn" in result.stderr + result.stdout


@pytest.mark.sweeps
def test_the_same_command_continues_the_study(tmp_path: Path) -> None:
    args = ["hydra.sweeper.pruner=none", "register.enabled=false", *FAST]
    assert_ok(sweep(tmp_path, "hydra.sweeper.n_trials=2", *args))
    first = study(tmp_path).trials
    assert_ok(sweep(tmp_path, "hydra.sweeper.n_trials=3", *args))  # runs only the difference
    trials = study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert [(t.number, t.params) for t in trials[:2]] == [(t.number, t.params) for t in first]
    assert trials[2].params != trials[0].params  # the resumed sampler does not repeat the first point
    finished = sweep(tmp_path, "hydra.sweeper.n_trials=3", *args)  # a finished study starts nothing
    assert_ok(finished)
    assert len(study(tmp_path).trials) == 3
    assert "3/3 trials finished, 0 to run" in finished.stderr + finished.stdout


@pytest.mark.sweeps
def test_pruned_trials_stop_early_keep_their_run_dir_and_count_as_finished(tmp_path: Path) -> None:
    result = sweep(tmp_path, "hydra.sweeper.n_trials=2", ALWAYS_PRUNE, "trainer.max_epochs=5",
                   "export.enabled=false", *QUIET)  # fmt: skip
    assert_ok(result)
    trials = study(tmp_path).trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    for trial in trials:
        # reported after epochs 0 and 1, pruned after 1 (the warm-up step): 2 of 5 epochs ran
        assert sorted(trial.intermediate_values) == [0, 1]
        assert trial.user_attrs["epochs"] == 2 and trial.user_attrs["pruned_epoch"] == 1
        assert trial.value == trial.intermediate_values[1]
        run_dir = Path(trial.user_attrs["run_dir"])
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
        assert "test/acc" not in json.loads((run_dir / "metrics.json").read_text())  # not tested
    assert results(tmp_path)["best_trial"] is None
    assert ModelStore().versions("digits-cnn") == []


@pytest.mark.sweeps
def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    """lr=0 is refused by the trial's own config check: FAIL with that line; the other value runs."""
    result = sweep(tmp_path, "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=none",
                   "register.enabled=false",
                   "hydra.sweeper.sampler.seed=0", "model.optimizer.lr=choice(0,0.003)", *FAST)  # fmt: skip
    assert_ok(result)
    trials = study(tmp_path).trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == 2
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert failed and all(t.params["model.optimizer.lr"] == 0 for t in failed)
    assert all("model.optimizer.lr" in t.user_attrs["error"] for t in failed)


@pytest.mark.sweeps
def test_more_failures_than_allowed_end_the_sweep_in_one_line(tmp_path: Path) -> None:
    result = sweep(tmp_path, "hydra.sweeper.n_trials=5", "hydra.sweeper.max_failures=1", "data=imagefolder",
                   f"data.root={tmp_path / 'missing'}", *FAST)  # fmt: skip
    last = assert_user_error(result, "2 trials failed (hydra.sweeper.max_failures=1)", "data root")
    assert result.returncode == 2, last
    assert states(tmp_path, "imagefolder-cnn") == ["FAIL", "FAIL"]  # the study is named <data>-<net>


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("hydra.sweeper.pruner=sometimes", ["unknown pruner 'sometimes'", "median"]),
        ("+hydra.sweeper.params.seed='interval(0.1)'", ["hydra.sweeper.params.seed",
                                                        "missing a required argument: 'end'",
                                                        "interval(low, high)"]),
        ("model.optimizer.lr=interval(0.1)", ["model.optimizer.lr=interval(0.1)", "interval(low, high)"]),
        ("hydra.sweeper.storage=mysql+pymysql://user:secret@127.0.0.1:1/studies",
         ["cannot open the study storage mysql+pymysql://user:***@127.0.0.1:1/studies"]),
        ("+hydra.sweeper.params.widht='choice(8,16)'", ["a trial's config cannot be composed",
                                                        "widht is not a setting"]),
        ("+hydra.sweeper.params.width=choice(8,16)", ["quote a search dimension"]),
        ("model.net.widht=choice(8,16)", ["model.net.widht is not a setting"]),
    ],
)  # fmt: skip
def test_bad_sweep_settings_are_one_line_before_any_trial(
    tmp_path: Path, override: str, fragments: list[str]
) -> None:
    last = assert_user_error(sweep(tmp_path, override, *FAST, timeout=120), *fragments)
    assert "secret" not in last
    assert not (tmp_path / "logs" / "multirun").exists() or not list(
        (tmp_path / "logs" / "multirun").glob("*/0")
    )


@pytest.mark.sweeps
def test_a_killed_sweep_resumes_losing_only_the_trial_in_flight(tmp_path: Path) -> None:
    """SIGKILL the sweeping process in the middle of its third trial, run the same command again: the
    two finished trials are kept, the killed one is FAIL (its process is gone), and the study ends with
    exactly n_trials finished trials."""
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.pruner=none",
            "register.enabled=false", "trainer.max_epochs=30", *QUIET, "export.enabled=false"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(ROOT / "train.py"), *args, "trainer.max_epochs=3"]
    first = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if in_the_middle_of(tmp_path, 2):
                break
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(timeout=30)
    assert states(tmp_path) == ["COMPLETE", "COMPLETE", "RUNNING"]
    assert_ok(subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300))
    trials = study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].user_attrs["error"] == "its worker process died"


def in_the_middle_of(tmp_path: Path, number: int) -> bool:
    """Trial `number` runs and has finished a validation epoch: it is truly in the middle of training."""
    if not (tmp_path / "logs" / "optuna" / "digits-cnn.db").is_file():
        return False
    url = f"sqlite:///{tmp_path / 'logs' / 'optuna' / 'digits-cnn.db'}"
    try:  # read only: creating the tables here too would race the sweeper doing it
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
        trials = optuna.load_study(study_name="digits-cnn", storage=storage).trials
    except Exception:  # the sweeper is still creating the database's tables or the study in it
        return False
    return any(t.number == number and t.state.name == "RUNNING" and t.intermediate_values for t in trials)


@pytest.mark.sweeps
def test_parallel_workers_pull_trials_until_the_study_has_n_trials(tmp_path: Path) -> None:
    """n_jobs=2: two worker processes, each asking the study for its next trial when its last one ends."""
    result = sweep(tmp_path, "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
                   "hydra.sweeper.pruner=none",
                   "register.enabled=false", *FAST, timeout=400)  # fmt: skip
    assert_ok(result)
    trials = study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    owners = {t.system_attrs["lightyard:owner"] for t in trials}
    assert len(owners) == 2  # both workers ran trials
    (sweep_dir,) = (tmp_path / "logs" / "multirun").iterdir()
    assert len(list((sweep_dir / ".submitit").glob("*/*_log.out"))) == 2
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in pairwise(spans))  # overlapped
    output = result.stdout + result.stderr
    assert all(f"trial {t.number} COMPLETE" in output for t in trials)  # the sweeping shell saw each end


@pytest.mark.sweeps
def test_a_ddp_trial_is_reported_by_rank_zero_and_pruned_on_every_rank(tmp_path: Path) -> None:
    """trainer=ddp_spawn inside a trial: rank zero reports, the verdict stops both ranks after epoch 1."""
    result = sweep(tmp_path, "hydra.sweeper.n_trials=1", ALWAYS_PRUNE, "trainer=ddp_spawn",
                   "trainer.accelerator=cpu",
                   "trainer.max_epochs=5", "export.enabled=false", *QUIET, timeout=400)  # fmt: skip
    assert_ok(result)
    assert "Starting with 2 processes" in result.stdout + result.stderr
    (trial,) = study(tmp_path).trials
    assert trial.state.name == "PRUNED" and sorted(trial.intermediate_values) == [0, 1]
    assert trial.user_attrs["epochs"] == 2
    assert "was pruned after epoch 1" in (Path(trial.user_attrs["run_dir"]) / "train.log").read_text()


def test_hydra_sweep_syntax_becomes_optuna_distributions() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from lightyard.sweeps.space import parse_space

    params = {
        "model.optimizer.lr": "tag(log, interval(0.0003, 0.03))",
        "model.net.width": "choice(16, 32)",
        "data.batch_size": "range(32, 129, 32)",
        "trainer.max_epochs": "tag(int, interval(2, 6))",
        "model.net.dropout": None,  # a search config extending another drops a key its net lacks
    }
    space = parse_space(params, ["model.net.width=choice(8,64)", "data.tag=a,b", "trainer.max_epochs=3"])
    found = space.distributions
    assert found["model.optimizer.lr"] == FloatDistribution(0.0003, 0.03, log=True)
    assert found["model.net.width"] == CategoricalDistribution([8, 64])  # the command line wins
    assert found["data.batch_size"] == IntDistribution(32, 128, step=32)
    assert found["data.tag"] == CategoricalDistribution(["a", "b"])
    assert "model.net.dropout" not in found
    assert "trainer.max_epochs" not in found and space.fixed == ["trainer.max_epochs=3"]  # fixed there
    overrides = space.overrides({"data.tag": "null", "model.optimizer.lr": 0.001})
    assert overrides == [
        "trainer.max_epochs=3",
        "data.tag='null'",
        "model.optimizer.lr=0.001",
    ]  # 'null' a string

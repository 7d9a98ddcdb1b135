"""`lightyard sweeps list|show|dashboard` through a subprocess, as a user runs them, on a real SQLite study
that optuna itself wrote: trials that completed, were pruned, failed and are still running."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import optuna
import pytest
from optuna.trial import TrialState
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import assert_ok, assert_user_error, free_port

STUDY = "digits-lr"
LR, WIDTH = "model.optimizer.lr", "model.net.width"
# (state, value, lr, width, epochs): what the fixture tells optuna, trial by trial
TRIALS = [
    ("COMPLETE", 0.25, 0.01, 32, 5),
    ("PRUNED", 0.8, 0.1, 8, 2),  # pruned after reporting 0.9, 0.8: optuna keeps the last as its value
    ("FAIL", None, 1e-4, 64, 0),
    ("COMPLETE", 0.125, 0.003, 16, 5),  # the best (minimize)
    ("RUNNING", None, 0.002, 16, None),  # asked, never told: a sweep still running it
]
OOM = "RuntimeError: CUDA out of memory"


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    """tmp_path/logs/optuna/digits-lr.db (the trials of TRIALS, minimize) and other.db (maximize)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = tmp_path / "logs" / "optuna"
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name=STUDY, storage=f"sqlite:///{folder / STUDY}.db")
    for state, value, lr, width, epochs in TRIALS:
        study.enqueue_trial({LR: lr, WIDTH: width})
        trial = study.ask()
        trial.suggest_float(LR, 1e-4, 1e-1, log=True)
        trial.suggest_int(WIDTH, 8, 64)
        trial.set_user_attr("run_dir", f"/runs/{trial.number}")
        if epochs is not None:
            trial.set_user_attr("epochs", epochs)
        if state == "COMPLETE":
            study.tell(trial, value)
        elif state == "PRUNED":
            trial.report(0.9, 0)
            trial.report(0.8, 1)
            trial.set_user_attr("pruned_epoch", 2)
            study.tell(trial, state=TrialState.PRUNED)
        elif state == "FAIL":
            trial.set_user_attr("error", OOM)
            study.tell(trial, state=TrialState.FAIL)
    other = optuna.create_study(
        study_name="other", storage=f"sqlite:///{folder}/other.db", direction="maximize"
    )
    other.tell(other.ask({"model.net.width": optuna.distributions.IntDistribution(8, 64)}), 0.9)
    return tmp_path


def lightyard(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lightyard.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def cli_json(cwd: Path, *args: str):
    result = lightyard(cwd, *args, "--json")
    assert_ok(result)
    return json.loads(result.stdout)


def test_list(studies: Path) -> None:
    listed = cli_json(studies, "sweeps", "list")
    assert [s["name"] for s in listed] == [STUDY, "other"]  # by file name
    digits, other = listed
    url = f"sqlite:///{studies / 'logs' / 'optuna' / STUDY}.db"
    assert digits == {
        "name": STUDY,
        "storage": url,
        "direction": "minimize",
        "n_trials": 5,
        "states": {"COMPLETE": 2, "PRUNED": 1, "FAIL": 1, "RUNNING": 1},
        "best_trial": 3,
        "best_value": 0.125,
    }
    assert (other["direction"], other["best_trial"], other["best_value"]) == ("maximize", 0, 0.9)
    assert cli_json(studies, "sweeps", "list", "--storage", url) == [digits]

    table = lightyard(studies, "sweeps", "list")
    assert_ok(table)
    header, *rows = table.stdout.splitlines()
    assert header.split()[:6] == ["STUDY", "DIRECTION", "COMPLETE", "PRUNED", "FAIL", "RUNNING"]
    assert rows[0].split() == [STUDY, "minimize", "2", "1", "1", "1", "3", "0.125", url]
    assert rows[1].split()[:2] == ["other", "maximize"]
    assert f"2 studies in {studies / 'logs' / 'optuna'}" in table.stdout

    empty = lightyard(studies, "sweeps", "list", "--log-dir", "nowhere")
    assert_ok(empty)
    assert (
        empty.stdout
        == f"no studies in {studies / 'nowhere' / 'optuna'}: run python train.py -m hparams_search=optuna\n"
    )
    assert cli_json(studies, "sweeps", "list", "--log-dir", "nowhere") == []
    assert not (studies / "nowhere").exists()


def test_show(studies: Path) -> None:
    shown = cli_json(studies, "sweeps", "show", STUDY)
    assert (shown["name"], shown["direction"], shown["best_trial"], shown["best_value"]) == (
        STUDY, "minimize", 3, 0.125,
    )  # fmt: skip
    assert [t["number"] for t in shown["trials"]] == [0, 1, 2, 3, 4]
    for trial, (state, value, lr, width, epochs) in zip(shown["trials"], TRIALS, strict=True):
        assert (trial["state"], trial["value"], trial["epochs"]) == (state, value, epochs)
        assert trial["params"] == {LR: pytest.approx(lr), WIDTH: width}
        assert trial["run_dir"] == f"/runs/{trial['number']}"
        assert trial["error"] == (OOM if state == "FAIL" else None)
        assert trial["pruned_epoch"] == (2 if state == "PRUNED" else None)

    table = lightyard(studies, "sweeps", "show", STUDY)
    assert_ok(table)
    lines = table.stdout.splitlines()
    assert "5 trial(s): 2 complete, 1 pruned, 1 failed, 1 running" in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("TRIAL"))
    assert lines[header].split() == ["TRIAL", "STATE", "VALUE", "EPOCHS", LR, WIDTH, "RUN", "DIR"]
    rows = [line.split() for line in lines[header + 1 : header + 6]]
    assert rows == [
        ["0", "COMPLETE", "0.25", "5", "0.01", "32", "/runs/0"],
        ["1", "PRUNED", "0.8", "2", "0.1", "8", "/runs/1"],
        ["2", "FAIL", "-", "0", "0.0001", "64", "/runs/2"],
        ["3", "COMPLETE", "0.125", "5", "0.003", "16", "/runs/3"],
        ["4", "RUNNING", "-", "-", "0.002", "16", "/runs/4"],
    ]
    assert f"trial 2 failed: {OOM}" in lines
    assert f"best: trial 3, value 0.125 (minimize): {LR}=0.003 {WIDTH}=16" in lines


def test_missing_study_or_database_is_one_line(studies: Path) -> None:
    folder = studies / "logs" / "optuna"
    for command in ("show", "dashboard"):
        result = lightyard(studies, "sweeps", command, "nope")
        assert result.returncode == 2
        assert_user_error(result, f"no study database at {folder / 'nope.db'}", f"{STUDY}.db, other.db")
    assert not (folder / "nope.db").exists()  # looking did not create it

    url = f"sqlite:///{folder / STUDY}.db"
    unknown = lightyard(studies, "sweeps", "show", "nope", "--storage", url)
    assert unknown.returncode == 2
    assert_user_error(unknown, "no study named 'nope'", f"it holds {STUDY}")

    elsewhere = lightyard(studies, "sweeps", "show", STUDY, "--log-dir", "elsewhere")
    assert elsewhere.returncode == 2
    assert_user_error(elsewhere, "holds no study database", "hparams_search=optuna")
    missing = lightyard(studies, "sweeps", "list", "--storage", "sqlite:///missing.db")
    assert missing.returncode == 2
    assert_user_error(missing, f"no study database at {studies / 'missing.db'}")
    assert not (studies / "elsewhere").exists() and not (studies / "missing.db").exists()


def test_dashboard_shows_the_study_in_a_browser(studies: Path, browser) -> None:
    port = free_port()
    log = studies / "dashboard.log"  # a file, not a pipe: an unread pipe fills and blocks the server
    server = subprocess.Popen(
        [sys.executable, "-m", "lightyard.cli", "sweeps", "dashboard", STUDY, "--port", str(port)],
        cwd=studies,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        # Ctrl-C reaches it even where pytest runs in the background with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        first = server.stdout.readline()
        url = f"http://127.0.0.1:{port}/dashboard/studies/1"
        assert f"open {url} (Ctrl-C stops it)" in first, first + log.read_text()
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/dashboard", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

        wait = WebDriverWait(browser, 30)
        browser.get(f"http://127.0.0.1:{port}/dashboard")  # the study list
        wait.until(lambda chrome: STUDY in chrome.find_element(By.TAG_NAME, "body").text)
        assert "Direction: MINIMIZE" in browser.find_element(By.TAG_NAME, "body").text
        browser.save_screenshot(str(studies / "studies.png"))

        browser.get(url)  # the printed URL: the study's overview, its best trial
        wait.until(lambda chrome: "Best Trial (number=3)" in chrome.find_element(By.TAG_NAME, "body").text)
        text = browser.find_element(By.TAG_NAME, "body").text
        assert f"Params = [{LR}: 0.003, {WIDTH}: 16]" in text
        browser.save_screenshot(str(studies / "study.png"))

        browser.get(f"{url}/trials")  # every trial, its state, and the first one's user attributes
        wait.until(lambda chrome: "5 Trials" in chrome.find_element(By.TAG_NAME, "body").text)
        text = browser.find_element(By.TAG_NAME, "body").text
        listed = "\n".join(f"Trial {number}\n{state.title()}" for number, (state, *_) in enumerate(TRIALS))
        assert listed.replace("Trial 3\nComplete", "Trial 3\nComplete\nBest Trial") in text
        assert "epochs 5\nrun_dir /runs/0" in text
        browser.save_screenshot(str(studies / "trials.png"))
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert code == 0 and "Traceback" not in log.read_text(), log.read_text()

"""Shared fixtures: the real configs, train.py in a subprocess, data sets in their on-disk formats."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from lightyard.config import CONF_DIR, compose_train

if TYPE_CHECKING:
    from selenium import webdriver

ROOT = Path(__file__).resolve().parents[1]
__all__ = ["CONF_DIR", "compose_train"]
QUIET = ["callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]
# a sweep pruner that stops every trial after its second validation epoch: pruning made deterministic
ALWAYS_PRUNE = "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:2.0,n_warmup_steps:1}"
NOISE = 2 / 270 + 1e-6  # two of the 270 digits test images: seeds alone move the default run by that much
SESSION_HOME = pytest.StashKey[Path]()  # the session's folder for its model store


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Each phase's report on the test item (`item.report_call`), for fixtures that act on failures."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def pytest_configure(config: pytest.Config) -> None:
    """The suite writes only under its temporary folders, whatever the user's shell exports: before any
    test module is imported (BentoML reads its home then) and any fixture runs (module- and
    session-scoped ones too, and the processes they start), the model store is a fresh one of the
    session's and no `LIGHTYARD_*` or `BENTOML_*` setting of the user's is seen."""
    for name in list(os.environ):
        if name.startswith(("LIGHTYARD_", "BENTOML_")):
            del os.environ[name]
    config.stash[SESSION_HOME] = Path(tempfile.mkdtemp(prefix="lightyard-tests-"))
    os.environ["BENTOML_HOME"] = str(config.stash[SESSION_HOME] / "bentoml")
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION_HOME in config.stash:
        shutil.rmtree(config.stash[SESSION_HOME], ignore_errors=True)


@pytest.fixture(autouse=True)
def bentoml_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty model store of its own (train.py registers by default)."""
    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "true")
    return home


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """One real `python train.py` (3 epochs) that exports and registers: (run dir, its store, result)."""
    root = tmp_path_factory.mktemp("trained")
    run_dir, home = root / "run", root / "bentoml"
    result = run_train(
        ["trainer.max_epochs=3", f"hydra.run.dir={run_dir}", *QUIET],
        cwd=root,
        env={"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"},
    )
    assert_ok(result)
    return run_dir, home, result


@pytest.fixture(scope="session")
def single_process_acc(tmp_path_factory: pytest.TempPathFactory) -> float:
    """The test accuracy of the default digits run (30 epochs) in one process: what the same run spread
    over two nodes must reach within `NOISE` (the 0.5-point target, judged over seeds, is
    bench/multinode_accuracy.py's)."""
    root = tmp_path_factory.mktemp("single")
    args = ["trainer.accelerator=cpu", "export.enabled=false", "register.enabled=false", *QUIET]
    result = run_train([*args, f"hydra.run.dir={root / 'run'}"], cwd=root, env={"BENTOML_HOME": str(root)})
    assert_ok(result)
    return json.loads((root / "run" / "metrics.json").read_text())["test/acc"]


@pytest.fixture
def store_copy(trained: tuple[Path, Path, subprocess.CompletedProcess], bentoml_home: Path) -> Path:
    """A private copy of the trained run's model store, as this test's `$BENTOML_HOME`."""
    shutil.copytree(trained[1], bentoml_home)
    return bentoml_home


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Screenshots of the browser tests, kept for a person to look at: under pytest's temporary folder
    (`pytest-of-$USER/pytest-current/browser0/`), never in the checkout."""
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium from Debian, driven by its chromedriver: no browser is downloaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options as ChromeOptions
    from selenium.webdriver.chrome.service import Service as ChromeService

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        reason = "headless Chromium is missing: apt-get install chromium chromium-driver (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    options = ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,800"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=ChromeService(driver), options=options)
    yield chrome
    chrome.quit()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_train(args: list[str], cwd: Path, timeout: int = 300, env: dict | None = None):
    """`python train.py ARGS` in a subprocess, as a user would run it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, (
        f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Non-zero exit, no traceback, and a last stderr line `error: ...` containing every fragment."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in last, last
    return last


def random_images(count: int, height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """Random uint8 images: enough for checks that the pipeline runs end to end."""
    rng = np.random.default_rng(seed)
    shape = (count, height, width) if channels == 1 else (count, height, width, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """CIFAR-10's python batches (pickled dicts with `data` N×3072 uint8 and `labels`), tiny."""
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(name: str, count: int, seed: int) -> None:
        images = random_images(count, 32, 32, 3, seed).transpose(0, 3, 1, 2).reshape(count, -1)
        payload = {"batch_label": name, "labels": [i % 10 for i in range(count)], "data": images}
        (folder / name).write_bytes(pickle.dumps(payload, protocol=2))

    for i in range(1, 6):
        batch(f"data_batch_{i}", 20, i)
    batch("test_batch", 20, 9)
    labels = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": labels}, protocol=2))
    return tmp_path / "cifar"


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format MNIST ships in: magic (0x08 = uint8, ndim), big-endian dims, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist_like(root: Path, folder: str, train: int = 100, test: int = 40) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", train), ("t10k", test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", random_images(count, 28, 28, 1, count))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10)
        with gzip.open(raw / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:  # as the download leaves them
            f.write((raw / f"{prefix}-images-idx3-ubyte").read_bytes())
    return root


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    return make_mnist_like(tmp_path / "mnist", "MNIST")


@pytest.fixture
def fashion_root(tmp_path: Path) -> Path:
    return make_mnist_like(tmp_path / "fashion", "FashionMNIST")


def save_image(path: Path, mode: str, size: tuple[int, int], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        image = Image.new("RGB", size, (value, 255 - value, value // 2)).convert("P", palette=Image.ADAPTIVE)
    elif mode == "RGBA":
        image = Image.new("RGBA", size, (value, value, 255 - value, 128))
    elif mode == "I;16":
        image = Image.fromarray(np.full(size[::-1], value * 257, dtype=np.uint16))
    else:
        image = Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value))
    image.save(path)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three classes of PNGs in mixed modes (L, RGB, RGBA, P, 16-bit) and sizes, no split folders."""
    root = tmp_path / "images"
    modes = ["L", "RGB", "RGBA", "P", "I;16"]
    for label, name in enumerate(["cat", "dog", "fox"]):
        for i in range(10):
            mode = modes[i % len(modes)]
            save_image(root / name / f"{i}.png", mode, (20 + i, 16 + label), 40 + 80 * label)
    return root

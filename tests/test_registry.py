"""The registry on a real BentoML model store: resolution, stages, checksums, concurrency, killed writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lightyard.errors import UserError
from lightyard.registry import ModelStore, load, register_export
from lightyard.registry.store import damaged_files

LINEAGE = {"parents": [], "steps": [{"step": "test"}]}


def register(export_dir: Path, name: str = "digits-cnn", acc: float = 0.9) -> str:
    version = register_export(
        export_dir, name, metrics={"test/acc": acc}, config={"seed": 1}, lineage=LINEAGE
    )
    return version.tag


def test_training_registered_a_complete_version(trained, store_copy: Path) -> None:
    store = ModelStore()
    (version,) = store.versions()
    assert version.name == "digits-cnn" and version.stage == "none"
    assert set(version.metadata["files"]) == {
        "model.onnx", "model.ts", "model.pt2", "model.pt", "preprocess.json", "labels.txt",
    }  # fmt: skip
    metadata = version.metadata
    assert metadata["metrics"]["test/acc"] > 0.8
    assert metadata["preprocess"]["class_names"] == [str(d) for d in range(10)]
    assert metadata["lineage"]["steps"][0]["step"] == "train"
    assert metadata["lineage"]["steps"][0]["checkpoint"].endswith("best.ckpt")
    assert {"torch", "onnxruntime", "bentoml", "lightning"} <= set(version.frameworks)
    assert metadata["git_commit"] and metadata["created"]
    for fmt in ("onnx", "torchscript", "pt2"):
        assert metadata["formats"][fmt]["parity"]["max_abs_diff"] <= 1e-4
    assert load(version.tag).config["trainer"]["max_epochs"] == 3
    assert damaged_files(version) == []


def test_bentoml_itself_reads_the_versions(trained, store_copy: Path) -> None:
    code = (
        "import bentoml\nprint([str(m.tag) for m in bentoml.models.list()], bentoml.models.get('digits-cnn'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ModelStore().versions()[0].tag in result.stdout


def test_resolution_and_promotion(trained, store_copy: Path) -> None:
    export_dir = trained[0] / "export"
    store = ModelStore()
    first = store.versions()[0].tag
    second = register(export_dir, acc=0.95)
    assert store.resolve("digits-cnn:latest").tag == second
    assert store.resolve("digits-cnn").tag == second
    assert store.resolve(first).tag == first
    with pytest.raises(UserError, match="no version of digits-cnn is in production"):
        store.resolve("digits-cnn@production")

    store.set_stage(first, "production")
    assert store.resolve("digits-cnn@production").tag == first
    promoted, demoted = store.set_stage(second, "production")
    assert promoted.stage == "production" and [v.tag for v in demoted] == [first]
    assert store.resolve("digits-cnn@production").tag == second
    assert store.resolve(first).stage == "none"
    for ref, message in [
        ("digits-cnn:nope", "has no version nope"),
        ("other:latest", "no model named 'other'"),
        ("digits-cnn@live", "unknown stage 'live'"),
    ]:
        with pytest.raises(UserError, match=message):
            store.resolve(ref)


def test_load_runs_onnx_and_the_eager_net_alike(trained, store_copy: Path) -> None:
    model = load("digits-cnn:latest")
    inputs = torch.randn(5, 1, 8, 8)
    with torch.inference_mode():
        eager = model.net()(inputs).numpy()
    session = model.onnx_session(threads=1)
    onnx_logits = session.run(["output"], {"input": inputs.numpy()})[0]
    assert np.abs(eager - onnx_logits).max() <= 1e-4
    assert model.class_names() == [str(d) for d in range(10)]
    assert model.file("pt2").name == "model.pt2"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "model.onnx is truncated"),
        (
            lambda p: p.write_bytes(bytes([p.read_bytes()[0] ^ 1]) + p.read_bytes()[1:]),
            "model.onnx was modified",
        ),
        (lambda p: p.unlink(), "model.onnx is missing"),
    ],
)
def test_load_refuses_damaged_files(trained, store_copy: Path, damage, message: str) -> None:
    version = ModelStore().versions()[0]
    damage(version.path / "model.onnx")
    with pytest.raises(UserError, match=message):
        load(version.tag)


REGISTER_MANY = """
import sys, time
from pathlib import Path
from lightyard.registry import register_export
start = Path(sys.argv[2])
while not start.exists():
    time.sleep(0.005)
for i in range(int(sys.argv[3])):
    print(register_export(sys.argv[1], "digits-cnn", metrics={}, config={}, lineage={}).tag, flush=True)
"""


def test_two_processes_register_at_once(trained, tmp_path: Path) -> None:
    start = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(REGISTER_MANY),
                str(trained[0] / "export"),
                str(start),
                "4",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(3)  # both have imported lightyard and wait for the start file
    start.touch()
    tags = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        tags += out.split()
    versions = ModelStore().versions("digits-cnn")
    assert len(tags) == 8 and sorted(tags) == sorted(v.tag for v in versions)
    assert all(damaged_files(v) == [] for v in versions)


def test_a_killed_registration_leaves_no_half_version(trained, tmp_path: Path, bentoml_home: Path) -> None:
    big_export = tmp_path / "export"
    big_export.mkdir()
    for item in (trained[0] / "export").iterdir():
        if item.is_file():
            (big_export / item.name).write_bytes(item.read_bytes())
    (big_export / "model.pt").write_bytes(os.urandom(300 * 1024 * 1024))  # a slow copy to be killed in
    start = tmp_path / "go"
    start.touch()
    staging = bentoml_home / "lightyard" / "staging"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(REGISTER_MANY), str(big_export), str(start), "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (staging.is_dir() and any(staging.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "registration never started writing"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = ModelStore()
    assert store.versions() == []
    assert not (bentoml_home / "models" / "digits-cnn").exists()
    assert any(staging.iterdir())  # the abandoned staging folder, invisible to readers

    tag = register(trained[0] / "export")
    assert [v.tag for v in store.versions()] == [tag]
    assert not any(staging.iterdir())  # cleaned up by the next registration
    load(tag)


def test_promotion_is_seen_whole(trained, store_copy: Path) -> None:
    store = ModelStore()
    first = store.versions()[0].tag
    second = register(trained[0] / "export")
    store.set_stage(first, "production")
    seen, errors, done = set(), [], threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.add(ModelStore().resolve("digits-cnn@production").tag)
            except UserError as err:
                errors.append(str(err))

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(25):
        store.set_stage(second, "production")
        store.set_stage(first, "production")
    done.set()
    reader.join()
    assert errors == [] and seen <= {first, second}
    holders = [v.tag for v in store.versions() if v.stage == "production"]
    assert holders == [first]


def test_invalid_names_are_refused(trained, store_copy: Path) -> None:
    with pytest.raises(UserError, match="invalid model name 'Digits CNN!'"):
        register(trained[0] / "export", name="Digits CNN!")

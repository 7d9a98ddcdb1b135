"""Every `lightyard` command through a subprocess, as a user runs it, including the error cases."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lightyard.registry import ModelStore, register_export
from tests.conftest import assert_ok, assert_user_error

SCRIPT = Path(sys.executable).with_name("lightyard")  # the console script pip installed


def lightyard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def cli_json(*args: str):
    result = lightyard(*args, "--json")
    assert_ok(result)
    return json.loads(result.stdout)


@pytest.fixture
def two_versions(trained, store_copy: Path) -> tuple[str, str]:
    first = ModelStore().versions()[0].tag
    second = register_export(
        trained[0] / "export",
        "digits-cnn",
        metrics={"test/acc": 0.5, "val/acc_best": 0.6},
        config={"seed": 7},
        lineage={"parents": [first], "steps": [{"step": "test"}]},
    ).tag
    return first, second


def test_list(two_versions: tuple[str, str]) -> None:
    first, second = two_versions
    listed = cli_json("models", "list")
    assert [entry["tag"] for entry in listed] == [first, second]
    for entry in listed:
        assert {"tag", "name", "version", "stage", "path", "created", "metrics"} <= set(entry)
        assert Path(entry["path"], "model.yaml").is_file()
    assert listed[1]["metrics"]["test/acc"] == 0.5
    table = lightyard("models", "list")
    assert_ok(table)
    assert first in table.stdout and second in table.stdout and "TEST/ACC" in table.stdout
    assert cli_json("models", "list", "digits-cnn") == listed
    assert_user_error(lightyard("models", "list", "nope"), "no model named 'nope'")


def test_show(two_versions: tuple[str, str]) -> None:
    first, _ = two_versions
    shown = cli_json("models", "show", first)
    metadata = shown["metadata"]
    assert shown["tag"] == first and metadata["config"]["trainer"]["max_epochs"] == 3
    assert len(metadata["files"]["model.onnx"]["sha256"]) == 64
    assert metadata["lineage"]["steps"][0]["step"] == "train"
    human = lightyard("models", "show", "digits-cnn:latest")
    assert_ok(human)
    for fragment in ("metrics:", "sha256", "lineage:", "stage: none", "max |Δ|", "config:"):
        assert fragment in human.stdout
    assert_user_error(lightyard("models", "show", "digits-cnn:nope"), "has no version nope")
    assert_user_error(lightyard("models", "show", "digits-cnn@production"), "no version of digits-cnn is in")
    assert_user_error(lightyard("models", "show", "digits-cnn@prod"), "unknown stage 'prod'")


def test_compare(two_versions: tuple[str, str]) -> None:
    first, second = two_versions
    compared = cli_json("models", "compare", first, second)
    row = compared["metrics"]["test/acc"]
    assert row["second"] == 0.5 and row["delta"] == pytest.approx(0.5 - row["first"])
    assert compared["config_changes"]["seed"] == {"first": 42, "second": 7}
    human = lightyard("models", "compare", first, second)
    assert_ok(human)
    assert "test/acc" in human.stdout and "seed" in human.stdout
    assert_user_error(lightyard("models", "compare", first, "digits-cnn:zzz"), "has no version zzz")


def test_promote_verify_delete(two_versions: tuple[str, str]) -> None:
    first, second = two_versions
    assert_ok(lightyard("models", "promote", first, "production"))
    promoted = cli_json("models", "promote", second, "production")
    assert promoted["promoted"]["stage"] == "production"
    assert [v["tag"] for v in promoted["demoted"]] == [first]
    assert cli_json("models", "show", "digits-cnn@production")["tag"] == second

    verified = lightyard("models", "verify", "digits-cnn@production")
    assert_ok(verified)
    assert "all 6 files match" in verified.stdout
    assert cli_json("models", "verify", first)["verified"] is True
    path = Path(cli_json("models", "show", first)["path"]) / "model.ts"
    path.write_bytes(path.read_bytes()[:1000])
    assert_user_error(lightyard("models", "verify", first), "model.ts is truncated")

    assert_user_error(lightyard("models", "delete", second), "is in production")
    assert_ok(lightyard("models", "delete", first))
    assert [v["tag"] for v in cli_json("models", "list")] == [second]
    assert_ok(lightyard("models", "delete", "digits-cnn@production", "--force"))
    assert cli_json("models", "list") == []
    assert_user_error(lightyard("models", "promote", second, "production"), "no model named 'digits-cnn'")
    bad_stage = lightyard("models", "promote", second, "live")
    assert bad_stage.returncode != 0 and "invalid choice" in bad_stage.stderr


def test_export_command(trained, tmp_path: Path) -> None:
    best = trained[0] / "checkpoints" / "best.ckpt"
    out = tmp_path / "exported"
    result = lightyard("export", str(best), "--formats", "onnx,torchscript", "--out", str(out))
    assert_ok(result)
    manifest = json.loads((out / "export.json").read_text())
    assert sorted(manifest["formats"]) == ["onnx", "torchscript"]
    assert all(entry["passed"] for entry in manifest["formats"].values())
    assert {"model.onnx", "model.ts", "preprocess.json", "labels.txt", "model.pt"} <= {
        p.name for p in out.iterdir()
    }
    assert (
        result.stdout.strip().splitlines()[-1] == f"exported to {out}/ (export.json has the parity figures)"
    )

    assert_user_error(
        lightyard("export", str(best), "--formats", "onnx,tflite"), "unknown export format tflite"
    )
    assert_user_error(lightyard("export", str(tmp_path / "missing.ckpt")), "does not exist")


def test_export_command_with_image_files_outside_a_run(trained, tmp_path: Path) -> None:
    """A checkpoint copied out of its run dir has no test split to use: image files stand in."""
    from PIL import Image

    from lightyard.data import DigitsDataModule

    lone = tmp_path / "elsewhere" / "model.ckpt"
    lone.parent.mkdir()
    shutil.copy(trained[0] / "checkpoints" / "best.ckpt", lone)
    assert_user_error(lightyard("export", str(lone), "--formats", "onnx"), "pass --images DIR")
    splits = DigitsDataModule().load_splits()
    images = tmp_path / "images"
    images.mkdir()
    for i in splits.test[:6]:
        Image.fromarray(splits.test_source.images[i]).save(images / f"{i}.png")
    result = lightyard(
        "export", str(lone), "--formats", "onnx", "--images", str(images), "--out", str(tmp_path / "o")
    )
    assert_ok(result)
    parity = json.loads((tmp_path / "o" / "export.json").read_text())["formats"]["onnx"]["parity"]
    assert parity["images"] == 6 and parity["passed"]

"""A real 2-process DDP run on CPU (gloo), launched by Lightning from `python train.py trainer.devices=2`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightyard.models.checkpoints import read_checkpoint
from lightyard.registry import ModelStore
from lightyard.training import train
from tests.conftest import QUIET, assert_ok, compose_train, run_train
from tests.tensorboard_reader import read_events

STEPS_PER_EPOCH = 20  # 1,257 images / global batch 64: each of 2 ranks takes 32 per step


def test_two_process_ddp_makes_one_run(tmp_path: Path) -> None:
    result = run_train(
        [
            "trainer.devices=2",
            "trainer.accelerator=cpu",
            "trainer.max_epochs=2",
            f"paths.log_dir={tmp_path}",
            *QUIET,
        ],
        cwd=tmp_path,
    )
    assert_ok(result)
    assert "distributed_backend=gloo" in result.stdout + result.stderr
    assert "All distributed processes registered. Starting with 2 processes" in result.stdout + result.stderr

    run_dirs = list((tmp_path / "train").iterdir())
    assert len(run_dirs) == 1, run_dirs
    run = run_dirs[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == [
        ".hydra",
        "checkpoints",
        "export",
        "tensorboard",
    ]
    event_files = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert event_files and len({f.name.split(".")[-2] for f in event_files}) == 1  # one writer pid: rank zero

    # the global batch of 64 was split into 2 × 32: the step count per epoch is the single-process one
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2 * STEPS_PER_EPOCH
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.8
    assert read_events(run / "tensorboard").Scalars("test/acc")[-1].value == metrics["test/acc"]
    assert result.stdout.count("[lightyard][INFO] - results in") == 1  # printed by rank zero only
    # exported and registered once, by rank zero
    assert all(
        entry["passed"]
        for entry in json.loads((run / "export" / "export.json").read_text())["formats"].values()
    )
    assert len(ModelStore().versions("digits-cnn")) == 1

    # metrics are synchronised across ranks: the 2-process test accuracy is that of the whole test set
    single = train(
        compose_train(["train=false", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", *QUIET], tmp_path)
    )
    assert metrics["test/acc"] == pytest.approx(single["test/acc"], abs=1e-6)

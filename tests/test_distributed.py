"""Real 2-process DDP runs on CPU (gloo): launched by Lightning from `python train.py trainer.devices=2`, and
as two "nodes" on this machine, by torchrun or by Lightning's own environment variables."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lightyard.models.checkpoints import read_checkpoint
from lightyard.registry import ModelStore
from lightyard.training import train
from tests.conftest import NOISE, QUIET, ROOT, assert_ok, assert_user_error, compose_train, run_train
from tests.tensorboard_reader import graph_count, read_events

STEPS_PER_EPOCH = 20  # 1,257 images / global batch 64: each of 2 ranks takes 32 per step
DEFAULT_EPOCHS = 30  # trainer.max_epochs of conf/trainer/default.yaml
ENVIRONMENTS = {"torchrun": "TorchElasticEnvironment", "lightning-env": "LightningEnvironment"}


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
    assert graph_count(run / "tensorboard") == 1

    # the global batch of 64 was split into 2 × 32: the step count per epoch is the single-process one
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2 * STEPS_PER_EPOCH
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.8
    assert read_events(run / "tensorboard").Scalars("test/acc")[-1].value == metrics["test/acc"]
    assert result.stdout.count("[lightyard][INFO] - results in") == 1  # printed by rank zero only
    # exported and registered once, by rank zero
    formats = json.loads((run / "export" / "export.json").read_text())["formats"]
    assert formats and all(entry["passed"] for entry in formats.values())
    assert len(ModelStore().versions("digits-cnn")) == 1

    # metrics are synchronised across ranks: the 2-process test accuracy is that of the whole test set
    single = train(
        compose_train(["train=false", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", *QUIET], tmp_path)
    )
    assert metrics["test/acc"] == pytest.approx(single["test/acc"], abs=1e-6)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_command(launcher: str, rank: int, port: int) -> tuple[list[str], dict[str, str]]:
    """How node `rank` of 2 is started: torchrun's flags, or Lightning's MASTER_ADDR/PORT and NODE_RANK."""
    train_py = str(ROOT / "train.py")
    if launcher == "torchrun":
        torchrun = str(Path(sys.executable).parent / "torchrun")
        flags = ["--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}", "--master-addr=127.0.0.1"]
        return [torchrun, *flags, f"--master-port={port}", train_py], {}
    return [sys.executable, train_py], {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "NODE_RANK": str(rank),
    }


@pytest.mark.multinode
@pytest.mark.parametrize("launcher", ["torchrun", "lightning-env"])
def test_two_nodes_make_one_run(launcher: str, tmp_path: Path, single_process_acc: float) -> None:
    """The default run (30 epochs) on two nodes: one run, with the single-process accuracy."""
    run = tmp_path / "run"
    args = [
        "trainer.num_nodes=2",
        "trainer.devices=1",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={run}",
        *QUIET,
    ]
    port = free_port()
    nodes = []
    for rank in (0, 1):
        command, env = node_command(launcher, rank, port)
        nodes.append(
            subprocess.Popen(
                [*command, *args],
                cwd=tmp_path,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    world = f"distributed: {ENVIRONMENTS[launcher]}, world size 2 = 2 node(s) × 1 device(s)"
    assert world in (run / "train.log").read_text()

    assert sorted(path.name for path in tmp_path.iterdir()) == ["bentoml", "run"]  # no second run dir
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (
        read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == DEFAULT_EPOCHS * STEPS_PER_EPOCH
    )
    event_files = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert event_files and len({f.name.split(".")[-2] for f in event_files}) == 1  # one writer: rank zero
    metrics = json.loads((run / "metrics.json").read_text())
    assert read_events(run / "tensorboard").Scalars("test/acc")[-1].value == metrics["test/acc"]
    assert abs(metrics["test/acc"] - single_process_acc) <= NOISE, (metrics["test/acc"], single_process_acc)
    formats = json.loads((run / "export" / "export.json").read_text())["formats"]
    assert formats and all(entry["passed"] for entry in formats.values())
    assert len(ModelStore().versions("digits-cnn")) == 1
    assert sum(output.count("[lightyard][INFO] - results in") for output in outputs) == 1


def test_nodes_without_a_shared_run_dir_stop_at_once(tmp_path: Path) -> None:
    """Each node would stamp its own run dir: every node stops before waiting for the others."""
    result = run_train(
        ["trainer.num_nodes=2", "trainer.devices=1", "trainer.accelerator=cpu"], cwd=tmp_path, timeout=60
    )
    assert_user_error(result, "trainer.num_nodes=2", "hydra.run.dir=DIR")
    assert result.returncode == 2

"""A real Trainer on digits: metrics, checkpoints, TensorBoard contents, reproducibility and resume."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from lightyard.models.checkpoints import read_checkpoint
from lightyard.training import train
from tests.conftest import QUIET, assert_ok, compose_train, run_train
from tests.tensorboard_reader import graph_count, hparams_of, read_events

STEPS_PER_EPOCH = 20  # 1,257 digits training images / batch 64


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    run_dir = tmp_path_factory.mktemp("short_run")
    overrides = ["trainer.max_epochs=3", "model.optimizer.lr=0.005", "logger=many", *QUIET]
    metrics = train(compose_train(overrides, run_dir))
    return run_dir, metrics


def test_run_dir_holds_checkpoints_and_metrics(short_run: tuple[Path, dict[str, float]]) -> None:
    run_dir, metrics = short_run
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 2
    written = json.loads((run_dir / "metrics.json").read_text())
    assert written == pytest.approx(metrics)
    for name in ("test/acc", "test/acc_top5", "test/loss", "val/acc", "val/acc_best", "train/loss"):
        assert 0.0 <= written[name] < 10.0, name
    assert written["test/acc"] > 0.8  # three epochs of the default CNN already learn digits
    assert written["val/acc_best"] >= written["val/acc"]
    csv_header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "step", "train/loss", "val/acc", "test/acc"} <= set(csv_header)


def test_checkpoint_loads_with_weights_only(short_run: tuple[Path, dict[str, float]]) -> None:
    run_dir, _ = short_run
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["preprocess"]["class_names"] == [str(d) for d in range(10)]


def test_tensorboard_holds_scalars_images_and_hparams(short_run: tuple[Path, dict[str, float]]) -> None:
    run_dir, metrics = short_run
    events = read_events(run_dir / "tensorboard")
    scalars = set(events.Tags()["scalars"])
    expected = {
        "train/loss",
        "train/loss_step",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/acc_top5",
        "val/acc_best",
        "test/loss",
        "test/acc",
        "test/acc_top5",
    }
    assert expected <= scalars
    assert any(tag.startswith("lr-") for tag in scalars)
    val_steps = [e.step for e in events.Scalars("val/acc")]
    assert val_steps[:3] == [STEPS_PER_EPOCH * (i + 1) - 1 for i in range(3)]  # one point per epoch
    images = set(events.Tags()["images"])
    assert {"val/confusion_matrix", "test/confusion_matrix", "val/predictions", "test/predictions"} <= images
    assert len(events.Images("val/confusion_matrix")) == 3  # not logged during the sanity check
    hparams, metric_tags = hparams_of(events)
    assert hparams["model/optimizer/lr"] == pytest.approx(0.005)
    assert hparams["data/_target_"] == "lightyard.data.DigitsDataModule"
    assert {"test/acc", "val/acc_best"} <= metric_tags
    assert events.Scalars("test/acc")[-1].value == pytest.approx(metrics["test/acc"])
    # the network's graph, once, traced from the net itself (the Graphs tab)
    assert graph_count(run_dir / "tensorboard") == 1
    nodes = events.Graph().node
    assert {"aten::_convolution", "aten::batch_norm", "aten::linear"} <= {node.op for node in nodes}
    assert any(node.name.startswith("SmallCNN/") for node in nodes)


def test_evaluate_a_checkpoint_without_training(
    short_run: tuple[Path, dict[str, float]], tmp_path: Path
) -> None:
    run_dir, metrics = short_run
    best = run_dir / "checkpoints" / "best.ckpt"
    evaluated = train(compose_train(["train=false", f"ckpt_path={best}", *QUIET], tmp_path))
    assert evaluated["test/acc"] == metrics["test/acc"]


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    overrides = ["trainer.max_epochs=2", "seed=7", *QUIET, "logger=none"]
    first = train(compose_train(overrides, tmp_path / "a"))
    second = train(compose_train(overrides, tmp_path / "b"))
    assert first == second
    other = train(compose_train([*overrides, "seed=8"], tmp_path / "c"))
    assert other["train/loss"] != first["train/loss"]


def test_resume_continues_at_the_saved_epoch_and_step(tmp_path: Path) -> None:
    train(compose_train(["trainer.max_epochs=2", *QUIET], tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last)["global_step"] == 2 * STEPS_PER_EPOCH

    # without a best-checkpoint callback, the test after a resumed fit uses the weights it ended with
    resumed_overrides = [
        "trainer.max_epochs=4",
        f"ckpt_path={last}",
        "callbacks.model_checkpoint=null",
        *QUIET,
    ]
    metrics = train(compose_train(resumed_overrides, tmp_path / "resumed"))
    resumed_last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    resumed = read_checkpoint(resumed_last)
    assert (resumed["epoch"], resumed["global_step"]) == (3, 4 * STEPS_PER_EPOCH)
    epochs = [e.value for e in read_events(tmp_path / "resumed" / "tensorboard").Scalars("epoch")]
    assert min(epochs) == 2  # epochs 0 and 1 were not trained again
    final = train(compose_train(["train=false", f"ckpt_path={resumed_last}", *QUIET], tmp_path / "eval"))
    assert metrics["test/acc"] == final["test/acc"]


def test_rerunning_into_a_run_dir_resumes_it(tmp_path: Path) -> None:
    """What a SLURM requeue or `hydra.run.dir=<crashed run>` does: continue from its last.ckpt."""
    train(compose_train(["trainer.max_epochs=1", *QUIET], tmp_path))
    train(compose_train(["trainer.max_epochs=2", *QUIET], tmp_path))
    last = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (1, 2 * STEPS_PER_EPOCH)
    assert graph_count(tmp_path / "tensorboard") == 1  # the run's graph, not logged again by the resume


def test_any_trainer_argument_is_set_from_the_command_line(tmp_path: Path) -> None:
    """Gradient clipping, accumulation, batch limits and the validation interval, as `trainer.NAME=value`
    (no `+`): what the Trainer did, recorded by a probe callback, not what the config says."""
    run_dir = tmp_path / "run"
    result = run_train(
        ["trainer.max_epochs=2", "trainer.gradient_clip_val=0.001", "trainer.gradient_clip_algorithm=value",
         "trainer.accumulate_grad_batches=2", "trainer.limit_train_batches=6", "trainer.limit_val_batches=3",
         "trainer.val_check_interval=0.5", "export.enabled=false",
         "+callbacks.probe._target_=tests.trainer_probe.TrainerProbe",
         f"+callbacks.probe.path={run_dir}/probe.json",
         f"hydra.run.dir={run_dir}", *QUIET],
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(result)
    probe = json.loads((run_dir / "probe.json").read_text())
    assert len(probe["train_batches"]) == 12  # 6 batches × 2 epochs
    assert probe["train_batches"][-1] == 6  # one optimizer step per 2 batches
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 6
    stepped = [after > before for before, after in pairwise([0, *probe["train_batches"]])]
    at_steps = [g for g, step in zip(probe["largest_gradient"], stepped, strict=True) if step]
    between = [g for g, step in zip(probe["largest_gradient"], stepped, strict=True) if not step]
    assert at_steps == pytest.approx([0.001] * 6)  # clipped by value at each of the 6 steps
    assert min(between) > 0.001  # while accumulating, larger: clipping is what bounded them
    assert probe["val_batches"] == [3, 3, 3, 3]  # twice per epoch (every 3 of the 6 batches), 3 batches each

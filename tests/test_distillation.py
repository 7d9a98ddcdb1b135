"""DistillationModule: the loss, a frozen teacher from a checkpoint or the registry, DDP, mismatches."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from lightyard.data import DigitsDataModule, PreprocessSpec
from lightyard.errors import UserError
from lightyard.models import DistillationModule, small_cnn
from lightyard.models.checkpoints import read_checkpoint
from lightyard.models.distillation import distillation_loss
from lightyard.registry import ModelStore
from lightyard.sources import load_trained_net
from tests.conftest import QUIET, assert_ok, assert_user_error, run_train

FAST = ["trainer.max_epochs=1", *QUIET]


@pytest.fixture(scope="session")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real `python train.py experiment=digits_teacher` (narrowed, 2 epochs): (best.ckpt, its store)."""
    root = tmp_path_factory.mktemp("teacher")
    result = run_train(
        ["experiment=digits_teacher", "model.net.width=16", "trainer.max_epochs=2",
         f"hydra.run.dir={root / 'run'}", "export.formats=[onnx]", *QUIET],
        cwd=root, env={"BENTOML_HOME": str(root / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"},
    )  # fmt: skip
    assert_ok(result)
    return root / "run" / "checkpoints" / "best.ckpt", root / "bentoml"


def test_loss_matches_a_hand_computation() -> None:
    student = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
    teacher = torch.tensor([[3.0, 1.0, 0.0], [-1.0, 0.5, 2.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    temperature, alpha = 2.0, 0.3

    def softmax(row: list[float], t: float) -> list[float]:
        exps = [math.exp(v / t) for v in row]
        return [e / sum(exps) for e in exps]

    hard = (
        -sum(math.log(softmax(s, 1.0)[y]) for s, y in zip(student.tolist(), labels.tolist(), strict=True)) / 2
    )
    soft = 0.0
    for s, t in zip(student.tolist(), teacher.tolist(), strict=True):
        p_t, p_s = softmax(t, temperature), softmax(s, temperature)
        soft += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True))
    soft = soft / 2 * temperature**2
    total, got_hard, got_soft = distillation_loss(student, teacher, labels, temperature, alpha)
    assert got_hard.item() == pytest.approx(hard, rel=1e-9)
    assert got_soft.item() == pytest.approx(soft, rel=1e-9)
    assert total.item() == pytest.approx(alpha * hard + (1 - alpha) * soft, rel=1e-9)
    assert distillation_loss(student, student, labels, 4.0, 0.0)[0].item() == pytest.approx(0.0, abs=1e-7)


def test_fit_leaves_the_teacher_untouched_and_out_of_the_checkpoint(teacher, tmp_path: Path) -> None:
    datamodule = DigitsDataModule()
    module = DistillationModule(
        small_cnn(10, 1, width=4),
        datamodule.spec.to_dict(),
        optimizer=partial(torch.optim.AdamW, lr=0.01),
        teacher=load_trained_net(teacher[0]),
        temperature=4.0,
        alpha=0.5,
    )
    before = {name: value.clone() for name, value in module.teacher.state_dict().items()}
    student_before = {name: value.clone() for name, value in module.net.state_dict().items()}
    trainer = L.Trainer(
        max_epochs=2, logger=CSVLogger(tmp_path), default_root_dir=tmp_path, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)

    after = module.teacher.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert not module.teacher.training
    assert all(p.grad is None and not p.requires_grad for p in module.teacher.parameters())
    assert any(not torch.equal(student_before[n], v) for n, v in module.net.state_dict().items())

    (checkpoint_path,) = (tmp_path / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt")
    state = read_checkpoint(checkpoint_path)["state_dict"]
    assert state and all(key.startswith(("net.", "val_acc_best")) for key in state), sorted(state)[:5]

    rows = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"train/loss_hard", "train/loss_soft", "train/loss", "val/teacher_acc"} <= set(header)
    column = header.index("val/teacher_acc")
    logged = [float(r.split(",")[column]) for r in rows[1:] if r.split(",")[column]]
    assert len(logged) == 1 and logged[0] > 0.8  # once, and the teacher is good


def test_kd_run_with_a_registry_teacher_registers_its_lineage(
    teacher, bentoml_home: Path, tmp_path: Path
) -> None:
    import shutil

    shutil.copytree(teacher[1], bentoml_home)
    teacher_tag = ModelStore().resolve("digits-teacher@production").tag
    result = run_train(
        ["experiment=digits_kd", "distill.teacher=digits-teacher@production", "distill.temperature=3",
         "distill.alpha=0.4", f"hydra.run.dir={tmp_path / 'run'}", *FAST],
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(result)
    student = ModelStore().resolve("digits-student-kd:latest")
    lineage = student.metadata["lineage"]
    assert lineage["parents"] == [teacher_tag]
    assert lineage["steps"][0] | {"run_dir": None, "checkpoint": None} == {
        "step": "distill", "teacher": teacher_tag, "temperature": 3.0, "alpha": 0.4,
        "run_dir": None, "checkpoint": None,
    }  # fmt: skip
    assert set(student.metadata["formats"]) == {"onnx", "torchscript", "pt2"}
    assert "val/teacher_acc" in json.loads((tmp_path / "run" / "metrics.json").read_text())


@pytest.mark.heavy
def test_two_process_ddp_distillation(teacher, tmp_path: Path) -> None:
    result = run_train(
        ["experiment=digits_kd", f"distill.teacher={teacher[0]}", "trainer.devices=2",
         "trainer.accelerator=cpu",
         f"hydra.run.dir={tmp_path / 'run'}", *FAST],
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(result)
    assert "Starting with 2 processes" in result.stdout + result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.3 and "train/loss_soft" in metrics
    assert len(ModelStore().versions("digits-student-kd")) == 1


def fake_teacher(path: Path, spec: PreprocessSpec) -> Path:
    """A checkpoint in lightyard's format for another data set: a net, its spec and its config."""
    net = small_cnn(spec.num_classes, spec.channels, width=4)
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "hyper_parameters": {
                "preprocess": spec.to_dict(),
                "net_config": {"_target_": "lightyard.models.small_cnn", "width": 4},
            },
        },
        path,
    )
    return path


def test_mismatched_teachers_are_refused(tmp_path: Path) -> None:
    digits = DigitsDataModule().spec
    three = PreprocessSpec(8, 8, 1, digits.mean, digits.std, ("a", "b", "c"))
    other_norm = PreprocessSpec(8, 8, 1, (0.5,), (0.5,), digits.class_names)
    cases = [(three, "predicts 3 classes"), (other_norm, "other preprocessing than this data (mean")]
    for i, (spec, message) in enumerate(cases):
        path = fake_teacher(tmp_path / f"teacher{i}.ckpt", spec)
        with pytest.raises(UserError, match=message.replace("(", r"\(")):
            DistillationModule(
                small_cnn(10, 1), digits.to_dict(), torch.optim.SGD, teacher=load_trained_net(path)
            )
    result = run_train(
        ["experiment=digits_kd", f"distill.teacher={tmp_path / 'teacher0.ckpt'}", *FAST], cwd=tmp_path
    )
    assert_user_error(result, "predicts 3 classes", "use a teacher trained on this data")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=distillation"], "distillation needs a teacher"),
        (["experiment=digits_kd"], "no model named 'digits-teacher'"),
        (["experiment=digits_kd", "distill.teacher=missing.ckpt"], "missing.ckpt does not exist"),
        (
            ["experiment=digits_kd", "distill.teacher=x.ckpt", "distill.alpha=2"],
            "distill.alpha takes a number in [0, 1]",
        ),
    ],
)
def test_distillation_errors(overrides: list[str], message: str, tmp_path: Path) -> None:
    assert_user_error(run_train([*overrides, *FAST], cwd=tmp_path), message)


@pytest.mark.heavy
def test_cifar10_kd_experiment_runs_on_cifar_files(cifar_root: Path, tmp_path: Path) -> None:
    """resnet18 teacher → mobilenet_v3_small student on CIFAR-10's on-disk format, one batch each."""
    common = [f"data.root={cifar_root}", "data.num_workers=0", "data.batch_size=16", "trainer=cpu",
              "trainer.max_epochs=1", "export.enabled=false", *QUIET]  # fmt: skip
    assert_ok(
        run_train(["experiment=cifar10_resnet18", f"hydra.run.dir={tmp_path / 't'}", *common], cwd=tmp_path)
    )
    teacher_ckpt = tmp_path / "t" / "checkpoints" / "best.ckpt"
    result = run_train(
        [
            "experiment=cifar10_kd",
            f"distill.teacher={teacher_ckpt}",
            f"hydra.run.dir={tmp_path / 's'}",
            *common,
        ],
        cwd=tmp_path,
    )
    assert_ok(result)
    assert "train/loss_soft" in json.loads((tmp_path / "s" / "metrics.json").read_text())

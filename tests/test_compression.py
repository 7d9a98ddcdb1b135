"""Pruning and INT8 quantization: callbacks in real runs, artifacts in their runtimes, gates, lineage."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from lightyard.compress.gate import predict
from lightyard.compress.pruning import per_step_amount, prune_channels
from lightyard.compress.quantization import quantize_export
from lightyard.cpu import Int8Scheme, isa_family, scheme_candidates
from lightyard.data import DigitsDataModule
from lightyard.errors import UserError
from lightyard.export.runtimes import load_artifact
from lightyard.models import build_net
from lightyard.models.checkpoints import read_checkpoint
from lightyard.models.loading import rebuild_net
from lightyard.models.nets import PRUNED_CHANNELS
from lightyard.registry import ModelStore, load
from lightyard.sources import net_from_checkpoint
from lightyard.training import train
from tests.conftest import QUIET, assert_ok, assert_user_error, compose_train, run_train
from tests.tensorboard_reader import read_events

LIGHTYARD = str(Path(sys.executable).parent / "lightyard")
PRUNE = ["prune.amount=0.6", "prune.steps=3", "prune.start_epoch=1", "prune.every=1"]


def store_env(home: Path) -> dict:
    return {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}


@pytest.fixture(scope="session")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """`python train.py callbacks=[default,prune,quantize]`: 60% sparsity in 3 steps (after epochs 1, 2,
    3), 2 fine-tuning epochs, static INT8 on 4 calibration batches: (run dir, store, result)."""
    root = tmp_path_factory.mktemp("compressed")
    result = run_train(
        ["callbacks=[default,prune,quantize]", *PRUNE, "trainer.max_epochs=6",
         "quantize.calibration_batches=4", f"hydra.run.dir={root / 'run'}", *QUIET],
        cwd=root, env=store_env(root / "bentoml"),
    )  # fmt: skip
    assert_ok(result)
    return root / "run", root / "bentoml", result


def prunable_sparsity(state: dict[str, torch.Tensor]) -> float:
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() > 1]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def test_step_amounts_compound_to_the_target() -> None:
    p = per_step_amount(0.8, 4)
    assert 1 - (1 - p) ** 4 == pytest.approx(0.8)
    assert per_step_amount(0.5, 1) == pytest.approx(0.5)


@pytest.mark.heavy
def test_sparsity_follows_the_schedule(compressed) -> None:
    run_dir = compressed[0]
    events = read_events(run_dir / "tensorboard")
    logged = events.Scalars("prune/sparsity")
    p = per_step_amount(0.6, 3)
    assert [round(e.value, 3) for e in logged] == [round(1 - (1 - p) ** k, 3) for k in (1, 2, 3)]
    assert logged[-1].value == pytest.approx(0.6, abs=1e-3)
    assert {"prune/sparsity/features.0", "prune/sparsity/classifier"} <= set(events.Tags()["scalars"])
    best = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    assert best["epoch"] >= 4, "a checkpoint from before the last pruning step must not be 'best'"
    assert prunable_sparsity(best["state_dict"]) == pytest.approx(0.6, abs=1e-3)


@pytest.mark.heavy
def test_exported_model_holds_no_masks(compressed) -> None:
    export = compressed[0] / "export"
    for key in [
        *read_checkpoint(compressed[0] / "checkpoints" / "best.ckpt")["state_dict"],
        *torch.load(export / "model.pt", weights_only=True),
    ]:
        assert "_orig" not in key and "_mask" not in key, key
    graph = onnx.load(str(export / "model.onnx")).graph
    names = [init.name for init in graph.initializer]
    assert not [name for name in names if "orig" in name or "mask" in name]
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    conv = [w for w in weights.values() if w.ndim == 4]
    zeros = sum(int((w == 0).sum()) for w in conv) / sum(w.size for w in conv)
    assert zeros > 0.4  # the zeros reached the deployed file


@pytest.mark.heavy
def test_int8_onnx_graph_is_quantized_and_gated(compressed) -> None:
    export = compressed[0] / "export"
    manifest = json.loads((export / "export.json").read_text())["formats"]
    entry = manifest["onnx-int8"]
    assert entry["passed"] and entry["mode"] == "static"
    assert Int8Scheme.from_dict(entry["scheme"]) in scheme_candidates()  # chosen for this host's CPU
    assert entry["isa"] == isa_family()
    assert entry["accuracy"]["images"] == 270  # the full digits test split
    assert entry["calibration_batches"] == 4
    model = onnx.load(str(export / entry["file"]))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8 = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert int8, "weights are stored as int8"
    assert (export / entry["file"]).stat().st_size < 0.35 * (export / "model.onnx").stat().st_size


@pytest.mark.heavy
def test_torch_int8_loads_in_a_fresh_process(compressed) -> None:
    export = compressed[0] / "export"
    assert json.loads((export / "export.json").read_text())["formats"]["torchscript-int8"]["passed"]
    datamodule = DigitsDataModule()
    datamodule.setup("test")
    images, _ = next(iter(datamodule.test_dataloader()))
    torch.save(images, compressed[0] / "images.pt")
    script = (
        "import sys, torch\n"
        "m = torch.jit.load(sys.argv[1])\n"
        "x = torch.load(sys.argv[2], weights_only=True)\n"
        "print('quantized::conv2d_relu' in str(m.inlined_graph), m(x).argmax(1).tolist())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(export / "model.int8.ts"), str(compressed[0] / "images.pt")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    fused, predicted = result.stdout.split(" ", 1)
    assert fused == "True"  # conv, batch norm and ReLU became one quantized kernel
    eager = net_from_checkpoint(compressed[0] / "checkpoints" / "best.ckpt").net
    with torch.no_grad():
        expected = eager(images).argmax(1)
    agreement = (torch.tensor(json.loads(predicted)) == expected).float().mean()
    assert agreement >= 0.95


@pytest.mark.heavy
def test_report_table_plot_and_tensorboard_text(compressed) -> None:
    run_dir, _, result = compressed
    report = (run_dir / "report.md").read_text()
    for row in ("FP32 eager (before pruning)", "pruned (unstructured), eager", "TorchScript", "ONNX FP32",
                "ONNX INT8", "torch INT8"):  # fmt: skip
        assert f"| {row} |" in report, row
    for column in ("file size", "non-zeros", "MACs", "p50 batch 1", "p50 batch 32", "throughput", "top-1"):
        assert column in report
    assert (run_dir / "accuracy_latency.png").read_bytes()[:4] == b"\x89PNG"
    text = read_events(run_dir / "tensorboard").Tensors("compression/report/text_summary")[0]
    assert b"| ONNX INT8 |" in text.tensor_proto.string_val[0]
    assert f"compression report: {run_dir / 'report.md'}" in result.stderr + result.stdout


@pytest.mark.heavy
def test_registered_with_lineage(compressed) -> None:
    home = compressed[1]
    os.environ["BENTOML_HOME"] = str(home)  # the autouse fixture restores it after the test
    model = load("digits-cnn:latest")
    assert {"onnx", "onnx-int8", "torchscript-int8", "torchscript", "pt2"} <= set(model.metadata["formats"])
    steps = {step["step"]: step for step in model.metadata["lineage"]["steps"]}
    assert steps["prune"]["method"] == "unstructured" and steps["prune"]["amount"] == 0.6
    assert steps["prune"]["accuracy"]["passed"]
    assert steps["quantize"]["mode"] == "static" and steps["quantize"]["calibration_batches"] == 4
    assert steps["quantize"]["isa"] == isa_family()
    assert steps["quantize"]["onnx_scheme"] == model.metadata["formats"]["onnx-int8"]["scheme"]["name"]
    assert steps["quantize"]["results"]["onnx-int8"]["passed"]
    shown = subprocess.run(
        [LIGHTYARD, "models", "show", model.tag], capture_output=True, text=True, timeout=60, env=os.environ
    )
    scheme = model.metadata["formats"]["onnx-int8"]["scheme"]["name"]
    assert f"scheme {scheme}, chosen and gated on {isa_family()}" in shown.stdout, shown.stdout
    session = model.onnx_session(threads=1)
    x = torch.zeros(2, 1, 8, 8).numpy()
    assert session.run(None, {"input": x})[0].shape == (2, 10)


def test_broken_calibration_is_rejected(trained, tmp_path: Path) -> None:
    trained_net = net_from_checkpoint(trained[0] / "checkpoints" / "best.ckpt")
    datamodule = DigitsDataModule()
    datamodule.setup("test")
    report = quantize_export(
        trained_net.net, trained_net.spec, tmp_path / "export", net_config=trained_net.net_config,
        mode="static", calibration=[torch.zeros(64, 1, 8, 8)], val=list(datamodule.val_dataloader()),
        test=list(datamodule.test_dataloader()),
    )  # fmt: skip
    for name in ("onnx-int8", "torchscript-int8"):
        entry = report.formats[name]
        assert not entry["passed"]
        assert entry["error"].startswith("failed the accuracy gate: test accuracy")
        assert "points lost (limit 1)" in entry["error"]
        assert entry["file"].startswith("rejected/") and (tmp_path / "export" / entry["file"]).is_file()
    assert report.passed == ["onnx"]  # the FP32 model it started from


def test_open_scheme_choices_are_measured(trained, tmp_path: Path) -> None:
    """Where the host's instruction set leaves the scheme open (here: AVX2's candidates, on any CPU), every
    candidate is quantized, scored on the validation split and timed, and the most accurate, then
    fastest, is kept; only the chosen one is then gated on the test split."""
    trained_net = net_from_checkpoint(trained[0] / "checkpoints" / "best.ckpt")
    datamodule = DigitsDataModule()
    datamodule.setup("test")
    candidates = scheme_candidates("avx2")
    assert len(candidates) > 1
    report = quantize_export(
        trained_net.net, trained_net.spec, tmp_path / "export", net_config=trained_net.net_config,
        mode="static", calibration=datamodule.calibration_batches(4), val=list(datamodule.val_dataloader()),
        test=list(datamodule.test_dataloader()), runtimes=["onnx"], schemes=candidates,
    )  # fmt: skip
    entry = report.formats["onnx-int8"]
    trials = entry["candidates"]
    assert [trial["scheme"] for trial in trials] == [scheme.name for scheme in candidates]
    assert all(0.9 < trial["val_accuracy"] <= 1.0 and trial["batch1_ms"] > 0 for trial in trials)
    best = max(trial["val_accuracy"] for trial in trials)
    tied = [trial for trial in trials if best - trial["val_accuracy"] <= 0.001]
    assert entry["scheme"]["name"] == min(tied, key=lambda trial: trial["batch1_ms"])["scheme"]
    val = predict(
        load_artifact("onnx-int8", tmp_path / "export" / "model.int8.onnx"), datamodule.val_dataloader()
    )
    assert val.accuracy == pytest.approx(best)  # the figure it was chosen by is the validation split's
    assert entry["passed"] and entry["accuracy"]["images"] == len(datamodule.datasets["test"])
    left = sorted(path.name for path in (tmp_path / "export").glob("*.onnx"))
    assert left == ["model.int8.onnx", "model.onnx"]  # no candidate left behind


@pytest.mark.heavy
def test_structured_pruning_removes_channels(trained, tmp_path: Path) -> None:
    parent = trained[0] / "checkpoints" / "best.ckpt"
    result = run_train(
        ["experiment=digits_pruned_channels", f"prune.parent={parent}", "trainer.max_epochs=2",
         f"hydra.run.dir={tmp_path / 'run'}", *QUIET],
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(result)
    model = load("digits-cnn-channels:latest")
    step = model.metadata["lineage"]["steps"][-1]
    assert step["method"] == "structured" and step["macs_before"] / step["macs_after"] >= 1.6
    assert model.metadata["lineage"]["parents"] == [str(parent)]
    assert model.metadata["net"][PRUNED_CHANNELS] is True
    net = model.net()  # rebuilt at the pruned sizes from the unpruned config + state dict
    assert sum(p.numel() for p in net.parameters()) == step["parameters_after"]
    assert net.features[0].out_channels == 16
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        eager = net(x).numpy()
    onnx_out = model.onnx_session(threads=1).run(None, {"input": x.numpy()})[0]
    assert abs(eager - onnx_out).max() < 1e-4
    assert "| pruned (structured), eager |" in (tmp_path / "run" / "report.md").read_text()
    resumed = run_train(  # evaluating the pruned checkpoint rebuilds the smaller net first
        ["experiment=digits_pruned_channels", f"prune.parent={parent}", "train=false",
         f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'best.ckpt'}", "register.enabled=false",
         f"hydra.run.dir={tmp_path / 'eval'}", *QUIET],
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(resumed)


def test_channel_pruning_of_resnet_rebuilds(tmp_path: Path) -> None:
    spec = DigitsDataModule().spec
    config = {"_target_": "lightyard.models.torchvision_net", "name": "resnet18", "weights": None}
    net = build_net(config, spec).eval()
    details = prune_channels(net, torch.zeros(1, 1, 8, 8), 0.5)
    assert details["macs_before"] / details["macs_after"] > 2.5
    rebuilt = rebuild_net({**config, PRUNED_CHANNELS: True}, spec, net.state_dict(), "test")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net(x), rebuilt(x))


@pytest.mark.heavy
def test_pruning_over_the_accuracy_limit_is_not_registered(tmp_path: Path) -> None:
    result = run_train(  # a limit no model can meet: it must gain 50 points
        ["callbacks=[default,prune]", "prune.amount=0.5", "prune.steps=1", "prune.start_epoch=0",
         "prune.max_drop=-50", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'run'}", *QUIET],
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(result)
    assert "not registered: unstructured pruning failed the accuracy gate" in result.stderr + result.stdout
    assert ModelStore().versions() == []
    assert "FAILED (not registered)" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.heavy
def test_interrupted_pruning_run_resumes_with_its_masks(tmp_path: Path) -> None:
    run_dir = f"hydra.run.dir={tmp_path / 'run'}"
    common = ["callbacks=[default,prune]", "prune.amount=0.5", "prune.steps=2", "prune.start_epoch=0",
              "prune.every=1", "export.enabled=false", run_dir, *QUIET]  # fmt: skip
    assert_ok(run_train([*common, "trainer.max_epochs=3"], cwd=tmp_path))
    resumed = run_train([*common, "trainer.max_epochs=6"], cwd=tmp_path)  # reruns into the run dir
    assert_ok(resumed)
    assert "resuming from" in resumed.stdout + resumed.stderr
    last = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 5
    # the zeros were masked again: three more epochs of fine-tuning did not bring them back
    assert prunable_sparsity(last["state_dict"]) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.heavy
def test_compression_under_ddp_acts_once(tmp_path: Path) -> None:
    result = run_train(
        ["callbacks=[default,prune,quantize]", "prune.amount=0.5", "prune.steps=2", "prune.start_epoch=0",
         "prune.every=1", "trainer.max_epochs=3", "trainer.devices=2", "trainer.accelerator=cpu",
         "quantize.calibration_batches=2", "export.formats=[onnx]", f"hydra.run.dir={tmp_path / 'run'}",
         *QUIET],
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(result)
    output = result.stdout + result.stderr
    assert "Starting with 2 processes" in output
    assert output.count("compression report:") == 1
    assert output.count("pruning step 2/2") == 1
    events = list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
    assert len({path.name.split(".")[4] for path in events}) == 1  # one writing process
    logged = read_events(tmp_path / "run" / "tensorboard").Scalars("prune/sparsity")
    assert [round(e.value, 2) for e in logged] == [round(per_step_amount(0.5, 2), 2), 0.5]
    versions = ModelStore().versions("digits-cnn")
    assert len(versions) == 1 and "onnx-int8" in versions[0].metadata["formats"]
    best = read_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert prunable_sparsity(best["state_dict"]) == pytest.approx(0.5, abs=1e-3)


def test_quantize_cli_on_a_registered_model(store_copy, tmp_path: Path) -> None:
    parent = ModelStore().versions("digits-cnn")[0].tag
    result = subprocess.run(
        [LIGHTYARD, "quantize", "digits-cnn:latest",
         "--calibration-batches", "4", "--out", str(tmp_path / "q")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| ONNX INT8 |" in result.stdout and f"report: {tmp_path / 'q' / 'report.md'}" in result.stdout
    child = load("digits-cnn:latest")
    assert child.tag != parent
    assert child.metadata["lineage"]["parents"] == [parent]
    assert child.metadata["lineage"]["steps"][0]["step"] == "quantize"
    assert {"onnx", "onnx-int8", "torchscript-int8"} <= set(child.metadata["formats"])


def test_quantize_cli_dynamic_on_a_checkpoint(trained, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    result = subprocess.run(
        [LIGHTYARD, "quantize", str(run_dir / "checkpoints" / "best.ckpt"), "--mode", "dynamic",
         "--runtimes", "onnx"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    entry = json.loads((run_dir / "export" / "export.json").read_text())["formats"]["onnx-int8"]
    assert entry["mode"] == "dynamic" and entry["passed"]
    ops = {node.op_type for node in onnx.load(str(run_dir / "export" / "model.int8.onnx")).graph.node}
    assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}
    assert ModelStore().versions() == []  # a checkpoint's INT8 files are not registered


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["callbacks=[default,prune]", "prune.start_epoch=5", "trainer.max_epochs=6"], "trainer.max_epochs"),
        (["callbacks=[default,prune]", "prune.amount=1.5"], "prune.amount=1.5"),
        (["callbacks=[default,quantize]", "quantize.mode=fast"], "quantize.mode='fast' is not accepted"),
        (["callbacks=[default,quantize]", "quantize.activation_type=fp8"], "quantize.activation_type"),
    ],
)
def test_bad_compression_settings(overrides, fragment, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=re.escape(fragment)):
        train(compose_train([*overrides, "logger=none", *QUIET], tmp_path / "run"))


def test_structured_pruning_without_parent_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_train(["callbacks=[default,prune_channels]", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert_user_error(result, "structured pruning", "prune.parent")


def test_quantize_cli_unknown_model(tmp_path: Path) -> None:
    result = subprocess.run(
        [LIGHTYARD, "quantize", "nope:latest"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nope" in result.stderr.strip().splitlines()[-1]


def test_mlp_is_linear_dominated() -> None:
    net = build_net({"_target_": "lightyard.models.mlp"}, DigitsDataModule().spec)
    linear = sum(p.numel() for m in net.modules() if isinstance(m, nn.Linear) for p in m.parameters())
    assert linear == sum(p.numel() for p in net.parameters())

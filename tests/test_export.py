"""Export through the parity gate with the real runtimes, fresh-process loads, and preprocessing that
travels with the model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image
from torch import nn

from lightyard.data import DigitsDataModule
from lightyard.errors import UserError
from lightyard.export import FORMATS, check_parity, export_model
from lightyard.export.formats import EXPORTED
from lightyard.export.manifest import ExportReport
from lightyard.export.runtimes import load_artifact, load_onnx
from lightyard.models import ClassifierModule, build_net, small_cnn
from tests.tensorboard_reader import read_events


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    datamodule = DigitsDataModule()
    datamodule.setup("test")
    return datamodule


def first_test_images(datamodule: DigitsDataModule, count: int = 16) -> torch.Tensor:
    return torch.stack([datamodule.datasets["test"][i][0] for i in range(count)])


def test_training_run_exports_verified_artifacts(trained) -> None:
    run_dir, _, result = trained
    export_dir = run_dir / "export"
    manifest = json.loads((export_dir / "export.json").read_text())
    assert set(manifest["formats"]) == set(EXPORTED)
    for fmt, entry in manifest["formats"].items():
        assert entry["passed"], (fmt, entry)
        parity = entry["parity"]
        assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
        assert parity["batch_sizes"] == [1, 32] and parity["images"] == 32
        assert (export_dir / entry["file"]).is_file()
    assert manifest["formats"]["torchscript"]["method"] == "script"
    assert manifest["net"]["_target_"] == "lightyard.models.small_cnn"
    assert json.loads((export_dir / "preprocess.json").read_text())["height"] == 8
    assert (export_dir / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    onnx.checker.check_model(str(export_dir / "model.onnx"), full_check=True)
    graph = onnx.load(str(export_dir / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["output"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    assert "registered as digits-cnn:" in result.stdout.strip().splitlines()[-1]


def test_parity_figures_reach_tensorboard(trained) -> None:
    scalars = read_events(trained[0] / "tensorboard").Tags()["scalars"]
    for fmt in EXPORTED:
        assert {f"export/{fmt}/max_abs_diff", f"export/{fmt}/top1_agreement", f"export/{fmt}/passed"} <= set(
            scalars
        )


@pytest.mark.parametrize("fmt", EXPORTED)
def test_each_format_passes_the_gate_alone(fmt: str, digits: DigitsDataModule, tmp_path: Path) -> None:
    net = small_cnn(10, 1)
    report = export_model(net, digits.spec, first_test_images(digits), tmp_path, net_config={}, formats=[fmt])
    entry = report.formats[fmt]
    assert entry["passed"], entry
    assert report.files == ["model.pt", "preprocess.json", "labels.txt", FORMATS[fmt].filename]


def test_opset_is_configurable(digits: DigitsDataModule, tmp_path: Path) -> None:
    report = export_model(
        small_cnn(10, 1),
        digits.spec,
        first_test_images(digits),
        tmp_path,
        net_config={},
        formats=["onnx"],
        opset=18,
    )
    assert report.formats["onnx"]["opset"] == 18
    assert onnx.load(str(tmp_path / "model.onnx")).opset_import[0].version == 18


def test_a_tampered_onnx_file_fails_the_gate(digits: DigitsDataModule, tmp_path: Path) -> None:
    net = small_cnn(10, 1).eval()
    export_model(net, digits.spec, first_test_images(digits), tmp_path, net_config={}, formats=["onnx"])
    model = onnx.load(str(tmp_path / "model.onnx"))
    weights = next(t for t in model.graph.initializer if len(t.dims) == 4)
    array = onnx.numpy_helper.to_array(weights).copy()
    array.flat[0] += 0.5
    weights.CopyFrom(onnx.numpy_helper.from_array(array, weights.name))
    onnx.save(model, str(tmp_path / "model.onnx"))
    parity = check_parity(load_onnx(tmp_path / "model.onnx"), net, first_test_images(digits))
    assert not parity.passed and parity.max_abs_diff > 1e-4


class InputScaled(nn.Module):
    """Scales its logits by a number computed in numpy: tracing freezes it, the exporters refuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = small_cnn(10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = float(np.abs(x.detach().numpy()).mean())
        return self.net(x) * scale


def test_wrong_artifacts_are_rejected_and_not_registered(digits: DigitsDataModule, tmp_path: Path) -> None:
    report = export_model(InputScaled(), digits.spec, first_test_images(digits), tmp_path, net_config={})
    traced = report.formats["torchscript"]
    assert traced["method"] == "trace" and "failed the parity gate" in traced["error"]
    assert (tmp_path / "rejected" / "model.ts").is_file() and not (tmp_path / "model.ts").exists()
    assert "failed the parity gate" in report.formats["onnx"]["error"]  # the scale is baked in
    assert report.formats["pt2"]["error"].startswith("could not export: ")
    assert report.passed == []
    assert ExportReport.load(tmp_path).files == ["model.pt", "preprocess.json", "labels.txt"]


def test_unknown_format_is_refused(digits: DigitsDataModule, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown export format tflite"):
        export_model(
            small_cnn(10, 1),
            digits.spec,
            first_test_images(digits),
            tmp_path,
            net_config={},
            formats=["tflite"],
        )


def test_one_table_names_every_format_and_imports_no_torch() -> None:
    """A new format is one row in `export/formats.py`: no other module spells a format's file or tests a
    name's suffix, and the table loads where torch is absent (the server's ONNX path)."""
    import ast

    import lightyard

    package = Path(lightyard.__file__).parent
    files = {fmt.filename for fmt in FORMATS.values()}
    spelled = []
    for path in package.rglob("*.py"):
        if path == package / "export" / "formats.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in (*files, "-int8"):
                spelled.append(f"{path.relative_to(package)}:{node.lineno} {node.value!r}")
    assert not spelled, spelled
    script = "import sys, lightyard.export.formats; assert not {'torch', 'onnxruntime'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", script], check=True)


FRESH_ONNX = """
import sys, numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
inputs, expected = np.load(sys.argv[2]), np.load(sys.argv[3])
for batch in (inputs[:1], inputs):
    got = session.run(["output"], {"input": batch})[0]
    assert np.abs(got - expected[: len(batch)]).max() <= 1e-4, np.abs(got - expected[: len(batch)]).max()
assert not any(name.split(".")[0] in ("lightyard", "torch") for name in sys.modules), "imported more"
print("ok", len(inputs))
"""

FRESH_TORCHSCRIPT = """
import sys, numpy as np, torch
module = torch.jit.load(sys.argv[1])
inputs, expected = torch.from_numpy(np.load(sys.argv[2])), np.load(sys.argv[3])
with torch.inference_mode():
    for batch in (inputs[:1], inputs):
        got = module(batch).numpy()
        assert np.abs(got - expected[: len(batch)]).max() <= 1e-4
assert not any(name.split(".")[0] == "lightyard" for name in sys.modules), "imported lightyard"
print("ok", len(inputs))
"""


@pytest.mark.parametrize(
    ("artifact", "script"), [("model.onnx", FRESH_ONNX), ("model.ts", FRESH_TORCHSCRIPT)]
)
def test_artifacts_load_in_a_fresh_process_without_lightyard(
    trained, digits: DigitsDataModule, tmp_path: Path, artifact: str, script: str
) -> None:
    export_dir = trained[0] / "export"
    net = build_net(json.loads((export_dir / "export.json").read_text())["net"], digits.spec, trusted=False)
    net.load_state_dict(torch.load(export_dir / "model.pt", weights_only=True))
    inputs = first_test_images(digits, 10)
    with torch.inference_mode():
        expected = net.eval()(inputs).numpy()
    np.save(tmp_path / "inputs.npy", inputs.numpy())
    np.save(tmp_path / "expected.npy", expected)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(export_dir / artifact),
         str(tmp_path / "inputs.npy"), str(tmp_path / "expected.npy")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok 10"


def test_an_image_file_gets_the_class_the_lightning_module_gives(trained, tmp_path: Path) -> None:
    """PNG → the spec's one preprocessing function → ONNX Runtime, against the LightningModule on the
    data module's own tensor of the same test image."""
    run_dir = trained[0]
    datamodule = DigitsDataModule()
    splits = datamodule.load_splits()
    datamodule.setup("test")
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    spec = datamodule.spec
    module = ClassifierModule.load_from_checkpoint(
        run_dir / "checkpoints" / "best.ckpt",
        net=build_net(checkpoint["hyper_parameters"]["net_config"], spec),
        optimizer=torch.optim.SGD,
        weights_only=True,
    ).eval()
    session = load_onnx(run_dir / "export" / "model.onnx")
    for position in range(40):
        index = splits.test[position]
        pixels = splits.test_source.images[index]
        Image.fromarray(pixels).save(tmp_path / f"{position}.png")
        file_input = spec.input_from_file(tmp_path / f"{position}.png")
        tensor, label = datamodule.datasets["test"][position]
        assert label == splits.test_source.labels[index]
        with torch.inference_mode():
            module_class = int(module(tensor[None]).argmax(1))
        onnx_class = int(session(file_input[None]).argmax(1)[0])
        assert onnx_class == module_class, position


@pytest.mark.parametrize(
    ("fmt", "file"), [("onnx", "model.onnx"), ("torchscript", "model.ts"), ("pt2", "model.pt2")]
)
def test_cuda_runs_like_the_cpu_or_is_refused_in_one_line(trained, fmt: str, file: str) -> None:
    """On a GPU machine every runtime gives the CPU's answers on CUDA; elsewhere `device=cuda` is refused
    with the fix, never served on the CPU unnoticed."""
    path = trained[0] / "export" / file
    on_gpu = (
        "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        if fmt == "onnx"
        else torch.cuda.is_available()
    )
    if not on_gpu:
        with pytest.raises(UserError, match="device=cuda") as refused:
            load_artifact(fmt, path, device="cuda")
        assert "device=cpu" in str(refused.value) and "\n" not in str(refused.value)
        return
    inputs = np.random.default_rng(0).standard_normal((8, 1, 8, 8), dtype=np.float32)
    expected = load_artifact(fmt, path)(inputs)
    np.testing.assert_allclose(load_artifact(fmt, path, device="cuda")(inputs), expected, atol=1e-3)

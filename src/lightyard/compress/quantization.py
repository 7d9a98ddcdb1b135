"""INT8 quantization: ONNX Runtime (static QDQ or dynamic) and torch-native (FX static or dynamic).

Each function writes one artifact from a CPU float32 network or ONNX file; the accuracy gate
(`compress.gate`) decides whether it is kept. Static quantization needs calibration batches (real
preprocessed images from the train split) to fix activation ranges; dynamic quantization computes them
per call and suits networks dominated by Linear/LSTM layers.

Type choices follow measurements on x86 CPUs (DESIGN.md, `bench/compression.py`): ONNX Runtime's QDQ with
uint8 activations and int8 weights (U8S8) runs ResNet-18 2-3× faster than FP32, while the S8S8 default
ran slower than FP32.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lightyard.compress.gate import DEFAULT_MAX_DROP, Batches, check_accuracy, predict
from lightyard.compress.measure import eager_runner
from lightyard.data.preprocess import PreprocessSpec
from lightyard.errors import UserError
from lightyard.export.exporter import cpu_float_copy, export_model, produce
from lightyard.export.formats import FORMATS
from lightyard.export.manifest import ExportReport
from lightyard.export.runtimes import INPUT_NAME, load_artifact, quiet

MODES = ("static", "dynamic")
ONNX_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
DYNAMIC_MODULES = (nn.Linear, nn.LSTM, nn.GRU)


@dataclass(frozen=True)
class OnnxSettings:
    """ONNX Runtime quantization settings, recorded with the artifact."""

    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True

    def __post_init__(self) -> None:
        for field_name in ("activation_type", "weight_type"):
            if getattr(self, field_name) not in ONNX_TYPES:
                raise UserError(
                    f"quantize.{field_name}={getattr(self, field_name)} is not a type: use uint8 or int8"
                )


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UserError(f"quantization mode '{mode}' is unknown: use static or dynamic")
    return mode


class _Calibration:
    """An ONNX Runtime `CalibrationDataReader` over preprocessed image batches."""

    def __init__(self, batches: Iterable[torch.Tensor]) -> None:
        self._batches: Iterator[torch.Tensor] = iter(batches)

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch.to("cpu", torch.float32).numpy()}


def quantize_onnx(
    fp32_path: Path,
    out_path: Path,
    mode: str,
    calibration: Iterable[torch.Tensor] = (),
    settings: OnnxSettings = OnnxSettings(),
) -> dict:
    """Quantize an FP32 ONNX model; static: QDQ with activation ranges from `calibration` (MinMax)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out_path.with_suffix(".prep.onnx")
    try:
        with quiet():
            # shape inference and graph fusions first, as ONNX Runtime's quantization guide recommends
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            weight_type = getattr(QuantType, ONNX_TYPES[settings.weight_type])
            if mode == "static":
                quantize_static(
                    str(prepared),
                    str(out_path),
                    _Calibration(calibration),
                    quant_format=QuantFormat.QDQ,
                    activation_type=getattr(QuantType, ONNX_TYPES[settings.activation_type]),
                    weight_type=weight_type,
                    per_channel=settings.per_channel,
                )
            else:
                quantize_dynamic(str(prepared), str(out_path), weight_type=weight_type)
    finally:
        prepared.unlink(missing_ok=True)
    details = {"mode": mode, "weight_type": settings.weight_type}
    if mode == "static":
        details.update(activation_type=settings.activation_type, per_channel=settings.per_channel)
    return details


def quantize_torch(
    net: nn.Module, out_path: Path, mode: str, example: torch.Tensor, calibration: Iterable[torch.Tensor] = ()
) -> dict:
    """torch-native INT8 for TorchScript users, saved as a traced `.ts`.

    Static: FX graph mode with the x86 qconfig (prepare fuses conv-bn-relu and inserts observers, the
    calibration batches set activation ranges, convert swaps in quantized kernels). Dynamic: Linear/LSTM/GRU
    weights to int8, activations quantized per call.
    """
    from torch.ao.quantization import get_default_qconfig_mapping, quantize_dynamic
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    # Lightning's test hooks run in inference mode; tensors made there cannot enter tracing: clone them out
    net = cpu_float_copy(net)
    with quiet(), torch.inference_mode(False), torch.no_grad():
        example = example.to("cpu", torch.float32).clone()
        torch.backends.quantized.engine = "x86"
        if mode == "static":
            prepared = prepare_fx(net, get_default_qconfig_mapping("x86"), (example,))
            for batch in calibration:
                prepared(batch.to("cpu", torch.float32).clone())
            quantized = convert_fx(prepared)
        else:
            quantized = quantize_dynamic(net, set(DYNAMIC_MODULES), dtype=torch.qint8)
        traced = torch.jit.freeze(torch.jit.trace(quantized, example, check_trace=False).eval())
        torch.jit.save(traced, str(out_path))
    return {"mode": mode, "engine": "x86", "method": "fx" if mode == "static" else "dynamic"}


RUNTIMES = ("onnx", "torchscript")
INT8_FILES = {"onnx": "model.int8.onnx", "torchscript": "model.int8.ts"}


def int8_format(runtime: str) -> str:
    """The format name an INT8 artifact is registered and served under: `onnx-int8`, `torchscript-int8`."""
    return f"{runtime}-int8"


def quantize_export(
    net: nn.Module,
    spec: PreprocessSpec,
    out_dir: str | Path,
    *,
    net_config: dict,
    mode: str,
    calibration: Sequence[torch.Tensor],
    test: Batches,
    max_drop: float = DEFAULT_MAX_DROP,
    runtimes: Sequence[str] = RUNTIMES,
    onnx_settings: OnnxSettings = OnnxSettings(),
) -> ExportReport:
    """Add gated INT8 variants of `net` to the export folder `out_dir` and to its `export.json`.

    `calibration` holds preprocessed train images (static mode); `test` the labelled test batches every
    variant is evaluated on, against the FP32 network's predictions. The FP32 ONNX model is exported first
    if the folder does not have one.
    """
    check_mode(mode)
    unknown = [runtime for runtime in runtimes if runtime not in RUNTIMES]
    if unknown or not runtimes:
        raise UserError(f"unknown quantization runtime {unknown or '(none)'}: use {', '.join(RUNTIMES)}")
    if mode == "static" and not calibration:
        raise UserError("static quantization needs calibration batches: set calibration_batches ≥ 1")
    out_dir = Path(out_dir)
    net = cpu_float_copy(net)
    test = [(images.to("cpu", torch.float32), labels.cpu()) for images, labels in test]
    fp32_onnx = out_dir / FORMATS["onnx"].filename
    if not fp32_onnx.is_file():
        export_model(net, spec, test[0][0][:32], out_dir, net_config=net_config, formats=["onnx"])
    if not fp32_onnx.is_file():
        raise UserError(f"no FP32 ONNX model to quantize: the ONNX export failed (see {out_dir}/export.json)")
    report = ExportReport.load(out_dir)
    reference = predict(eager_runner(net), test)
    writers = {
        "onnx": lambda path: quantize_onnx(fp32_onnx, path, mode, calibration, onnx_settings),
        "torchscript": lambda path: quantize_torch(net, path, mode, test[0][0][:2], calibration),
    }
    for runtime in runtimes:
        name = int8_format(runtime)
        report.formats[name] = produce(
            name,
            INT8_FILES[runtime],
            out_dir,
            write=writers[runtime],
            check=lambda path, fmt=name: check_accuracy(load_artifact(fmt, path), reference, test, max_drop),
        )
        report.formats[name]["calibration_batches"] = len(calibration) if mode == "static" else 0
    report.save()
    return report


def quantize_lineage(
    mode: str,
    calibration_batches: int,
    max_drop: float,
    onnx_settings: OnnxSettings,
    report: ExportReport | None,
) -> dict:
    """The registry lineage step of a quantization: settings and each INT8 artifact's gate figures."""
    results = {
        name: entry.get("accuracy", {"error": entry.get("error", "")})
        for name, entry in (report.formats.items() if report else ())
        if name.endswith("-int8")
    }
    return {
        "step": "quantize",
        "mode": mode,
        "calibration_batches": calibration_batches if mode == "static" else 0,
        "max_drop": max_drop,
        "onnx": vars(onnx_settings),
        "results": results,
    }

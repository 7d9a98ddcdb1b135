"""INT8 quantization: ONNX Runtime (static QDQ or dynamic) and torch-native (FX static or dynamic).

Each function writes one artifact from a CPU float32 network or ONNX file; the accuracy gate
(`compress.gate`) decides whether it is kept. Static quantization needs calibration batches (real
preprocessed images from the train split) to fix activation ranges; dynamic quantization computes them
per call and suits networks dominated by Linear/LSTM layers.

The ONNX Runtime scheme (types, per-channel, reduce-range) is chosen for the host's instruction set
(`lightyard.cpu`): where ONNX Runtime's guide leaves the choice open, the candidates are quantized, gated
and timed here, and the most accurate (ties: the fastest) is kept. The artifact records the scheme and
the instruction family it was chosen and gated on; the server warns on a CPU it does not suit.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from lightyard.compress.gate import DEFAULT_MAX_DROP, Batches, check_accuracy, predict
from lightyard.compress.measure import eager_runner
from lightyard.cpu import Int8Scheme, isa_family, scheme_candidates
from lightyard.data.preprocess import PreprocessSpec
from lightyard.errors import UserError
from lightyard.export.exporter import cpu_float_copy, export_model, produce
from lightyard.export.formats import FORMATS, int8_of, quantizable_runtimes
from lightyard.export.manifest import ExportReport
from lightyard.export.runtimes import INPUT_NAME, latency_ms, load_artifact, quiet

log = logging.getLogger("lightyard")
MODES = ("static", "dynamic")
SCHEME_TIE = 0.1  # accuracy points within which candidate schemes count as equally accurate
ONNX_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
DYNAMIC_MODULES = (nn.Linear, nn.LSTM, nn.GRU)


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
    scheme: Int8Scheme | None = None,
) -> dict:
    """Quantize an FP32 ONNX model; static: QDQ with activation ranges from `calibration` (MinMax)."""
    scheme = scheme or Int8Scheme()
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out_path.with_suffix(".prep.onnx")
    try:
        with quiet():
            # shape inference and graph fusions first, as ONNX Runtime's quantization guide recommends
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            weights = {
                "weight_type": getattr(QuantType, ONNX_TYPES[scheme.weight_type]),
                "per_channel": scheme.per_channel,
                "reduce_range": scheme.reduce_range,
            }
            if mode == "static":
                quantize_static(
                    str(prepared),
                    str(out_path),
                    _Calibration(calibration),
                    quant_format=QuantFormat.QDQ,
                    activation_type=getattr(QuantType, ONNX_TYPES[scheme.activation_type]),
                    **weights,
                )
            else:
                quantize_dynamic(str(prepared), str(out_path), **weights)
    finally:
        prepared.unlink(missing_ok=True)
    return {"mode": mode, "scheme": scheme.to_dict(), "isa": isa_family()}


def choose_onnx_scheme(
    fp32_path: Path,
    work_dir: Path,
    mode: str,
    calibration: Sequence[torch.Tensor],
    val: Batches,
    candidates: Sequence[Int8Scheme],
) -> tuple[Int8Scheme, list[dict]]:
    """The candidate with the best accuracy on the validation batches `val`, the fastest at batch 1 among
    those within SCHEME_TIE points of it, and every candidate's figures (none measured when there is
    one). Chosen on validation, so that the test split the gate and the report use stays unseen."""
    if len(candidates) == 1:
        return candidates[0], []
    images = next(iter(val))[0].numpy()
    trials = []
    for scheme in candidates:
        path = work_dir / f"candidate-{len(trials)}.int8.onnx"
        try:
            quantize_onnx(fp32_path, path, mode, calibration, scheme)
            run = load_artifact(int8_of("onnx").name, path)
            accuracy = predict(run, val).accuracy
            trials.append(
                {"scheme": scheme, "val_accuracy": accuracy, "batch1_ms": latency_ms(run, images, 1)}
            )
        finally:
            path.unlink(missing_ok=True)
        log.info(
            f"INT8 candidate {scheme.name}: val accuracy {accuracy:.4f}, {trials[-1]['batch1_ms']:.3f} ms"
        )
    chosen = min(most_accurate(trials), key=lambda trial: trial["batch1_ms"])["scheme"]
    return chosen, [{**trial, "scheme": trial["scheme"].name} for trial in trials]


def most_accurate(trials: Sequence[dict], key: str = "val_accuracy") -> list[dict]:
    """The trials within SCHEME_TIE points of the best `key` accuracy, of which the chooser keeps the
    fastest; apart so that bench/int8_isa.py applies the same rule to emulated CPUs."""
    best = max(trial[key] for trial in trials)
    return [trial for trial in trials if 100.0 * (best - trial[key]) <= SCHEME_TIE]


def quantize_torch(
    net: nn.Module, out_path: Path, mode: str, example: torch.Tensor, calibration: Iterable[torch.Tensor] = ()
) -> dict:
    """torch-native INT8 for TorchScript users, saved as a traced `.ts`.

    Static: FX graph mode with the host engine's qconfig (`torch_engine`; prepare fuses conv-bn-relu, the
    calibration batches set activation ranges, convert swaps in quantized kernels). Dynamic: Linear/LSTM/GRU
    weights to int8, activations quantized per call.
    """
    from torch.ao.quantization import get_default_qconfig_mapping, quantize_dynamic
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    # Lightning's test hooks run in inference mode; tensors made there cannot enter tracing: clone them out
    net = cpu_float_copy(net)
    with quiet(), torch.inference_mode(False), torch.no_grad():
        example = example.to("cpu", torch.float32).clone()
        engine = torch_engine()
        torch.backends.quantized.engine = engine
        if mode == "static":
            prepared = prepare_fx(net, get_default_qconfig_mapping(engine), (example,))
            for batch in calibration:
                prepared(batch.to("cpu", torch.float32).clone())
            quantized = convert_fx(prepared)
        else:
            quantized = quantize_dynamic(net, set(DYNAMIC_MODULES), dtype=torch.qint8)
        traced = torch.jit.freeze(torch.jit.trace(quantized, example, check_trace=False).eval())
        torch.jit.save(traced, str(out_path))
    method = "fx" if mode == "static" else "dynamic"
    return {"mode": mode, "engine": engine, "method": method, "isa": isa_family()}


def torch_engine() -> str:
    """torch's quantized engine for this host: x86 (FBGEMM and oneDNN; 7-bit activations on every x86,
    so no saturation) or QNNPACK on ARM."""
    return "qnnpack" if platform.machine().lower() in ("arm64", "aarch64") else "x86"


RUNTIMES = quantizable_runtimes()


def quantize_export(
    net: nn.Module,
    spec: PreprocessSpec,
    out_dir: str | Path,
    *,
    net_config: dict,
    mode: str,
    calibration: Sequence[torch.Tensor],
    val: Batches,
    test: Batches,
    max_drop: float = DEFAULT_MAX_DROP,
    runtimes: Sequence[str] = RUNTIMES,
    schemes: Sequence[Int8Scheme] | None = None,
) -> ExportReport:
    """Add gated INT8 variants of `net` to the export folder `out_dir` and to its `export.json`.

    `calibration` holds preprocessed train images (static mode); `val` the labelled validation batches
    the ONNX Runtime scheme is chosen on; `test` the labelled test batches every variant is then gated
    on, against the FP32 network's predictions. The FP32 ONNX model is exported first
    if the folder does not have one. `schemes`: the ONNX Runtime candidates (default: this host's).
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
    if "onnx" in runtimes:
        val = [(images.to("cpu", torch.float32), labels.cpu()) for images, labels in val]
        scheme, trials = choose_onnx_scheme(
            fp32_onnx, out_dir, mode, calibration, val, schemes or scheme_candidates()
        )
    writers = {
        "onnx": lambda path: {
            **quantize_onnx(fp32_onnx, path, mode, calibration, scheme),
            "candidates": trials,
        },
        "torchscript": lambda path: quantize_torch(net, path, mode, test[0][0][:2], calibration),
    }
    for runtime in runtimes:
        name = int8_of(runtime).name
        report.formats[name] = produce(
            name,
            int8_of(runtime).filename,
            out_dir,
            write=writers[runtime],
            check=lambda path, fmt=name: check_accuracy(load_artifact(fmt, path), reference, test, max_drop),
        )
        report.formats[name]["calibration_batches"] = len(calibration) if mode == "static" else 0
    report.save()
    return report


def quantize_lineage(
    mode: str, calibration_batches: int, max_drop: float, report: ExportReport | None
) -> dict:
    """The registry lineage step of a quantization: settings and each INT8 artifact's gate figures."""
    results = {
        name: entry.get("accuracy", {"error": entry.get("error", "")})
        for name, entry in (report.int8.items() if report else ())
    }
    return {
        "step": "quantize",
        "mode": mode,
        "calibration_batches": calibration_batches if mode == "static" else 0,
        "max_drop": max_drop,
        "isa": isa_family(),
        "onnx_scheme": report.formats.get(int8_of("onnx").name, {}).get("scheme", {}).get("name")
        if report
        else None,
        "results": results,
    }

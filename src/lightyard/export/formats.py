"""Every artifact format lightyard writes, in one table that imports neither torch nor ONNX Runtime.

Export, quantization, the runtimes, the CLI, the compression report and the server all read this table:
a new format is one row here plus its writer (`writers.py`, `compress/quantization.py`) and, for a new
runtime, its loader (`runtimes.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from lightyard.errors import UserError


@dataclass(frozen=True)
class ArtifactFormat:
    """One artifact format. `name` is how export.json, the registry and `LIGHTYARD_RUNTIME` call it."""

    name: str
    filename: str
    runtime: str  # the loader that runs it (`runtimes.LOADERS`)
    precision: str  # fp32 or int8
    needs_torch: bool  # to run it, not to write it: a server of the others runs without torch
    label: str  # its row in the compression report
    served: bool  # whether `bentoml serve` may run it (LIGHTYARD_RUNTIME)


FORMATS: dict[str, ArtifactFormat] = {
    fmt.name: fmt
    for fmt in (
        ArtifactFormat("onnx", "model.onnx", "onnx", "fp32", False, "ONNX FP32", served=True),
        # TorchScript is deprecated in favour of torch.export: offered while the pinned torch's
        # torch.jit still loads it, for deployments that run LibTorch.
        ArtifactFormat("torchscript", "model.ts", "torchscript", "fp32", True, "TorchScript", served=True),
        # torch.export programs are for AOTInductor and ExecuTorch builds, not for the server.
        ArtifactFormat("pt2", "model.pt2", "pt2", "fp32", True, "torch.export", served=False),
        ArtifactFormat("onnx-int8", "model.int8.onnx", "onnx", "int8", False, "ONNX INT8", served=True),
        ArtifactFormat(
            "torchscript-int8", "model.int8.ts", "torchscript", "int8", True, "torch INT8", served=True
        ),
    )
}
EXPORTED = tuple(name for name, fmt in FORMATS.items() if fmt.precision == "fp32")  # what export writes
SERVED = tuple(name for name, fmt in FORMATS.items() if fmt.served)
QUANTIZED = tuple(name for name, fmt in FORMATS.items() if fmt.precision == "int8")


def artifact_format(name: str) -> ArtifactFormat:
    """The format called `name`, or one line listing the known ones."""
    if name not in FORMATS:
        raise UserError(f"unknown artifact format '{name}': use one of {', '.join(FORMATS)}")
    return FORMATS[name]


def int8_of(runtime: str) -> ArtifactFormat:
    """The INT8 format a runtime's quantization writes (`onnx` → `onnx-int8`)."""
    return next(FORMATS[name] for name in QUANTIZED if FORMATS[name].runtime == runtime)


def quantizable_runtimes() -> tuple[str, ...]:
    """The runtimes that have an INT8 format: what `quantize.runtimes` may name."""
    return tuple(FORMATS[name].runtime for name in QUANTIZED)

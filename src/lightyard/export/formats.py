"""The deployable formats: how each one is written from an eager network, and how each one is run back.

Every format is written from the same CPU float32 network in eval mode, with a dynamic batch axis, and
loaded back in its own runtime (ONNX Runtime, `torch.jit.load`, `torch.export.load`), so the parity gate
compares what a deployment would actually run.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lightyard.errors import first_line

INPUT_NAME = "input"
OUTPUT_NAME = "output"

Runner = Callable[[torch.Tensor], np.ndarray]  # a batch of model inputs to logits


@dataclass(frozen=True)
class Format:
    """One export format: its file name, its writer (returns what is worth recording), its loader."""

    name: str
    filename: str
    write: Callable[[nn.Module, torch.Tensor, Path, int | None], dict]
    load: Callable[[Path], Runner]


def _batch_axis() -> dict[int, torch.export.Dim]:
    return {0: torch.export.Dim("batch", min=1, max=65536)}


@contextlib.contextmanager
def quiet():
    """The exporters print progress, optimizer passes and deprecation notes; the report says what matters."""
    # the root logger too: onnxruntime.quantization logs through it
    chatty = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx", "")]
    levels = [logger.level for logger in chatty]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for logger in chatty:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(chatty, levels, strict=True):
                logger.setLevel(level)


def write_onnx(net: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> dict:
    """Dynamo exporter, one self-contained file, named `input`/`output`, checked by `onnx.checker`."""
    import onnx

    with quiet():
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(_batch_axis(),),
            opset_version=opset,
            external_data=False,
            dynamo=True,
            verbose=False,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    if not batch_dim.dim_param:
        raise RuntimeError("the exported graph has a fixed batch size, not a dynamic batch axis")
    opset_used = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    return {"opset": opset_used, "checker": "passed"}


def load_onnx(path: Path, threads: int | None = None) -> Runner:
    """An ONNX Runtime CPU session; `threads` fixes its intra-op thread pool (default: one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda inputs: session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})[0]


def write_torchscript(net: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> dict:
    """`torch.jit.script` keeps control flow; nets it cannot compile are traced instead."""
    with quiet():
        try:
            module = torch.jit.script(net)
            details = {"method": "script"}
        except Exception as err:
            module = torch.jit.trace(net, example, check_trace=False)
            details = {"method": "trace", "script_failed": first_line(err)}
        torch.jit.save(module, str(path))
    return details


def load_torchscript(path: Path) -> Runner:
    with quiet():
        module = torch.jit.load(str(path), map_location="cpu").eval()
    return lambda inputs: _run_torch(module, inputs)


def write_pt2(net: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> dict:
    with quiet():
        program = torch.export.export(net, (example,), dynamic_shapes=(_batch_axis(),))
        torch.export.save(program, str(path))
    return {}


def load_pt2(path: Path) -> Runner:
    with quiet():
        module = torch.export.load(str(path)).module()
    return lambda inputs: _run_torch(module, inputs)


def _run_torch(module: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return module(inputs).numpy()


FORMATS: dict[str, Format] = {
    fmt.name: fmt
    for fmt in (
        Format("onnx", "model.onnx", write_onnx, load_onnx),
        Format("torchscript", "model.ts", write_torchscript, load_torchscript),
        Format("pt2", "model.pt2", write_pt2, load_pt2),
    )
}


def runtime_of(fmt: str) -> str:
    """The runtime that runs a registered format: `onnx-int8` runs in ONNX Runtime like `onnx`."""
    runtime = fmt.removesuffix("-int8")
    if runtime not in FORMATS:
        raise ValueError(f"unknown format {fmt}")
    return runtime


def load_artifact(fmt: str, path: Path, threads: int | None = None) -> Runner:
    """Any exported or compressed artifact, loaded in its runtime; `threads` caps ONNX Runtime's pool
    (torch's is process-wide: `torch.set_num_threads`)."""
    runtime = runtime_of(fmt)
    return load_onnx(path, threads) if runtime == "onnx" else FORMATS[runtime].load(path)

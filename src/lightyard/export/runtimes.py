"""Running an exported artifact: each format loaded in its own runtime, as a batch → logits function.

Importing this module needs neither torch nor the exporters: the ONNX runtimes (`onnx`, `onnx-int8`) run on
ONNX Runtime and NumPy alone, which is what lets the server run without torch. TorchScript and
torch.export artifacts import torch when they are loaded.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

INPUT_NAME = "input"
OUTPUT_NAME = "output"

Runner = Callable[[np.ndarray], np.ndarray]  # a float32 N×C×H×W batch of model inputs to N×classes logits


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Exporters and loaders print progress, optimizer passes and deprecation notes; reports say what
    matters."""
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


def onnx_session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session. `threads` fixes the intra-op pool (default: one thread per core); with
    one thread there is no pool at all, which is what a server with one worker per core wants."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_onnx(path: Path, threads: int | None = None) -> Runner:
    session = onnx_session(path, threads)
    return lambda inputs: session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]


def load_torchscript(path: Path, threads: int | None = None) -> Runner:
    import torch

    _set_torch_threads(threads)
    with quiet():
        module = torch.jit.load(str(path), map_location="cpu").eval()
    return lambda inputs: _run_torch(module, inputs)


def load_pt2(path: Path, threads: int | None = None) -> Runner:
    import torch

    _set_torch_threads(threads)
    with quiet():
        module = torch.export.load(str(path)).module()
    return lambda inputs: _run_torch(module, inputs)


def _set_torch_threads(threads: int | None) -> None:
    """torch's intra-op pool is per process, not per model: set only when asked."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _run_torch(module: Callable, inputs: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return module(torch.from_numpy(inputs)).numpy()


LOADERS: dict[str, Callable[[Path, int | None], Runner]] = {
    "onnx": load_onnx,
    "torchscript": load_torchscript,
    "pt2": load_pt2,
}


def runtime_of(fmt: str) -> str:
    """The runtime that runs a registered format: `onnx-int8` runs in ONNX Runtime like `onnx`."""
    runtime = fmt.removesuffix("-int8")
    if runtime not in LOADERS:
        raise ValueError(f"unknown format {fmt}")
    return runtime


def load_artifact(fmt: str, path: Path, threads: int | None = None) -> Runner:
    """Any exported or compressed artifact (`onnx`, `onnx-int8`, `torchscript`, `torchscript-int8`, `pt2`)
    loaded in its runtime; `threads` sizes the runtime's intra-op pool (torch's is process-wide)."""
    return LOADERS[runtime_of(fmt)](path, threads)

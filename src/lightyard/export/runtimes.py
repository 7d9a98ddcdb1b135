"""Running an exported artifact: each format loaded in its own runtime, as a batch → logits function.

Importing this module needs neither torch nor the exporters: the ONNX formats (`onnx`, `onnx-int8`) run on
ONNX Runtime and NumPy alone, which is what lets the server run without torch. TorchScript and
torch.export artifacts import torch when they are loaded. Every runtime runs on the CPU unless `device` is
`cuda`: ONNX Runtime's CUDA execution provider (the `onnxruntime-gpu` package) or torch on the GPU.
"""

from __future__ import annotations

import contextlib
import io
import logging
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from lightyard.errors import UserError
from lightyard.export.formats import artifact_format

INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEVICES = ("cpu", "cuda")
PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}

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


def check_onnx_device(device: str) -> None:
    """ONNX Runtime's CPU package has no CUDA provider, and the GPU package falls back to the CPU with a
    log line when CUDA's libraries are missing: either way a `cuda` setting would serve on the CPU
    unnoticed, so it is refused with the fix instead."""
    import onnxruntime as ort

    if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise UserError(
            f"device=cuda needs ONNX Runtime's CUDA provider, which onnxruntime {ort.__version__} lacks: "
            "install onnxruntime-gpu (the build for your CUDA) in place of onnxruntime, or use device=cpu"
        )


def onnx_session(path: Path, threads: int | None = None, device: str = "cpu"):
    """An ONNX Runtime session on `device`. `threads` fixes the intra-op pool (default: one thread per
    core); with one thread there is no pool at all, which is what a server with one worker per core
    wants."""
    import onnxruntime as ort

    check_onnx_device(device)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=PROVIDERS[device])
    if session.get_providers()[0] != PROVIDERS[device][0]:
        raise UserError(
            f"ONNX Runtime could not start its {PROVIDERS[device][0]} for {path.name} (its log above says "
            "which CUDA library is missing): install the CUDA and cuDNN versions your onnxruntime-gpu "
            "build names, or use device=cpu"
        )
    return session


def latency_ms(run: Runner, images: np.ndarray, batch: int, repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of one call on `batch` images (repeated from `images` if it holds fewer). Here, not
    beside the other measurements, so that torch-free processes time runners the same way."""
    inputs = np.resize(images, (batch, *images.shape[1:])) if len(images) < batch else images[:batch]
    for _ in range(warmup):
        run(inputs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(inputs)
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def load_onnx(path: Path, threads: int | None = None, device: str = "cpu") -> Runner:
    session = onnx_session(path, threads, device)
    return lambda inputs: session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]


def load_torchscript(path: Path, threads: int | None = None, device: str = "cpu") -> Runner:
    import torch

    _set_torch_threads(threads)
    _check_torch_device(device)
    with quiet():
        module = torch.jit.load(str(path), map_location=device).eval()
    return lambda inputs: _run_torch(module, inputs, device)


def load_pt2(path: Path, threads: int | None = None, device: str = "cpu") -> Runner:
    import torch

    _set_torch_threads(threads)
    _check_torch_device(device)
    with quiet():
        module = torch.export.load(str(path)).module().to(device)
    return lambda inputs: _run_torch(module, inputs, device)


def _check_torch_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"device=cuda, but torch {torch.__version__} sees no CUDA GPU: install a CUDA build of torch "
            "on a machine with a GPU, or use device=cpu"
        )


def _set_torch_threads(threads: int | None) -> None:
    """torch's intra-op pool is per process, not per model: set only when asked."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _run_torch(module: Callable, inputs: np.ndarray, device: str) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return module(torch.from_numpy(inputs).to(device)).cpu().numpy()


LOADERS: dict[str, Callable[[Path, int | None, str], Runner]] = {
    "onnx": load_onnx,
    "torchscript": load_torchscript,
    "pt2": load_pt2,
}


def load_artifact(fmt: str, path: Path, threads: int | None = None, device: str = "cpu") -> Runner:
    """An artifact of any format in `formats.FORMATS`, loaded in its runtime on `device`; `threads` sizes
    the runtime's intra-op pool (torch's is process-wide)."""
    return LOADERS[artifact_format(fmt).runtime](path, threads, device)

"""What a Bento of the service installs: the serving packages alone, at the versions serving here.

The ONNX runtimes need ONNX Runtime, NumPy and Pillow behind BentoML and FastAPI (uvloop and httptools
are uvicorn's fast event loop and HTTP parser); only the TorchScript runtimes add torch. On `cuda`,
ONNX Runtime is its GPU package, `onnxruntime-gpu`. Versions are pinned to what is installed where
`bentoml build` runs, so a Bento serves with what was tested, without asking the network to lock them.
"""

from __future__ import annotations

from importlib import metadata

from lightyard.export.formats import FORMATS

# BentoML adds itself, at the version that built the Bento.
SERVING_PACKAGES = ("fastapi", "onnxruntime", "numpy", "pillow", "pyyaml", "uvloop", "httptools")
TORCH_PACKAGES = ("torch",)


def requirements(runtime: str, device: str = "cpu") -> list[str]:
    """`name==version` of every package a Bento serving `runtime` on `device` needs."""
    names = SERVING_PACKAGES + (TORCH_PACKAGES if FORMATS[runtime].needs_torch else ())
    pins = [f"{name}=={metadata.version(name)}" for name in names]
    if device == "cuda":  # the GPU package of the same release, also when building on a machine without it
        pins = [pin.replace("onnxruntime==", "onnxruntime-gpu==") for pin in pins]
    return pins

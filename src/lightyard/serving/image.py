"""What a Bento of the service installs: the serving packages alone, at the versions serving here.

The ONNX runtimes need ONNX Runtime, NumPy and Pillow behind BentoML and FastAPI (uvloop and httptools
are uvicorn's fast event loop and HTTP parser); only the TorchScript runtimes add torch. Versions are
pinned to what is installed where `bentoml build` runs, so a Bento serves with what was tested, without
asking the network to lock them.
"""

from __future__ import annotations

from importlib import metadata

# BentoML adds itself, at the version that built the Bento.
SERVING_PACKAGES = ("fastapi", "onnxruntime", "numpy", "pillow", "pyyaml", "uvloop", "httptools")
TORCH_PACKAGES = ("torch",)


def requirements(runtime: str) -> list[str]:
    """`name==version` of every package a Bento serving `runtime` needs."""
    names = SERVING_PACKAGES + (TORCH_PACKAGES if runtime.startswith("torchscript") else ())
    return [f"{name}=={metadata.version(name)}" for name in names]

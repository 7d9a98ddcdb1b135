"""The BentoML service, as `bentoml serve` finds it (bentofile.yaml: `service: serve:Lightyard`).

    bentoml serve                                    # the production model, else the newest, on ONNX Runtime
    LIGHTYARD_MODEL=digits-cnn@staging LIGHTYARD_RUNTIME=onnx-int8 bentoml serve --port 3000
    bentoml build && bentoml serve lightyard:latest  # a Bento serves the model it was built with

The service itself lives in `lightyard.serving.service`; settings in `conf/serve.yaml` and `LIGHTYARD_*`.
Serving the ONNX runtimes imports no torch: this file and everything it imports stay free of it.
"""

import os
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
BENTO_MANIFEST = HERE.parent / "bento.yaml"  # present inside a built Bento
sys.path.insert(0, str(HERE / "src"))  # lightyard's source travels beside this file, installed or not

from lightyard.bentoml_adapter import restart_dead_workers_promptly  # noqa: E402
from lightyard.errors import UserError  # noqa: E402


def _built_model() -> str | None:
    """The model tag a built Bento declares, so it keeps serving that one, not whatever is newest."""
    if not BENTO_MANIFEST.is_file():
        return None
    services = yaml.safe_load(BENTO_MANIFEST.read_text()).get("services", [])
    tags = [model["tag"] for service in services for model in service.get("models", [])]
    return tags[0] if tags else None


if built := _built_model():
    os.environ.setdefault("LIGHTYARD_MODEL", built)
restart_dead_workers_promptly()

try:
    from lightyard.serving.service import Lightyard
except UserError as err:  # no model, an unknown tag, a missing runtime: one line, and no server
    sys.exit(f"error: {err}")

__all__ = ["Lightyard"]

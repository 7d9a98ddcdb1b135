"""The BentoML service, as `bentoml serve` finds it (bentofile.yaml: `service: serve:Lightyard`).

    bentoml serve                                    # the production model, else the newest, on ONNX Runtime
    LIGHTYARD_MODEL=digits-cnn@staging LIGHTYARD_RUNTIME=onnx-int8 bentoml serve --port 3000
    bentoml build && bentoml serve lightyard:latest  # a Bento serves the model it was built with

The service itself lives in `lightyard.serving.service`; settings in `conf/serve.yaml` and `LIGHTYARD_*`.
"""

import os
import sys
from pathlib import Path

import yaml

from lightyard.errors import UserError

BENTO_MANIFEST = Path(__file__).resolve().parent.parent / "bento.yaml"  # present inside a built Bento


def _built_model() -> str | None:
    """The model tag a built Bento declares, so it keeps serving that one, not whatever is newest."""
    if not BENTO_MANIFEST.is_file():
        return None
    services = yaml.safe_load(BENTO_MANIFEST.read_text()).get("services", [])
    tags = [model["tag"] for service in services for model in service.get("models", [])]
    return tags[0] if tags else None


if built := _built_model():
    os.environ.setdefault("LIGHTYARD_MODEL", built)

try:
    from lightyard.serving.service import Lightyard, ModelRunner
except UserError as err:  # no model, an unknown tag, a missing runtime: one line, and no server
    sys.exit(f"error: {err}")

__all__ = ["Lightyard", "ModelRunner"]

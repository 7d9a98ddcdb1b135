"""What the server serves and how: `conf/serve.yaml`, overridden by `LIGHTYARD_*` variables.

LIGHTYARD_MODEL=digits-cnn@staging LIGHTYARD_RUNTIME=onnx-int8 bentoml serve
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from lightyard.bentoml_adapter import available_cpus
from lightyard.errors import UserError
from lightyard.export.formats import SERVED
from lightyard.export.runtimes import DEVICES
from lightyard.registry.store import ModelStore, Version

CONFIG = Path(__file__).resolve().parents[3] / "conf" / "serve.yaml"
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
KINDS = {int: "a whole number", bool: "true or false", str: "text"}
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class ServingSettings:
    model: str | None = None  # a registry reference; None: the production version, else the newest
    runtime: str = "onnx"
    device: str = "cpu"  # cuda: ONNX Runtime's CUDA provider (onnxruntime-gpu) or torch on the GPU
    workers: int = 1  # server processes, each with the routes and a runtime; 0: one per core
    streams: int = 0  # runtime calls in flight per worker; 0: fill the cores (cores / workers / threads)
    threads: int = 1  # intra-op threads of each runtime call
    runtime_nice: int = 10  # runtime threads run this much nicer than the event loop (Linux); 0: equal
    max_batch_size: int = 32
    max_latency_ms: int = 5000
    max_body_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 16_000_000
    max_images: int = 32  # per /predict_batch request
    access_log: bool = False
    prometheus: bool = True
    tracing: bool = False

    def __post_init__(self) -> None:
        if self.runtime not in SERVED:
            raise UserError(
                f"runtime '{self.runtime}' is unknown: set LIGHTYARD_RUNTIME to {', '.join(SERVED)}"
            )
        if self.device not in DEVICES:
            raise UserError(
                f"device '{self.device}' is unknown: set LIGHTYARD_DEVICE to {' or '.join(DEVICES)}"
            )
        for item in fields(self):
            value = getattr(self, item.name)
            expected = {"int": int, "bool": bool}.get(item.type, str)
            if not (type(value) is expected or (value is None and item.name == "model")):
                raise UserError(
                    f"{item.name}: {value!r} is not {KINDS[expected]}: set it in conf/serve.yaml or "
                    f"LIGHTYARD_{item.name.upper()}"
                )
            least = 0 if item.name in ("workers", "streams", "runtime_nice") else 1  # 0: one per core / off
            if item.type == "int" and value < least:
                raise UserError(
                    f"{item.name}={value} must be at least {least} (LIGHTYARD_{item.name.upper()})"
                )

    @property
    def worker_count(self) -> int:
        return self.workers or available_cpus()

    @property
    def stream_count(self) -> int:
        """Runtime calls in flight per worker, so that workers × streams × threads fill the cores."""
        return self.streams or max(1, available_cpus() // (self.worker_count * self.threads))

    @classmethod
    def load(cls, config: Path = CONFIG, environ: Mapping[str, str] = os.environ) -> ServingSettings:
        """Defaults from `conf/serve.yaml` (when present), then `LIGHTYARD_<SETTING>` variables."""
        values: dict = (yaml.safe_load(config.read_text()) if config.is_file() else None) or {}
        for item in fields(cls):
            raw = environ.get(f"LIGHTYARD_{item.name.upper()}")
            if raw is not None:
                values[item.name] = _parse(item.name, item.type, raw)
        unknown = sorted(set(values) - {item.name for item in fields(cls)})
        if unknown:
            raise UserError(f"{config}: unknown setting {', '.join(unknown)}")
        return cls(**values)


def _parse(name: str, kind: str, raw: str) -> int | bool | str | None:
    variable = f"LIGHTYARD_{name.upper()}={raw}"
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise UserError(f"{variable} is not a whole number") from None
    if kind == "bool":
        if raw.lower() not in BOOLEANS:
            raise UserError(f"{variable} is not true or false")
        return BOOLEANS[raw.lower()]
    return raw or None


def served_version(settings: ServingSettings, store: ModelStore) -> Version:
    """The version to serve: `settings.model`, else the newest production version, else the newest."""
    listing = "list the registered models with `lightyard models list`"
    if settings.model:
        try:
            return store.resolve(settings.model)
        except UserError as err:
            hint = "" if "lightyard models" in str(err) else f"; {listing}"
            raise UserError(f"cannot serve {settings.model}: {err}{hint}") from None
    versions = store.versions()
    if not versions:
        raise UserError(
            f"no model to serve: the registry at {store.models} is empty; train and register one "
            "(python train.py) or set LIGHTYARD_MODEL"
        )
    production = [v for v in versions if v.stage == "production"]
    return max(production or versions, key=lambda v: v.created)

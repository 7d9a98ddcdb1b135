"""The HTTP service: two BentoML services in one `bentoml serve`.

`Lightyard` (the one users call) owns the HTTP routes, a FastAPI app: it checks and decodes uploads with
the model's own preprocessing (`PreprocessSpec.input_from_file`, as in training and export checks) and
sends each image to `ModelRunner.infer`, a batchable API: BentoML's adaptive batching merges concurrent
single-image calls into one runtime call. `ModelRunner` holds the runtime (ONNX Runtime by default,
threads set explicitly). Both load the model through the registry, checksums verified first.

Bad input never reaches the runtime: it gets a 4xx JSON `{"error": …}` and the server keeps serving.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import bentoml
import numpy as np
import torch
from bentoml.exceptions import BentoMLException
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from lightyard import __version__
from lightyard.data.preprocess import ImageTooLarge, UnsupportedImage
from lightyard.errors import UserError
from lightyard.registry import RegisteredModel, load
from lightyard.registry.store import ModelStore
from lightyard.serving.limits import BodyLimit, BodyTooLarge
from lightyard.serving.settings import IMAGE_FORMATS, ServingSettings, served_version

log = logging.getLogger("lightyard")
RUNNER_ATTEMPTS = 3


def serving_store() -> ModelStore:
    """The model store BentoML is using: `$BENTOML_HOME/models`, or the store it set for a Bento."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return ModelStore(Path(BentoMLContainer.model_store.get()._path).parent)


def load_served(settings: ServingSettings) -> RegisteredModel:
    """The version to serve, its files verified, with the configured runtime present: checked when the
    module is imported, so a bad setting stops `bentoml serve` with one line before any worker starts."""
    store = serving_store()
    model = load(served_version(settings, store).tag, store=store)
    formats = model.metadata.get("formats", {})
    if settings.runtime not in formats:
        hint = f"lightyard quantize {model.tag}" if settings.runtime.endswith("-int8") else "export it again"
        raise UserError(
            f"{model.tag} has no {settings.runtime} artifact (registered: {', '.join(formats) or 'none'}): "
            f"{hint}, or set LIGHTYARD_RUNTIME"
        )
    return model


def settle_heap() -> None:
    """Called by each worker once it has loaded everything, to keep garbage collection out of latency.

    Torch, ONNX and BentoML leave about 700,000 objects on a worker's heap, and every full collection
    walked them all: 0.3-0.4 s in which the worker stood still and every request in flight waited (seen
    as clusters of 32 slow requests; p99 twice p50). Freezing moves them out of the collector's sight.
    A larger first threshold lets each request's short-lived garbage die young instead of being promoted
    into full collections. `bench/serving.py`, ResNet-18, 32 clients: p99 about halved."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


SETTINGS = ServingSettings.load()
SERVED = load_served(SETTINGS)
RUNNER_TIMEOUT_S = SETTINGS.max_latency_ms / 1000 + 10  # the batching window, then compute time


class RequestError(Exception):
    """A client mistake: answered with `status` and `{"error": message}`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# BentoML (since 1.4.30) replaces its client session to a dependency every `max_requests` calls or
# `max_age` seconds and closes the old one with the calls still in flight on it: under 32 concurrent
# clients about one call in five was cut off and had to be sent again. The model service is local, so
# the session is kept for the life of the worker.
KEEP_SESSION = {"max_requests": 2**31 - 1, "max_age": float(2**31 - 1)}


@bentoml.service(name="lightyard-model", workers=1, traffic={"timeout": 120}, runner_connection=KEEP_SESSION)
class ModelRunner:
    """The runtime, behind a batchable API: a batch of preprocessed images in, class probabilities out."""

    model = bentoml.models.BentoModel(SERVED.tag)  # declares the served version to `bentoml build`

    def __init__(self) -> None:
        threads = SETTINGS.intra_op_threads
        torch.set_num_threads(threads)
        self.run = SERVED.runner(SETTINGS.runtime, threads)
        log.info(f"serving {SERVED.tag} with {SETTINGS.runtime} ({threads} threads)")
        settle_heap()

    @bentoml.api(
        batchable=True, max_batch_size=SETTINGS.max_batch_size, max_latency_ms=SETTINGS.max_latency_ms
    )
    def infer(self, inputs: np.ndarray) -> np.ndarray:
        logits = np.asarray(self.run(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))))
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


IMAGE_FIELD = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "top_k": {"type": "integer", "minimum": 1, "default": 5},
                    },
                }
            }
        },
        "required": True,
    }
}
app = FastAPI(
    title="lightyard", version=__version__, description="Image classification with a registered model."
)
app.add_middleware(BodyLimit, max_bytes=SETTINGS.max_body_bytes)


@bentoml.service(name="lightyard", workers=1, traffic={"timeout": 120})
@bentoml.asgi_app(app)
class Lightyard:
    """Routes: POST /predict, POST /predict_batch, GET /health, GET /info (and BentoML's /livez, /readyz,
    /metrics)."""

    runner = bentoml.depends(ModelRunner)

    def __init__(self) -> None:
        torch.set_num_threads(1)  # one upload's preprocessing is small: leave the cores to the runtime
        self.registered = SERVED
        self.spec = self.registered.spec
        self.labels = self.registered.class_names()
        settle_heap()

    def decode(self, data: bytes, name: str) -> np.ndarray:
        """Upload bytes → the model's input, within the limits; a `RequestError` for anything else."""
        if not data:
            raise RequestError(f"{name} is an empty file: send the image's bytes")
        try:
            tensor = self.spec.input_from_file(data, SETTINGS.max_pixels, IMAGE_FORMATS, name)
        except ImageTooLarge as err:
            raise RequestError(str(err), 413) from None
        except UnsupportedImage as err:
            raise RequestError(str(err), 415) from None
        except UserError as err:
            raise RequestError(str(err)) from None
        return tensor.numpy()

    def top(self, probabilities: np.ndarray, k: int) -> list[dict[str, Any]]:
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [
            {"class": int(i), "label": self.labels[i], "probability": float(probabilities[i])} for i in order
        ]

    def top_k(self, raw: Any) -> int:
        classes = len(self.labels)
        if raw is None:
            return min(5, classes)
        try:
            k = int(str(raw))
        except ValueError:
            raise RequestError(f"top_k={raw!r} is not a whole number: send 1 to {classes}") from None
        if not 1 <= k <= classes:
            raise RequestError(
                f"top_k={k} is out of range: the model has {classes} classes, send 1 to {classes}"
            )
        return k

    async def classify(self, images: list[np.ndarray]) -> np.ndarray:
        """Through the batchable API. Should a call to the model service still be lost (its connection
        reset before any response, or no answer at all; see KEEP_SESSION for the cause that was found),
        it is made again, since inference is idempotent: after a reset at once, after silence once the
        batching window and a compute allowance have passed. Each retry is logged."""
        batch = np.stack(images)
        for attempt in range(1, RUNNER_ATTEMPTS + 1):
            try:
                with anyio.fail_after(RUNNER_TIMEOUT_S):
                    return await self.runner.to_async.infer(batch)
            except (aiohttp.ClientConnectionError, TimeoutError) as err:
                if attempt == RUNNER_ATTEMPTS:
                    raise
                log.warning(f"model service call {attempt} failed ({type(err).__name__}): trying again")


def _service() -> Lightyard:
    return bentoml.get_current_service()


async def _form(request: Request) -> FormData:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise RequestError(
            "send the image as multipart/form-data field 'image' (curl -F image=@digit.png …), "
            f"not {content_type or 'no content type'}",
            415,
        )
    return await request.form(max_files=SETTINGS.max_images, max_fields=16)


def _uploads(form: FormData, most: int) -> list[UploadFile]:
    uploads = [item for item in form.getlist("image") if isinstance(item, UploadFile)]
    if not uploads:
        raise RequestError("missing field 'image': send the image as multipart/form-data field 'image'")
    if len(uploads) > most:
        raise RequestError(f"{len(uploads)} images in one request, at most {most}: split the request", 413)
    return uploads


async def _decode_all(service: Lightyard, uploads: list[UploadFile]) -> list[np.ndarray]:
    decoded = []
    for upload in uploads:
        data = await upload.read()
        decoded.append(await anyio.to_thread.run_sync(service.decode, data, upload.filename or "image"))
    return decoded


@app.post("/predict", openapi_extra=IMAGE_FIELD)
async def predict(request: Request) -> dict:
    """One image (multipart field `image`) → its `top_k` classes (default 5), most probable first."""
    service = _service()
    form = await _form(request)
    upload = _uploads(form, 1)[0]
    k = service.top_k(form.get("top_k"))
    probabilities = await service.classify(await _decode_all(service, [upload]))
    return {"predictions": service.top(probabilities[0], k), "model": service.registered.tag}


@app.post("/predict_batch", openapi_extra=IMAGE_FIELD)
async def predict_batch(request: Request) -> dict:
    """Several images (repeated multipart field `image`) → the `top_k` classes of each, in order."""
    service = _service()
    form = await _form(request)
    uploads = _uploads(form, SETTINGS.max_images)
    k = service.top_k(form.get("top_k"))
    probabilities = await service.classify(await _decode_all(service, uploads))
    results = [
        {"filename": upload.filename, "predictions": service.top(row, k)}
        for upload, row in zip(uploads, probabilities, strict=True)
    ]
    return {"results": results, "model": service.registered.tag}


@app.get("/health")
async def health() -> dict:
    return {"status": "healthy", "model": _service().registered.tag}


@app.get("/info")
async def info() -> dict:
    """The served version: tag, stage, metrics, preprocessing, runtime, batching and input limits."""
    model = _service().registered
    return {
        "model": model.tag,
        "stage": model.stage,
        "runtime": SETTINGS.runtime,
        "metrics": model.metadata.get("metrics", {}),
        "preprocess": model.spec.to_dict(),
        "formats": sorted(model.metadata.get("formats", {})),
        "batching": {"max_batch_size": SETTINGS.max_batch_size, "max_latency_ms": SETTINGS.max_latency_ms},
        "limits": {
            "max_body_bytes": SETTINGS.max_body_bytes,
            "max_pixels": SETTINGS.max_pixels,
            "max_images": SETTINGS.max_images,
            "image_formats": list(IMAGE_FORMATS),
        },
    }


@app.exception_handler(RequestError)
async def _request_error(request: Request, err: RequestError) -> JSONResponse:
    return JSONResponse({"error": err.message}, status_code=err.status)


@app.exception_handler(BodyTooLarge)
async def _body_too_large(request: Request, err: BodyTooLarge) -> JSONResponse:
    return JSONResponse({"error": str(err)}, status_code=413)


@app.exception_handler(BentoMLException)
async def _bentoml_error(request: Request, err: BentoMLException) -> JSONResponse:
    """Overload (503 when a request would wait past max_latency_ms) and other server-side failures."""
    status = int(err.error_code)
    return JSONResponse({"error": f"{type(err).__name__}: {err}"}, status_code=status)


@app.exception_handler(TimeoutError)
async def _timeout(request: Request, err: TimeoutError) -> JSONResponse:
    message = f"the model service did not answer in {RUNNER_ATTEMPTS} tries of {RUNNER_TIMEOUT_S:g} s"
    return JSONResponse({"error": message}, status_code=504)


@app.exception_handler(HTTPException)
async def _http_error(request: Request, err: HTTPException) -> JSONResponse:
    return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

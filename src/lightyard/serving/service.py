"""The HTTP service: one BentoML service whose worker holds the routes and the runtime.

A request is parsed, checked and decoded with the model's own preprocessing (`PreprocessSpec.to_array`,
as in training and the export checks) on the worker's event loop, then queued for BentoML's adaptive
batching, which merges concurrent requests into runtime calls, `streams` of them side by side (one per
core by default): the arrays never leave the process. The ONNX runtimes need no torch, so neither does
any serving process; TorchScript imports it. More workers (`workers`) add event loops, for models so
small that parsing HTTP, not the runtime, bounds the throughput.

Bad input never reaches the runtime: it gets a 4xx JSON `{"error": …}` and the server keeps serving.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from lightyard import __version__
from lightyard.bentoml_adapter import internals_problem, served_model_store, swagger_ui_assets
from lightyard.cpu import int8_warning
from lightyard.errors import UserError
from lightyard.export.formats import FORMATS, QUANTIZED
from lightyard.export.runtimes import check_onnx_device
from lightyard.registry import ModelStore, RegisteredModel, load
from lightyard.serving import protocol
from lightyard.serving.balance import RecycleConnections
from lightyard.serving.image import requirements
from lightyard.serving.inference import batched_classifier
from lightyard.serving.limits import BodyLimit, BodyTooLarge
from lightyard.serving.protocol import RequestError, json_response
from lightyard.serving.settings import IMAGE_FORMATS, ServingSettings, served_version

log = logging.getLogger("lightyard")
RECONNECT_AFTER_S = 2.0  # with several workers: how long a keep-alive connection stays on one


def load_served(settings: ServingSettings) -> RegisteredModel:
    """The version to serve, its files verified, with the configured runtime present: checked when the
    module is imported, so a bad setting stops `bentoml serve` with one line before any worker starts."""
    if problem := internals_problem():  # the adaptive batcher subclasses BentoML's private dispatcher
        raise UserError(problem)
    store = ModelStore(served_model_store())
    model = load(served_version(settings, store).tag, store=store)
    formats = model.metadata.get("formats", {})
    if settings.runtime not in formats:
        hint = f"lightyard quantize {model.tag}" if settings.runtime in QUANTIZED else "export it again"
        raise UserError(
            f"{model.tag} has no {settings.runtime} artifact (registered: {', '.join(formats) or 'none'}): "
            f"{hint}, or set LIGHTYARD_RUNTIME"
        )
    if FORMATS[settings.runtime].runtime == "onnx":
        check_onnx_device(settings.device)
    return model


def settle_heap() -> None:
    """Called by each worker once it has loaded everything, to keep garbage collection out of latency.

    Everything imported and loaded stays for the worker's life; full collections walked it all, hundreds
    of thousands of objects with torch loaded, and stalled the worker while every request in flight
    waited. Freezing
    moves it out of the collector's sight, and a larger first threshold lets each request's short-lived
    garbage die young instead of being promoted into full collections."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


SETTINGS = ServingSettings.load()
SERVED = load_served(SETTINGS)

IMAGE_FIELD = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "top_k": {"type": "integer", "minimum": 1, "default": protocol.DEFAULT_TOP_K},
                    },
                }
            }
        },
        "required": True,
    }
}
PAGE = Path(__file__).with_name("page")  # the service's own page: static files, read once
DESCRIPTION = """Image classification with a version from lightyard's model registry (the served tag, its
preprocessing and metrics are at `GET /info`). Post an image file as the multipart field `image`:

    curl -F image=@digit.png http://HOST:3000/predict

Bad input gets a 4xx JSON `{"error": …}`. BentoML's own routes sit beside these: `/livez`, `/readyz`
(probes) and `/metrics` (Prometheus)."""
TAGS = [
    {"name": "prediction", "description": "Classify uploaded images with the served model."},
    {"name": "model", "description": "What is served: tag, stage, runtime, preprocessing, metrics."},
    {"name": "health", "description": "Liveness for load balancers."},
]
app = FastAPI(
    title="lightyard", version=__version__, description=DESCRIPTION, openapi_tags=TAGS,
    docs_url=None, redoc_url=None,  # /docs below, with Swagger UI's files served from here: works offline
)  # fmt: skip
app.mount("/page", StaticFiles(directory=PAGE), name="page")
app.mount("/docs/assets", StaticFiles(directory=swagger_ui_assets()), name="swagger-ui")
INDEX_HTML = (PAGE / "index.html").read_bytes()
DOCS_HTML = get_swagger_ui_html(
    openapi_url="/openapi.json", title="lightyard API", swagger_js_url="/docs/assets/swagger-ui-bundle.js",
    swagger_css_url="/docs/assets/swagger-ui.css", swagger_favicon_url="/page/favicon.svg",
).body  # fmt: skip
app.add_middleware(BodyLimit, max_bytes=SETTINGS.max_body_bytes)
if SETTINGS.worker_count > 1:
    app.add_middleware(RecycleConnections, max_age_s=RECONNECT_AFTER_S)


@bentoml.service(
    name="lightyard",
    workers=SETTINGS.worker_count,
    traffic={"timeout": 120},
    image=bentoml.images.Image(python_version="3.11", lock_python_packages=False).python_packages(
        *requirements(SETTINGS.runtime, SETTINGS.device)
    ),
    # Per-request work BentoML does unless told otherwise, each costing throughput (docs/results.md,
    # Serving). On by setting, for deployments that read them.
    logging={"access": {"enabled": SETTINGS.access_log}},
    metrics={"enabled": SETTINGS.prometheus},
    tracing={} if SETTINGS.tracing else {"excluded_urls": [".*"]},
)
@bentoml.asgi_app(app)
class Lightyard:
    """Routes: POST /predict, POST /predict_batch, GET /health, GET /info (and BentoML's /livez, /readyz,
    /metrics)."""

    model = bentoml.models.BentoModel(SERVED.tag)  # declares the served version to `bentoml build`

    def __init__(self) -> None:
        self.registered = SERVED
        self.spec = SERVED.spec
        self.labels = SERVED.class_names()
        run = SERVED.runner(SETTINGS.runtime, SETTINGS.threads, SETTINGS.device)
        self.classify = batched_classifier(run, SETTINGS)
        log.info(
            f"serving {SERVED.tag} with {SETTINGS.runtime} on {SETTINGS.device}: {SETTINGS.stream_count} "
            "runtime calls in flight "
            f"of {SETTINGS.threads} thread(s) each"
        )
        if warning := int8_warning(SERVED.metadata["formats"][SETTINGS.runtime]):
            log.warning(f"{SERVED.tag}: {warning}")
        settle_heap()

    async def inputs(self, request: Request, most: int) -> tuple[np.ndarray, list[str | None], int]:
        """The uploads of a request as one batch of model inputs, their file names, and `top_k`."""
        form = await protocol.read_form(request, SETTINGS.max_images)
        files = protocol.uploads(form, most)
        k = protocol.top_k(form.get("top_k"), len(self.labels))
        batch = await protocol.decode_uploads(self.spec, files, SETTINGS.max_pixels, IMAGE_FORMATS)
        return batch, [upload.filename for upload in files], k


def _service() -> Lightyard:
    return bentoml.get_current_service()


@app.get("/", include_in_schema=False)
async def page() -> Response:
    """The service's own page (`page/`): the served model, an upload form, a curl example."""
    return Response(INDEX_HTML, media_type="text/html")


@app.get("/docs", include_in_schema=False)
async def docs() -> Response:
    return Response(DOCS_HTML, media_type="text/html")


@app.post("/predict", openapi_extra=IMAGE_FIELD, tags=["prediction"])
async def predict(request: Request) -> Response:
    """One image (multipart field `image`) → its `top_k` classes (default 5), most probable first."""
    service = _service()
    batch, _, k = await service.inputs(request, most=1)
    (row,) = await service.classify(batch)
    payload = {"predictions": protocol.predictions(row, k, service.labels), "model": service.registered.tag}
    return json_response(payload)


@app.post("/predict_batch", openapi_extra=IMAGE_FIELD, tags=["prediction"])
async def predict_batch(request: Request) -> Response:
    """Several images (repeated multipart field `image`) → the `top_k` classes of each, in order."""
    service = _service()
    batch, names, k = await service.inputs(request, most=SETTINGS.max_images)
    rows = await service.classify(batch)
    results = [
        {"filename": name, "predictions": protocol.predictions(row, k, service.labels)}
        for name, row in zip(names, rows, strict=True)
    ]
    return json_response({"results": results, "model": service.registered.tag})


@app.get("/health", tags=["health"])
async def health() -> dict:
    """`{"status": "healthy", "model": tag}` while the worker serves."""
    return {"status": "healthy", "model": _service().registered.tag}


@app.get("/info", tags=["model"])
async def info() -> dict:
    """The served version: tag, stage, metrics, preprocessing, runtime, batching and input limits."""
    model = _service().registered
    return {
        "model": model.tag,
        "stage": model.stage,
        "runtime": SETTINGS.runtime,
        "device": SETTINGS.device,
        "metrics": model.metadata.get("metrics", {}),
        "preprocess": model.spec.to_dict(),
        "formats": sorted(model.metadata.get("formats", {})),
        "workers": SETTINGS.worker_count,
        "batching": {
            "max_batch_size": SETTINGS.max_batch_size,
            "max_latency_ms": SETTINGS.max_latency_ms,
            "streams": SETTINGS.stream_count,
            "threads": SETTINGS.threads,
            "runtime_nice": SETTINGS.runtime_nice,
        },
        "limits": {
            "max_body_bytes": SETTINGS.max_body_bytes,
            "max_pixels": SETTINGS.max_pixels,
            "max_images": SETTINGS.max_images,
            "image_formats": list(IMAGE_FORMATS),
        },
    }


@app.exception_handler(RequestError)
async def _request_error(request: Request, err: RequestError) -> Response:
    return json_response({"error": err.message}, err.status)


@app.exception_handler(BodyTooLarge)
async def _body_too_large(request: Request, err: BodyTooLarge) -> Response:
    return json_response({"error": str(err)}, 413)


@app.exception_handler(BentoMLException)
async def _bentoml_error(request: Request, err: BentoMLException) -> Response:
    """Overload (503 when a request would wait past max_latency_ms) and other server-side failures."""
    return json_response({"error": f"{type(err).__name__}: {err}"}, int(err.error_code))


@app.exception_handler(HTTPException)
async def _http_error(request: Request, err: HTTPException) -> Response:
    return json_response({"error": str(err.detail)}, err.status_code)

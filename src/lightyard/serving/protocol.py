"""The HTTP contract of the prediction routes, apart from any model store or runtime: an upload in, the
model's input array out (through the model's own preprocessing), probabilities in, JSON out.

Every client mistake becomes a `RequestError` with its status and a message that says what to send.
"""

from __future__ import annotations

import json
from typing import Any

import anyio.to_thread
import numpy as np
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response

from lightyard.data.preprocess import ImageTooLarge, PreprocessSpec, UnsupportedImage
from lightyard.errors import UserError

# Uploads up to this size are decoded on the event loop (a small JPEG decodes faster than a hop to a
# thread); larger ones, photos of several megapixels that would stall the loop, are decoded in a thread
# so the loop keeps answering other requests meanwhile.
INLINE_DECODE_BYTES = 256 * 1024
DEFAULT_TOP_K = 5


class RequestError(Exception):
    """A client mistake: answered with `status` and `{"error": message}`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


async def read_form(request: Request, max_images: int) -> FormData:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise RequestError(
            "send the image as multipart/form-data field 'image' (curl -F image=@digit.png …), "
            f"not {content_type or 'no content type'}",
            415,
        )
    return await request.form(max_files=max_images, max_fields=16)


def uploads(form: FormData, most: int) -> list[UploadFile]:
    found = [item for item in form.getlist("image") if isinstance(item, UploadFile)]
    if not found:
        raise RequestError("missing field 'image': send the image as multipart/form-data field 'image'")
    if len(found) > most:
        raise RequestError(f"{len(found)} images in one request, at most {most}: split the request", 413)
    return found


def top_k(raw: Any, classes: int) -> int:
    if raw is None:
        return min(DEFAULT_TOP_K, classes)
    try:
        k = int(str(raw))
    except ValueError:
        raise RequestError(f"top_k={raw!r} is not a whole number: send 1 to {classes}") from None
    if not 1 <= k <= classes:
        raise RequestError(f"top_k={k} is out of range: the model has {classes} classes, send 1 to {classes}")
    return k


def decode(
    spec: PreprocessSpec, data: bytes, name: str, max_pixels: int, formats: tuple[str, ...]
) -> np.ndarray:
    """Upload bytes → the model's input (C×H×W float32), within the limits."""
    if not data:
        raise RequestError(f"{name} is an empty file: send the image's bytes")
    try:
        return spec.input_from_file(data, max_pixels, formats, name)
    except ImageTooLarge as err:
        raise RequestError(str(err), 413) from None
    except UnsupportedImage as err:
        raise RequestError(str(err), 415) from None
    except UserError as err:
        raise RequestError(str(err)) from None


async def decode_uploads(
    spec: PreprocessSpec, files: list[UploadFile], max_pixels: int, formats: tuple[str, ...]
) -> np.ndarray:
    """Every upload decoded and stacked into one N×C×H×W batch, in order."""
    inputs = []
    for upload in files:
        data = await upload.read()
        name = upload.filename or "image"
        if len(data) <= INLINE_DECODE_BYTES:
            inputs.append(decode(spec, data, name, max_pixels, formats))
        else:
            inputs.append(await anyio.to_thread.run_sync(decode, spec, data, name, max_pixels, formats))
    return inputs[0][None] if len(inputs) == 1 else np.stack(inputs)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predictions(probabilities: np.ndarray, k: int, labels: list[str]) -> list[dict[str, Any]]:
    """One image's `k` most probable classes, most probable first (ties in class order)."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"class": int(i), "label": labels[i], "probability": float(probabilities[i])} for i in order]


def json_response(payload: dict, status: int = 200) -> Response:
    """Serialised here rather than by FastAPI, which would walk the payload through its encoder first."""
    return Response(json.dumps(payload), status_code=status, media_type="application/json")

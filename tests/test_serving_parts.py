"""The server's parts that need no running server: request parsing, settings, batching, connection
recycling and the Bento's requirements."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from bentoml.exceptions import ServiceUnavailable
from PIL import Image
from starlette.datastructures import FormData, Headers, UploadFile

from lightyard.bentoml_adapter import adaptive_batcher, available_cpus
from lightyard.data.preprocess import PreprocessSpec
from lightyard.errors import UserError
from lightyard.serving import protocol
from lightyard.serving.balance import RecycleConnections
from lightyard.serving.image import SERVING_PACKAGES, requirements
from lightyard.serving.protocol import RequestError
from lightyard.serving.settings import IMAGE_FORMATS, ServingSettings
from tests.conftest import ROOT

SPEC = PreprocessSpec(8, 8, 1, (0.5,), (0.25,), tuple("abc"))


def upload(data: bytes, name: str = "x.png") -> UploadFile:
    return UploadFile(io.BytesIO(data), filename=name, headers=Headers({"content-type": "image/png"}))


def png(size: tuple[int, int] = (8, 8), value: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def test_top_k_defaults_and_refusals() -> None:
    assert protocol.top_k(None, 10) == 5 and protocol.top_k(None, 3) == 3 and protocol.top_k("2", 3) == 2
    for raw, fragment in (("0", "out of range"), ("4", "the model has 3 classes"), ("two", "not a whole")):
        with pytest.raises(RequestError, match=fragment) as caught:
            protocol.top_k(raw, 3)
        assert caught.value.status == 400


def test_uploads_need_the_image_field_and_respect_the_limit() -> None:
    with pytest.raises(RequestError, match="missing field 'image'"):
        protocol.uploads(FormData([("picture", upload(png()))]), 1)
    with pytest.raises(RequestError, match="2 images in one request, at most 1") as caught:
        protocol.uploads(FormData([("image", upload(png())), ("image", upload(png()))]), 1)
    assert caught.value.status == 413
    assert len(protocol.uploads(FormData([("image", upload(png()))]), 1)) == 1


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [
        (b"", 400, "x.png is an empty file"),
        (b"not an image at all", 400, "not a readable image: x.png"),
        (png()[:40], 400, "not a readable image"),
        (png((40, 40)), 413, "1,600 pixels, over the limit of 1,000"),
    ],
)
def test_decode_refuses_bad_uploads_with_their_status(data: bytes, status: int, fragment: str) -> None:
    with pytest.raises(RequestError, match=fragment) as caught:
        protocol.decode(SPEC, data, "x.png", 1_000, IMAGE_FORMATS)
    assert caught.value.status == status


def test_decode_refuses_formats_not_served() -> None:
    gif = io.BytesIO()
    Image.new("L", (8, 8)).save(gif, format="GIF")
    with pytest.raises(RequestError, match="send PNG, JPEG, BMP or WEBP") as caught:
        protocol.decode(SPEC, gif.getvalue(), "a.gif", 1_000, IMAGE_FORMATS)
    assert caught.value.status == 415


def test_uploads_become_one_batch_through_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "INLINE_DECODE_BYTES", 100)  # the second upload goes through a thread
    small, large = png(value=0), png((64, 64), value=255)
    assert len(small) <= 100 < len(large)
    batch = asyncio.run(protocol.decode_uploads(SPEC, [upload(small), upload(large)], 10_000, IMAGE_FORMATS))
    assert batch.shape == (2, 1, 8, 8) and batch.dtype == np.float32
    assert np.allclose(batch[0], -2.0) and np.allclose(batch[1], 2.0)  # (0 - 0.5) / 0.25, (1 - 0.5) / 0.25


def test_predictions_are_the_top_k_most_probable_first() -> None:
    probabilities = protocol.softmax(np.array([[1.0, 3.0, 2.0, 3.0]]))[0]
    assert np.isclose(probabilities.sum(), 1.0)
    top = protocol.predictions(probabilities, 3, ["a", "b", "c", "d"])
    assert [p["class"] for p in top] == [1, 3, 2]  # ties keep class order
    assert top[0]["label"] == "b" and top[0]["probability"] == pytest.approx(probabilities[1])


def test_settings_from_yaml_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("runtime: onnx-int8\nmax_images: 4\naccess_log: false\n")
    environ = {"LIGHTYARD_MAX_IMAGES": "8", "LIGHTYARD_ACCESS_LOG": "true", "LIGHTYARD_MODEL": "m@production"}
    settings = ServingSettings.load(config, environ)
    assert (settings.runtime, settings.max_images, settings.access_log, settings.model) == (
        "onnx-int8", 8, True, "m@production",
    )  # fmt: skip
    assert settings.stream_count >= 1 and settings.worker_count == 1
    for environ, fragment in (
        ({"LIGHTYARD_RUNTIME": "tflite"}, "runtime 'tflite' is unknown"),
        ({"LIGHTYARD_DEVICE": "gpu"}, "device 'gpu' is unknown: set LIGHTYARD_DEVICE to cpu or cuda"),
        ({"LIGHTYARD_THREADS": "two"}, "LIGHTYARD_THREADS=two is not a whole number"),
        ({"LIGHTYARD_THREADS": "0"}, "threads=0 must be at least 1"),
        ({"LIGHTYARD_STREAMS": "-1"}, "streams=-1 must be at least 0"),
        ({"LIGHTYARD_RUNTIME_NICE": "-5"}, "runtime_nice=-5 must be at least 0"),
        ({"LIGHTYARD_TRACING": "maybe"}, "LIGHTYARD_TRACING=maybe is not true or false"),
    ):
        with pytest.raises(UserError, match=fragment):
            ServingSettings.load(config, environ)
    config.write_text("workers: two\n")
    with pytest.raises(UserError, match="workers: 'two' is not a whole number"):
        ServingSettings.load(config, {})
    config.write_text("access_log: maybe\n")
    with pytest.raises(UserError, match="access_log: 'maybe' is not true or false"):
        ServingSettings.load(config, {})
    config.write_text("modle: x\n")
    with pytest.raises(UserError, match="unknown setting modle"):
        ServingSettings.load(config, {})


def test_streams_fill_the_cores() -> None:
    cpus = available_cpus()
    assert ServingSettings().stream_count == cpus  # one worker, one thread per runtime call
    assert ServingSettings(threads=2).stream_count == max(1, cpus // 2)
    assert ServingSettings(workers=cpus + 1).stream_count == 1
    assert ServingSettings(workers=0).worker_count == cpus and ServingSettings(streams=3).stream_count == 3


class Answer:
    """An ASGI app that answers 200."""

    async def __call__(self, scope: dict, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"1")]})
        await send({"type": "http.response.body", "body": b"ok"})


def closes(app: RecycleConnections, client: tuple[str, int]) -> bool:
    headers: list = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            headers.extend(message["headers"])

    asyncio.run(app({"type": "http", "client": client}, None, send))
    return (b"connection", b"close") in headers


def batched_calls(run, requests: list[np.ndarray], streams: int, max_latency_ms: int = 5000) -> list:
    """The answers (or exceptions) of `requests` sent at once through `adaptive_batcher` over `run`."""

    async def send() -> list:
        classify = adaptive_batcher(
            run, max_batch_size=32, max_latency_ms=max_latency_ms, streams=streams, name="test"
        )
        return await asyncio.gather(*(classify(batch) for batch in requests), return_exceptions=True)

    return asyncio.run(send())


def test_a_free_stream_takes_a_share_of_the_queue_and_answers_reach_their_requests() -> None:
    """16 queued images on 2 streams: the first stream takes 16/(2·2) = 4 and leaves the rest for the
    other stream (3 of 12), not one batch of 16 on one stream while the other idles."""
    batches: list[int] = []
    in_flight, most_in_flight, lock = [0], [0], threading.Lock()

    def run(batch: np.ndarray) -> np.ndarray:
        with lock:
            batches.append(len(batch))
            in_flight[0] += 1
            most_in_flight[0] = max(most_in_flight[0], in_flight[0])
        time.sleep(0.02)
        with lock:
            in_flight[0] -= 1
        return batch.reshape(len(batch), -1)[:, :1] * 2

    answers = batched_calls(run, [np.full((1, 3), i, np.float32) for i in range(16)], streams=2)
    assert [answer.item() for answer in answers] == [2.0 * i for i in range(16)]
    assert batches[:2] == [4, 3] and sum(batches) == 16, batches
    assert most_in_flight[0] == 2


def test_requests_that_would_wait_past_max_latency_are_refused_and_none_is_lost() -> None:
    """One stream busy for 0.2 s with the first share (20 of 40 images) while the latency bound is 50 ms:
    the dispatcher refuses queued requests (503) rather than letting them wait; every request gets an
    answer or a refusal."""

    def run(batch: np.ndarray) -> np.ndarray:
        time.sleep(0.2)
        return batch

    answers = batched_calls(run, [np.ones((1, 2), np.float32)] * 40, streams=1, max_latency_ms=50)
    kinds = [type(answer) for answer in answers]
    assert kinds[:20] == [np.ndarray] * 20, kinds
    assert ServiceUnavailable in kinds and set(kinds) == {np.ndarray, ServiceUnavailable}, kinds


def test_connections_are_recycled_after_their_age(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("lightyard.serving.balance.time.monotonic", lambda: now[0])
    app = RecycleConnections(Answer(), max_age_s=2.0)
    first, second = ("127.0.0.1", 5000), ("127.0.0.1", 5001)
    assert not closes(app, first)
    now[0] += 1.0
    assert not closes(app, first) and not closes(app, second)
    now[0] += 1.5  # `first` is 2.5 s old, `second` 1.5 s
    assert closes(app, first) and not closes(app, second)
    assert not closes(app, first)  # a new connection on the same port starts over


def test_a_bento_installs_the_serving_packages_alone() -> None:
    """torch only for the TorchScript runtimes; every package pinned, and each one a dependency of the
    project, so a development install serves with what a Bento installs."""
    names = {line.split("==")[0] for line in requirements("onnx")}
    assert names == set(SERVING_PACKAGES)
    assert not names & {"torch", "torchvision", "lightning", "tensorboard", "matplotlib", "hydra-core"}
    assert {line.split("==")[0] for line in requirements("torchscript-int8")} == names | {"torch"}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared_names = {entry.split(">")[0].split("=")[0].split("<")[0].strip().lower() for entry in declared}
    assert names <= declared_names
    on_gpu = {line.split("==")[0] for line in requirements("onnx", "cuda")}
    assert on_gpu == names - {"onnxruntime"} | {"onnxruntime-gpu"}

"""The HTTP service: a real `bentoml serve` process on a free port, a freshly trained registered model."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
import psutil
import pytest
import torch
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import lightyard
from lightyard.data import DigitsDataModule
from lightyard.data.base import Splits
from lightyard.models import ClassifierModule, build_net
from lightyard.registry import ModelStore, load, register_export
from tests.conftest import ROOT, free_port

BENTOML = str(Path(sys.executable).parent / "bentoml")
LIMITS = {
    "LIGHTYARD_MAX_BODY_BYTES": "200000",
    "LIGHTYARD_MAX_PIXELS": "1000000",
    "LIGHTYARD_MAX_IMAGES": "4",
}


def start_server(
    args: list[str], home: Path, cwd: Path, env: dict | None = None, bentoml: str = BENTOML
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = home.parent / f"serve-{port}.log"  # a file, not a pipe: an unread pipe fills and blocks the server
    process = subprocess.Popen(
        [bentoml, "serve", *args, "--port", str(port)],
        cwd=cwd,
        env={**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", **(env or {})},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the server and its workers die together
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"bentoml serve exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(process)
    raise AssertionError("bentoml serve did not become ready in 120 s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, int]]:
    """`bentoml serve` in the project root over a copy of the trained run's store:
    (url, BENTOML_HOME, pid of `bentoml serve`)."""
    home = tmp_path_factory.mktemp("served") / "bentoml"
    shutil.copytree(trained[1], home)
    store = ModelStore(home)
    store.set_stage(store.versions()[0].tag, "production")  # as a deployment serves it
    process, url = start_server([], home, ROOT, LIMITS)
    yield url, home, process.pid
    stop(process)


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def loads_torch(process: psutil.Process) -> bool:
    """Whether torch's libraries are mapped into the process: `import torch` loads them all."""
    maps = Path(f"/proc/{process.pid}/maps").read_text()
    return "/torch/" in maps or "libtorch" in maps


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def digit_png() -> bytes:
    splits = DigitsDataModule().load_splits()
    return png(splits.test_source.images[splits.test[0]])


def post(
    url: str, route: str, files: list | None = None, data: dict | None = None, **kwargs
) -> httpx.Response:
    return httpx.post(f"{url}{route}", files=files, data=data, timeout=60, **kwargs)


def test_health_info_and_bentoml_routes(served) -> None:
    url, home, _ = served
    tag = ModelStore(home).resolve("digits-cnn:latest").tag
    assert httpx.get(f"{url}/health").json() == {"status": "healthy", "model": tag}
    info = httpx.get(f"{url}/info").json()
    assert info["model"] == tag and info["runtime"] == "onnx"
    assert info["metrics"]["test/acc"] == ModelStore(home).resolve(tag).metadata["metrics"]["test/acc"]
    assert info["preprocess"] == json.loads(
        (ModelStore(home).resolve(tag).path / "preprocess.json").read_text()
    )
    assert info["preprocess"]["class_names"] == [str(i) for i in range(10)]
    assert info["limits"]["max_pixels"] == 1_000_000
    assert info["workers"] == 1 and info["batching"]["threads"] == 1 and info["batching"]["streams"] >= 1
    for route in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(f"{url}{route}").status_code == 200, route
    paths = set(httpx.get(f"{url}/docs.json").json()["paths"])
    assert {"/predict", "/predict_batch", "/health", "/info", "/livez", "/readyz", "/metrics"} <= paths


def thread_nice(pid: int, tid: int) -> int:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])  # field 19 of stat; the split drops pid and comm


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are set on Linux only")
def test_runtime_threads_yield_to_the_event_loop(served) -> None:
    url, _, pid = served
    for _ in range(8):  # every runtime slot has run at least once
        assert post(url, "/predict", files={"image": ("d.png", digit_png(), "image/png")}).status_code == 200
    worker = process_tree(pid)[1]
    nices = {thread.id: thread_nice(worker.pid, thread.id) for thread in worker.threads()}
    assert nices[worker.pid] == 0  # the main thread runs the event loop
    assert 10 in nices.values()  # the runtime calls' threads (conf/serve.yaml: runtime_nice)


def test_predict_and_predict_batch(served) -> None:
    url, _, _ = served
    image = digit_png()
    body = post(url, "/predict", files=[("image", ("digit.png", image, "image/png"))]).json()
    predictions = body["predictions"]
    assert len(predictions) == 5 and body["model"].startswith("digits-cnn:")
    probabilities = [p["probability"] for p in predictions]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    assert all(p["label"] == str(p["class"]) for p in predictions)
    three = post(url, "/predict", files=[("image", ("d.png", image, "image/png"))], data={"top_k": "3"})
    assert [p["class"] for p in three.json()["predictions"]] == [p["class"] for p in predictions[:3]]
    splits = DigitsDataModule().load_splits()
    files = [
        ("image", (f"{i}.png", png(splits.test_source.images[splits.test[i]]), "image/png")) for i in range(3)
    ]
    batch = post(url, "/predict_batch", files=files, data={"top_k": "1"}).json()
    assert [r["filename"] for r in batch["results"]] == ["0.png", "1.png", "2.png"]
    assert batch["results"][0]["predictions"][0]["class"] == predictions[0]["class"]


def bad_inputs() -> dict[str, tuple[dict, int, str]]:
    digit = digit_png()
    image = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    truncated = png(image)[:2000]
    bomb = png(np.zeros((1200, 1200), dtype=np.uint8))  # 1.44 M pixels, a few kB compressed
    gif = io.BytesIO()
    Image.new("L", (8, 8)).save(gif, format="GIF")
    one = {"files": [("image", ("d.png", digit, "image/png"))]}
    return {
        "missing field": (
            {"files": [("picture", ("d.png", digit, "image/png"))]},
            400,
            "missing field 'image'",
        ),
        "empty file": (
            {"files": [("image", ("empty.png", b"", "image/png"))]},
            400,
            "empty.png is an empty file",
        ),
        "not an image": (
            {"files": [("image", ("notes.txt", b"hello " * 50, "text/plain"))]},
            400,
            "notes.txt",
        ),
        "truncated": ({"files": [("image", ("cut.png", truncated, "image/png"))]}, 400, "truncated"),
        "too many pixels": ({"files": [("image", ("bomb.png", bomb, "image/png"))]}, 413, "1,440,000 pixels"),
        "body too large": (
            {"files": [("image", ("big.png", png(image) + os.urandom(200_000), "image/png"))]},
            413,
            "over the limit",
        ),
        "top_k zero": ({**one, "data": {"top_k": "0"}}, 400, "top_k=0 is out of range"),
        "top_k over classes": ({**one, "data": {"top_k": "11"}}, 400, "the model has 10 classes"),
        "top_k not a number": ({**one, "data": {"top_k": "five"}}, 400, "not a whole number"),
        "gif": (
            {"files": [("image", ("a.gif", gif.getvalue(), "image/gif"))]},
            415,
            "send PNG, JPEG, BMP or WEBP",
        ),
        "json body": ({"json": {"image": "digit.png"}}, 415, "multipart/form-data"),
    }


@pytest.mark.parametrize("case", list(bad_inputs()))
def test_bad_input_gets_a_4xx_json_error(served, case: str) -> None:
    url, _, _ = served
    request, status, fragment = bad_inputs()[case]
    response = post(url, "/predict", **request)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert post(url, "/predict", files=[("image", ("d.png", digit_png(), "image/png"))]).status_code == 200


def test_predict_batch_limits(served) -> None:
    url, _, _ = served
    files = [("image", (f"{i}.png", digit_png(), "image/png")) for i in range(5)]
    response = post(url, "/predict_batch", files=files)
    assert response.status_code == 400 and "Maximum number of files is 4" in response.json()["error"]
    two = post(url, "/predict", files=files[:2])
    assert two.status_code == 413 and "2 images in one request, at most 1" in two.json()["error"]
    broken = [files[0], ("image", ("bad.png", b"nope", "image/png"))]
    response = post(url, "/predict_batch", files=broken)
    assert response.status_code == 400 and "bad.png" in response.json()["error"]


def digits_and_module(trained) -> tuple[DigitsDataModule, Splits, ClassifierModule]:
    """The digits data (set up for testing), its splits, and the trained run's LightningModule."""
    datamodule = DigitsDataModule()
    splits = datamodule.load_splits()
    datamodule.setup("test")
    checkpoint = trained[0] / "checkpoints" / "best.ckpt"
    net_config = torch.load(checkpoint, weights_only=True)["hyper_parameters"]["net_config"]
    module = ClassifierModule.load_from_checkpoint(
        checkpoint, net=build_net(net_config, datamodule.spec), optimizer=torch.optim.SGD, weights_only=True
    ).eval()
    return datamodule, splits, module


def test_concurrent_requests_match_the_lightning_module(served, trained, tmp_path: Path) -> None:
    """Every digits test image as a PNG, 16 clients at once: the server's top-1 equals the
    LightningModule's prediction on the data module's tensor, for all of them; requests were batched
    and every runtime call timed (`/metrics`)."""
    url, _, _ = served
    datamodule, splits, module = digits_and_module(trained)
    images = [png(splits.test_source.images[index]) for index in splits.test]
    tensors = torch.stack([datamodule.datasets["test"][i][0] for i in range(len(images))])
    with torch.inference_mode():
        expected = module(tensors).argmax(1).tolist()

    def classify(position: int) -> int:
        files = [("image", (f"{position}.png", images[position], "image/png"))]
        response = post(url, "/predict", files=files, data={"top_k": "1"})
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]["class"]

    with ThreadPoolExecutor(16) as pool:
        served_classes = list(pool.map(classify, range(len(images))))
    assert len(images) == 270
    assert served_classes == expected
    metrics = httpx.get(f"{url}/metrics").text
    counts = [line for line in metrics.splitlines() if line.startswith("bentoml_service_adaptive_batch_size")]
    total = sum(float(line.rsplit(" ", 1)[1]) for line in counts if "_sum{" in line)
    calls = sum(float(line.rsplit(" ", 1)[1]) for line in counts if "_count{" in line)
    assert total >= len(images) and calls < total  # at least one runtime call served several requests
    timed = [line for line in metrics.splitlines() if line.startswith("lightyard_runtime_call_seconds_count")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in timed) == calls  # every runtime call timed


def test_no_serving_process_loads_torch(served) -> None:
    """Serving ONNX needs ONNX Runtime, NumPy and Pillow: after answering every route, no process of
    `bentoml serve` (the supervisor and its worker) has torch's libraries mapped, which `import torch`
    would have done. The worker's import path, run in a fresh interpreter, leaves no torch, torchvision
    or Lightning in `sys.modules` either."""
    url, home, pid = served
    post(url, "/predict", files=[("image", ("d.png", digit_png(), "image/png"))])
    post(url, "/predict_batch", files=[("image", ("d.png", digit_png(), "image/png"))] * 2)
    for route in (
        "/health",
        "/info",
        "/metrics",
        "/docs.json",
        "/",
        "/docs",
        "/page/page.js",
        "/openapi.json",
    ):
        httpx.get(f"{url}{route}", timeout=30)
    tree = process_tree(pid)
    assert len(tree) >= 2  # the supervisor and at least one worker
    assert [process.pid for process in tree if loads_torch(process)] == []
    probe = (
        "import sys, serve\n"
        "loaded = {name.split('.')[0] for name in sys.modules}\n"
        "print(sorted(loaded & {'torch', 'torchvision', 'lightning'}))"
    )
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_torchscript_runtime_loads_torch_only_when_chosen(trained, tmp_path: Path) -> None:
    """Also the prometheus setting: off, BentoML records no Prometheus metrics and has no /metrics route."""
    home = tmp_path / "bentoml"
    shutil.copytree(trained[1], home)
    process, url = start_server(
        [], home, ROOT, {"LIGHTYARD_RUNTIME": "torchscript", "LIGHTYARD_PROMETHEUS": "0"}
    )
    try:
        assert httpx.get(f"{url}/info", timeout=30).json()["runtime"] == "torchscript"
        assert httpx.get(f"{url}/metrics", timeout=30).status_code == 404
        splits = DigitsDataModule().load_splits()
        for index in splits.test[:5]:
            files = [("image", ("d.png", png(splits.test_source.images[index]), "image/png"))]
            response = post(url, "/predict", files=files, data={"top_k": "1"})
            assert response.status_code == 200, response.text
        assert any(loads_torch(child) for child in process_tree(process.pid)[1:])
    finally:
        stop(process)


def test_a_killed_worker_is_replaced_at_once(trained, tmp_path: Path) -> None:
    """SIGKILL the worker, twice: the supervisor keeps the listening socket and starts a new worker within
    seconds (it checks every second; BentoML's own 10 s would miss this bound most of the time), and a
    request sent right after the kill waits in the socket's queue for it and is answered."""
    home = tmp_path / "bentoml"
    shutil.copytree(trained[1], home)
    process, url = start_server([], home, ROOT)
    try:
        for _ in range(2):
            (worker,) = psutil.Process(process.pid).children()
            os.kill(worker.pid, signal.SIGKILL)
            started = time.monotonic()
            response = post(url, "/predict", files=[("image", ("d.png", digit_png(), "image/png"))])
            assert response.status_code == 200, response.text
            assert time.monotonic() - started < 5
            assert [child.pid for child in psutil.Process(process.pid).children()] != [worker.pid]
    finally:
        stop(process)


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"LIGHTYARD_MODEL": "nope:latest"}, ("cannot serve nope:latest", "lightyard models list")),
        ({"LIGHTYARD_MODEL": "digits-cnn@production"}, ("no version of digits-cnn is in production",)),
        ({"LIGHTYARD_RUNTIME": "onnx-int8"}, ("has no onnx-int8 artifact", "lightyard quantize")),
        *(  # where onnxruntime has no CUDA provider (any CPU machine): refused, not served on the CPU
            [
                (
                    {"LIGHTYARD_DEVICE": "cuda"},
                    ("device=cuda needs ONNX Runtime's CUDA provider", "onnxruntime-gpu"),
                )
            ]
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers()
            else []
        ),
    ],
)
def test_a_bad_model_setting_stops_the_server(trained, tmp_path: Path, env: dict, fragments) -> None:
    home = tmp_path / "bentoml"
    shutil.copytree(trained[1], home)
    result = subprocess.run(
        [BENTOML, "serve", "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", **env},
    )  # fmt: skip
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in last, last


@pytest.mark.heavy
def test_lean_bento_serves_from_a_fresh_environment(trained, tmp_path: Path) -> None:
    """`bentoml build` for the ONNX runtime gives a Bento whose requirements hold none of the training
    stack; installed alone into a fresh virtual environment, they serve the Bento: the model it was
    built with (also after a newer version is registered), with the predictions of the registered ONNX
    model, and torch cannot even be imported there."""
    home = tmp_path / "bentoml"
    shutil.copytree(trained[1], home)
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    build = subprocess.run([BENTOML, "build"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    tag = ModelStore(home).resolve("digits-cnn:latest").tag
    (bento,) = (home / "bentos" / "lightyard").glob("*/bento.yaml")
    requirements = (bento.parent / "env" / "python" / "requirements.txt").read_text().split()
    names = {line.split("==")[0].lower() for line in requirements}
    assert {"onnxruntime", "pillow", "numpy", "bentoml", "fastapi"} <= names
    assert not names & {"torch", "torchvision", "lightning", "tensorboard", "matplotlib", "hydra-core"}
    exported = tmp_path / "lightyard.bento"
    subprocess.run([BENTOML, "export", "lightyard:latest", str(exported)], env=env, check=True, timeout=300)
    with tarfile.open(exported) as archive:  # the served model travels with the Bento
        model_file = f"models/digits-cnn/{tag.split(':')[1]}/model.onnx"
        assert any(name.endswith(model_file) for name in archive.getnames())
    newer = register_export(trained[0] / "export", "digits-cnn", metrics={}, config={}, lineage={},
                            store=ModelStore(home))  # fmt: skip
    assert ModelStore(home).resolve("digits-cnn:latest").tag == newer.tag != tag

    venv = tmp_path / "lean"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", "-r",
         bento.parent / "env" / "python" / "requirements.txt"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    probe = "import importlib.util; print(importlib.util.find_spec('torch'))"
    found = subprocess.run([venv / "bin" / "python", "-c", probe], capture_output=True, text=True, timeout=60)
    assert found.stdout.strip() == "None"
    splits = DigitsDataModule().load_splits()
    images = [png(splits.test_source.images[index]) for index in splits.test[:20]]
    model = load(tag, store=ModelStore(home))
    expected = model.runner("onnx")(np.stack([model.spec.input_from_file(image) for image in images]))
    process, url = start_server(["lightyard:latest"], home, tmp_path, bentoml=str(venv / "bin" / "bentoml"))
    try:
        for image, logits in zip(images, expected, strict=True):
            files = [("image", ("d.png", image, "image/png"))]
            response = post(url, "/predict", files=files, data={"top_k": "1"})
            assert response.status_code == 200 and response.json()["model"] == tag
            assert response.json()["predictions"][0]["class"] == int(logits.argmax())
    finally:
        stop(process)


@pytest.fixture
def screenshots(
    browser: webdriver.Chrome, artifacts: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], None]]:
    """`shot(name)` keeps a screenshot in `artifacts`; a failing test leaves one of where it stopped."""
    yield lambda name: browser.save_screenshot(str(artifacts / f"{name}.png"))
    report = getattr(request.node, "report_call", None)  # set by conftest's pytest_runtest_makereport
    if report is not None and report.failed:
        browser.save_screenshot(str(artifacts / f"FAILED-{request.node.name}.png"))


def loaded_from(chrome: webdriver.Chrome) -> set[str]:
    """Where the page's resources came from: scheme and host of each."""
    names = chrome.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return {"/".join(name.split("/")[:3]) for name in names}


def test_the_page_shows_the_model_and_classifies_an_upload(
    served, trained, browser, screenshots, tmp_path: Path
) -> None:
    url, _, _ = served
    info = httpx.get(f"{url}/info").json()
    spec = info["preprocess"]
    wait = WebDriverWait(browser, 30)
    browser.get(f"{url}/")
    wait.until(lambda chrome: chrome.find_element(By.ID, "tag").text == info["model"])
    assert not browser.find_element(By.ID, "result").is_displayed()  # no broken image before an upload
    assert not browser.find_element(By.ID, "preview").is_displayed()
    shown = [row.text.split()[0] for row in browser.find_elements(By.CSS_SELECTOR, "#metrics tr")]
    evaluation = sorted(name for name in info["metrics"] if name.startswith(("test/", "val/")))
    assert shown == evaluation and "train/loss_step" in info["metrics"]  # the page: evaluation figures only
    screenshots("page-before-upload")
    assert browser.find_element(By.ID, "stage").text == info["stage"] == "production"
    terms, values = (
        [e.text for e in browser.find_elements(By.CSS_SELECTOR, f"#model {tag}")] for tag in ("dt", "dd")
    )
    rows = dict(zip(terms, values, strict=True))
    assert rows["runtime"] == f"{info['runtime']} on {info['device']}" and rows["input"] == "8×8, grayscale"
    assert rows["resize"].startswith(spec["resize_policy"]) and f"{spec['mean'][0]:.3f}" in rows["normalize"]
    assert browser.find_element(By.ID, "classes").text == ", ".join(spec["class_names"])
    page = browser.find_element(By.TAG_NAME, "body").text
    assert f"curl -F image=@digit.png {url}/predict" in page
    assert f"{info['metrics']['test/acc']:.4f}" in page

    datamodule, splits, module = digits_and_module(trained)
    with torch.inference_mode():
        classes = module(torch.stack([datamodule.datasets["test"][i][0] for i in (5, 6)])).argmax(1).tolist()
    expected = [datamodule.spec.class_names[c] for c in classes]
    digit = tmp_path / "digit.png"
    digit.write_bytes(png(splits.test_source.images[splits.test[5]]))
    browser.find_element(By.ID, "file").send_keys(str(digit))  # the file picker
    wait.until(lambda chrome: chrome.find_elements(By.CSS_SELECTOR, "#predictions li"))
    first = browser.find_element(By.CSS_SELECTOR, "#predictions li")
    assert first.get_attribute("data-label") == expected[0] and "%" in first.text
    assert browser.find_element(By.ID, "preview").get_attribute("src").startswith("blob:")
    screenshots("page")

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    browser.find_element(By.ID, "file").send_keys(str(notes))
    wait.until(lambda chrome: chrome.find_element(By.ID, "error").is_displayed())
    assert "not a readable image: notes.txt" in browser.find_element(By.ID, "error").text
    screenshots("page-error")

    dropped = base64.b64encode(png(splits.test_source.images[splits.test[6]])).decode()
    browser.execute_script(DROP_FILE, dropped, "dropped.png")  # drag and drop, as a file manager sends it
    wait.until(lambda chrome: chrome.find_element(By.ID, "result").is_displayed())
    first = browser.find_element(By.CSS_SELECTOR, "#predictions li")
    assert first.get_attribute("data-label") == expected[1]
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert loaded_from(browser) == {url}  # nothing from the internet


DROP_FILE = """
const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
const files = new DataTransfer();
files.items.add(new File([bytes], arguments[1], { type: "image/png" }));
document.getElementById("drop").dispatchEvent(
  new DragEvent("drop", { dataTransfer: files, bubbles: true, cancelable: true }));
"""


def test_the_api_docs_render_offline(served, browser, screenshots) -> None:
    url, _, _ = served
    browser.get(f"{url}/docs")
    WebDriverWait(browser, 30).until(
        lambda chrome: chrome.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    )
    paths = [element.text for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    assert {"/predict", "/predict_batch", "/info", "/health"} <= set(paths)
    tags = [element.text for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-tag")]
    assert [tag.split()[0] for tag in tags] == ["prediction", "model", "health"]
    screenshots("docs")
    assert loaded_from(browser) == {url}
    document = httpx.get(f"{url}/openapi.json").json()
    assert document["info"]["title"] == "lightyard" and document["info"]["version"] == lightyard.__version__
    assert "curl -F image=@" in document["info"]["description"]

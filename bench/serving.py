"""Load test: `bentoml serve` (adaptive batching, ONNX Runtime) against the naive Flask baseline.

N concurrent clients send a fixed number of `POST /predict` requests (a 224×224 JPEG each, from a pool of
distinct images) to each server in turn, in one run: the lightyard service for every `--runtime`, then
the baseline (bench/baseline_server.py: Flask, one image per request, eager PyTorch). It prints requests/s,
p50/p95/p99 latency, the error count and the service's mean batch size (from its /metrics), and the ratio
of the service's throughput to the baseline's. First it times each runtime called directly, with no server,
at the server's threads and largest batch, beside eager PyTorch one image at a time: the bounds no server
can pass on this machine, printed with the throughput a p99 target needs at this concurrency.

By default it registers ResNet-18 with random weights (1,000 classes, 224×224, FP32 ONNX and static INT8
ONNX) in a temporary BENTOML_HOME, so no trained model is needed; `--model REF` serves a registered model
of your store instead.

    python bench/serving.py [--concurrency 32] [--requests 2000] [--runtime onnx onnx-int8]
                            [--model REF] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import torch
from PIL import Image

from lightyard.compress.measure import eager_runner, latency_ms, torch_threads
from lightyard.compress.quantization import quantize_export
from lightyard.data.preprocess import PreprocessSpec
from lightyard.export import export_model
from lightyard.models import build_net
from lightyard.registry import ModelStore, load, register_export
from lightyard.serving.settings import ServingSettings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
P99_TARGET_MS, RATIO_TARGET = 250.0, 2.5


def register_resnet18(home: Path) -> str:
    """ResNet-18, random weights, as a registered model with FP32 and INT8 ONNX (speed only)."""
    torch.manual_seed(0)
    spec = PreprocessSpec(224, 224, 3, IMAGENET_MEAN, IMAGENET_STD, tuple(f"class_{i}" for i in range(1000)))
    config = {"_target_": "lightyard.models.torchvision_net", "name": "resnet18", "weights": None}
    net = build_net(config, spec).eval()
    out = home.parent / "export"
    images = torch.randn(16, 3, 224, 224)
    export_model(net, spec, images, out, net_config=config, formats=["onnx"])
    calibration = [torch.randn(8, 3, 224, 224) for _ in range(4)]
    quantize_export(
        net, spec, out, net_config=config, mode="static", calibration=calibration,
        test=[(images, torch.randint(0, 1000, (16,)))], runtimes=["onnx"], max_drop=100.0,
    )  # fmt: skip
    version = register_export(
        out, "bench-resnet18", metrics={}, config={}, lineage={}, store=ModelStore(home)
    )
    return version.tag


def compute_alone(tag: str, home: Path, runtimes: list[str]) -> dict[str, float]:
    """Images/s of each served runtime called directly, at the server's threads and largest batch, and of
    eager PyTorch one image at a time (the baseline's model call): what no HTTP server can exceed here."""
    settings = ServingSettings.load()
    threads, batch = settings.intra_op_threads, settings.max_batch_size
    model = load(tag, store=ModelStore(home))
    images = torch.randn(batch, model.spec.channels, model.spec.height, model.spec.width)
    with torch_threads(threads):
        alone = {
            runtime: 1000 * batch / latency_ms(model.runner(runtime, threads), images, batch, repeats=5)
            for runtime in runtimes
        }
        alone["eager"] = 1000 / latency_ms(eager_runner(model.net()), images, 1, repeats=20)
    return alone


def jpeg_pool(count: int, size: int = 224) -> list[bytes]:
    """Distinct smooth images with some noise, JPEG-encoded like photos a client would send."""
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(count):
        base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((size, size), Image.BILINEAR)
        pixels = np.clip(np.asarray(image, dtype=np.int16) + rng.integers(-20, 20, (size, size, 3)), 0, 255)
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        pool.append(buffer.getvalue())
    return pool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], env: dict, log: Path, health: str) -> subprocess.Popen:
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{' '.join(command)} exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            import urllib.request

            with urllib.request.urlopen(health, timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    stop(process)
    sys.exit(f"{' '.join(command)} did not become ready in 180 s: see {log}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


async def run_clients(url: str, images: list[bytes], concurrency: int, requests: int) -> dict:
    """`requests` POSTs from `concurrency` clients; latency per request, errors counted, never raised."""
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal issued
        while issued < requests:
            position = issued
            issued += 1
            form = aiohttp.FormData()
            form.add_field(
                "image", images[position % len(images)], filename="x.jpg", content_type="image/jpeg"
            )
            started = time.perf_counter()
            try:
                async with session.post(f"{url}/predict", data=form) as response:
                    await response.read()
                    if response.status != 200:
                        errors.append(f"HTTP {response.status}")
                        continue
            except (TimeoutError, aiohttp.ClientError) as err:
                errors.append(type(err).__name__)
                continue
            latencies.append(1000 * (time.perf_counter() - started))

    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {
        "requests": requests,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "seconds": seconds,
        "rps": len(latencies) / seconds,
        "p50_ms": quantiles[49],
        "p95_ms": quantiles[94],
        "p99_ms": quantiles[98],
    }


def batch_counters(url: str) -> tuple[float, float]:
    """(images, runtime calls) so far, from BentoML's adaptive batch size histogram."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = calls = 0.0
    for line in text.splitlines():
        if line.startswith("bentoml_service_adaptive_batch_size_sum{"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("bentoml_service_adaptive_batch_size_count{"):
            calls += float(line.rsplit(" ", 1)[1])
    return total, calls


def measure(url: str, images: list[bytes], args: argparse.Namespace, batched: bool) -> dict:
    asyncio.run(run_clients(url, images, args.concurrency, min(200, args.requests)))  # warm-up, not counted
    before = batch_counters(url) if batched else (0.0, 0.0)
    figures = asyncio.run(run_clients(url, images, args.concurrency, args.requests))
    if batched:
        after = batch_counters(url)
        calls = after[1] - before[1]
        figures["mean_batch_size"] = (after[0] - before[0]) / calls if calls else float("nan")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--runtime", nargs="+", default=["onnx", "onnx-int8"], help="served runtimes, in turn"
    )
    parser.add_argument(
        "--model", help="a registered model of your store (default: ResNet-18, random weights)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the Flask baseline")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home = (
            Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")
            if args.model
            else work / "bentoml"
        )
        tag = args.model or register_resnet18(home)
        env = {
            **os.environ,
            "BENTOML_HOME": str(home),
            "BENTOML_DO_NOT_TRACK": "true",
            "LIGHTYARD_MODEL": tag,
        }
        images = jpeg_pool(64)
        alone = compute_alone(tag, home, args.runtime)
        print(
            "called directly, no server: "
            + ", ".join(f"{name} {rate:.1f} images/s" for name, rate in alone.items()),
            flush=True,
        )
        print(f"model {tag}; {args.concurrency} clients × {args.requests} requests per server", flush=True)
        results: dict[str, dict] = {}
        for runtime in args.runtime:
            port = free_port()
            command = [str(BIN / "bentoml"), "serve", "--port", str(port)]
            url = f"http://127.0.0.1:{port}"
            server_env = {**env, "LIGHTYARD_RUNTIME": runtime}
            process = start(command, server_env, work / f"serve-{runtime}.log", f"{url}/readyz")
            try:
                results[runtime] = measure(url, images, args, batched=True)
            finally:
                stop(process)
            print(f"  lightyard ({runtime}): {results[runtime]['rps']:.1f} requests/s", flush=True)
        if not args.no_baseline:
            port = free_port()
            command = [sys.executable, str(ROOT / "bench" / "baseline_server.py"), tag, "--port", str(port)]
            url = f"http://127.0.0.1:{port}"
            process = start(command, env, work / "baseline.log", f"{url}/health")
            try:
                results["baseline"] = measure(url, images, args, batched=False)
            finally:
                stop(process)
            print(f"  baseline (Flask, eager): {results['baseline']['rps']:.1f} requests/s", flush=True)

    columns = ("req/s", "p50 ms", "p95 ms", "p99 ms", "errors")
    print("\n" + f"{'server':<26}" + "".join(f"{c:>9}" for c in columns) + f"{'batch':>7}{'ratio':>8}")
    baseline_rps = results.get("baseline", {}).get("rps")
    for name, figures in results.items():
        label = "baseline (Flask, eager)" if name == "baseline" else f"lightyard ({name})"
        ratio = f"{figures['rps'] / baseline_rps:.2f}×" if baseline_rps else "–"
        batch = f"{figures['mean_batch_size']:.1f}" if "mean_batch_size" in figures else "1"
        print(
            f"{label:<26}{figures['rps']:>9.1f}{figures['p50_ms']:>9.1f}{figures['p95_ms']:>9.1f}"
            f"{figures['p99_ms']:>9.1f}{figures['errors']:>9}{batch:>7}{ratio:>8}"
        )
    first = results[args.runtime[0]]
    summary = {
        **{key: first[key] for key in ("requests", "errors", "rps", "p50_ms", "p95_ms", "p99_ms")},
        "mean_batch_size": first["mean_batch_size"],
        "baseline_rps": baseline_rps,
        "ratio": first["rps"] / baseline_rps if baseline_rps else None,
        "model": tag,
        "concurrency": args.concurrency,
        "runtime": args.runtime[0],
        "runs": results,
    }
    # Little's law: with every client always waiting, mean latency = clients / throughput, and a p99
    # within the target needs at least a mean within it.
    summary["alone"] = alone
    summary["rps_needed_for_p99"] = args.concurrency / (P99_TARGET_MS / 1000)
    print(
        f"\nbounds on this machine: {args.runtime[0]} called directly gives "
        f"{alone[args.runtime[0]]:.1f} images/s, {alone[args.runtime[0]] / alone['eager']:.2f}× eager "
        f"PyTorch's {alone['eager']:.1f}; a p99 ≤ {P99_TARGET_MS:.0f} ms with {args.concurrency} clients "
        f"needs ≥ {summary['rps_needed_for_p99']:.0f} requests/s (Little's law)"
    )
    if summary["ratio"] is not None:
        met = summary["ratio"] >= RATIO_TARGET and first["p99_ms"] <= P99_TARGET_MS
        print(
            f"{args.runtime[0]}: {summary['ratio']:.2f}× the baseline's throughput "
            f"(target ≥ {RATIO_TARGET}), "
            f"p99 {first['p99_ms']:.0f} ms (target ≤ {P99_TARGET_MS:.0f}): {'met' if met else 'NOT MET'}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"figures written to {args.json}")
    print("server logs were written to a temporary folder and removed")


if __name__ == "__main__":
    main()

"""Serving benchmark: lightyard's `bentoml serve` beside ONNX Runtime alone, a bare BentoML service and the
naive Flask baseline, in MLPerf Inference-style scenarios, all in one run on this machine.

For each served runtime and for the baseline (bench/baseline_server.py: Flask, eager PyTorch, one image
per request):
- SingleStream: one request at a time (wrk, one connection); p50/p90 latency, and the p90's ratio to what
  the work itself takes: the runtime's own batch-1 latency plus decoding the image.
- Server: Poisson arrivals at a fixed rate (open loop, latency from the scheduled send time); the highest
  rate whose p99 stays within 5× the runtime's batch-1 latency, searched, as a fraction of the runtime's
  own throughput. The same search without HTTP (the server's batching and runtime called in this
  process on decoded images) shows how much of the shortfall is the front end's, and the ceiling of an
  ideal server (bench/queueing.py: the same layout's batch-1 runtime calls and nothing else) what the
  machine allows without batching's gain, which the alone figures per batch size show.
- Offline: saturation throughput with many connections (wrk), its efficiency against the runtime alone
  (same process layout, threads and largest batch), errors, and the mean batch size.
Also: memory of the serving process tree and seconds from launch to the first 200 from /readyz, beside a
bare BentoML hello-world service (the framework's floor); whether any serving process loaded torch; what
a SIGKILLed worker costs the requests in flight. The host's CPU and instruction set come first: figures
move with them, ratios much less.

By default the model is ResNet-18 with random weights (224×224, FP32 and static INT8 ONNX) registered in
a temporary BENTOML_HOME; `--model REF` runs the same on a registered model of your store (the digits CNN:
`--model digits-cnn:latest`). Server settings come from conf/serve.yaml and LIGHTYARD_* as usual;
LIGHTYARD_DEVICE=cuda runs every runtime, the alone figures and the baseline on the GPU.

    python bench/serving.py [--model REF] [--runtime onnx onnx-int8] [--clients 64] [--seconds 10]
                            [--no-baseline] [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
from common import ROOT, Server, free_port, host, host_line, median_ms, save_figures, status
from loadgen import Run, Wrk, in_process_loop, multipart, open_loop
from PIL import Image
from queueing import ceiling_rate

from lightyard.registry import ModelStore, load
from lightyard.serving.inference import batched_classifier
from lightyard.serving.settings import ServingSettings

BIN = Path(sys.executable).parent
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SERVER_BOUND = 5.0  # Server scenario: p99 within this many times the runtime's batch-1 latency
TARGETS = {"onnx": 0.90, "onnx-int8": 0.80}  # efficiency
SMALL_MODEL_MS = 1.0  # batch-1 latency under which HTTP, not the runtime, bounds serving


def register_resnet18(home: Path) -> str:
    """ResNet-18, random weights, as a registered model with FP32 and INT8 ONNX (speed only)."""
    import torch

    from lightyard.compress.quantization import quantize_export
    from lightyard.data.preprocess import PreprocessSpec
    from lightyard.export import export_model
    from lightyard.models import build_net
    from lightyard.registry import register_export

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
        val=[(images, torch.randint(0, 1000, (16,)))], test=[(images, torch.randint(0, 1000, (16,)))],
        runtimes=["onnx"], max_drop=100.0,
    )  # fmt: skip
    return register_export(
        out, "bench-resnet18", metrics={}, config={}, lineage={}, store=ModelStore(home)
    ).tag


def request_images(height: int, width: int, channels: int, count: int = 16) -> list[bytes]:
    """Distinct smooth images with some noise at the model's size: JPEG photos in colour, PNG in grey."""
    rng = np.random.default_rng(0)
    shape = (height, width, 3) if channels == 3 else (height, width)
    images = []
    for _ in range(count):
        base = Image.fromarray(rng.integers(0, 255, (8, 8, 3)[: len(shape)], dtype=np.uint8))
        smooth = np.asarray(base.resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
        pixels = np.clip(smooth + rng.integers(-20, 20, shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG" if channels == 3 else "PNG", quality=90)
        images.append(buffer.getvalue())
    return images


def _alone_worker(
    tag, home, runtime, device, threads, streams, images, batch, seconds, start, counts
) -> None:
    run = load(tag, store=ModelStore(home)).runner(runtime, threads, device)
    inputs = np.resize(images, (batch, *images.shape[1:]))
    run(inputs)
    start.wait()
    deadline = time.perf_counter() + seconds

    def loop() -> None:
        while time.perf_counter() < deadline:
            run(inputs)
            with counts.get_lock():
                counts.value += batch

    callers = [threading.Thread(target=loop) for _ in range(streams)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()


def runtime_alone(
    tag: str, home: Path, runtime: str, settings: ServingSettings, images: np.ndarray, seconds: float
) -> dict:
    """Images/s of the runtime called directly in the server's layout (workers processes × streams calls
    × threads) on the decoded request images, at the best of batch 1, 8 and the largest batch; and its
    batch-1 latency. `by_batch` (images/s per batch size) shows what batching gains the runtime, beyond the
    Server scenario's ideal (bench/queueing.py), which calls it one image at a time."""
    context = multiprocessing.get_context("spawn")
    by_batch = {}
    for batch in sorted({1, min(8, settings.max_batch_size), settings.max_batch_size}):
        start, counts = context.Barrier(settings.worker_count + 1), context.Value("l", 0)
        args = (tag, home, runtime, settings.device, settings.threads, settings.stream_count, images, batch,
                seconds, start, counts)  # fmt: skip
        workers = [context.Process(target=_alone_worker, args=args) for _ in range(settings.worker_count)]
        for worker in workers:
            worker.start()
        start.wait()
        began = time.perf_counter()
        for worker in workers:
            worker.join()
        by_batch[batch] = counts.value / (time.perf_counter() - began)
    best = max(by_batch, key=by_batch.get)
    run = load(tag, store=ModelStore(home)).runner(runtime, settings.threads, settings.device)
    calls = settings.worker_count * settings.stream_count
    b1_ms = median_ms(lambda: run(images[:1]), 60)
    return {"ips": by_batch[best], "batch": best, "by_batch": by_batch, "b1_ms": b1_ms, "calls": calls}


def eager_alone(tag: str, home: Path, images: np.ndarray, device: str) -> dict:
    """Eager PyTorch, one image at a time, torch's own threads: the baseline's model call, its answer
    back on the CPU (which also waits for a GPU to finish)."""
    import torch

    net = load(tag, store=ModelStore(home)).net().eval().to(device)
    with torch.inference_mode():
        b1 = median_ms(lambda: net(torch.from_numpy(images[:1]).to(device)).cpu(), 40)
    return {"ips": 1000.0 / b1, "batch": 1, "b1_ms": b1, "calls": 1}


def batch_counters(url: str) -> dict[str, float]:
    """Images, runtime calls and seconds in runtime calls so far, from the service's `/metrics` (BentoML's
    adaptive batch size histogram and lightyard's runtime call histogram)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals = dict.fromkeys(("images", "calls", "call_s"), 0.0)
    series = {
        "bentoml_service_adaptive_batch_size_sum{": "images",
        "bentoml_service_adaptive_batch_size_count{": "calls",
        "lightyard_runtime_call_seconds_sum{": "call_s",
    }
    for line in text.splitlines():
        for prefix, key in series.items():
            if line.startswith(prefix):
                totals[key] += float(line.rsplit(" ", 1)[1])
    return totals


def since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after}


class CpuAccount:
    """Where a server's CPU went over an interval: its workers' main threads (each worker's event loop:
    HTTP, forms, decoding, answers, the dispatcher's polling), the rest of the workers (the runtime
    calls in their threads and the hops to them), and the machine's idle time (Linux)."""

    def __init__(self, server: Server) -> None:
        self.workers = server.tree()[1:]  # under `bentoml serve`: the supervisor's children
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float, float]:
        loop = everything = 0.0
        for process in self.workers:
            main = next(thread for thread in process.threads() if thread.id == process.pid)
            loop += main.user_time + main.system_time
            times = process.cpu_times()  # threads that exited included, unlike the list of live threads
            everything += times.user + times.system
        machine = psutil.cpu_times()
        total = sum(machine) - machine.guest - machine.guest_nice  # Linux counts guest time in user too
        return loop, everything - loop, machine.idle + machine.iowait, total

    def since_start(self, requests: int) -> dict[str, float]:
        loop, other, idle, total = (b - a for a, b in zip(self.start, self._sample(), strict=True))
        requests = max(1, requests)
        return {
            "loop_cpu_ms_per_request": 1000 * loop / requests,
            "runtime_threads_cpu_ms_per_request": 1000 * other / requests,
            "idle_share": idle / total,
        }


def rate_search(
    trial: Callable[[float, float, int], Run], capacity: float, bound_ms: float, seconds: float, trials: int
) -> dict:
    """The highest Poisson rate (of `trials` tried, bisecting) with p99 ≤ bound and no errors;
    `trial(rate, seconds, seed)` runs one."""
    low, high, rate = 0.0, capacity, 0.6 * capacity
    best: dict = {"rate": 0.0, "p99_ms": None}
    runs: list[Run] = []
    for seed in range(trials):
        # long enough for ~1,500 requests: a p99 from fewer is mostly noise
        run = trial(rate, min(20.0, max(seconds, 1500 / rate)), seed)
        runs.append(run)
        passed = run.errors == 0 and run.percentiles.get(99, float("inf")) <= bound_ms
        print(
            f"      {rate:7.1f}/s: p99 {run.percentiles.get(99, float('nan')):8.1f} ms "
            f"(bound {bound_ms:.1f}; the client sent {run.client_late_p99_ms:.1f} ms late at p99), "
            f"{run.errors} errors: {'ok' if passed else 'over'}",
            flush=True,
        )
        if passed:
            best = {"rate": rate, "p99_ms": run.percentiles[99]}
            low = rate
        else:
            high = rate
        rate = (low + high) / 2
    best["client_cpu_share"] = max((run.client_cpu_share for run in runs), default=0.0)
    return best


def in_process_search(
    tag: str, home: Path, runtime: str, settings: ServingSettings, inputs: np.ndarray, alone: dict, args
) -> dict:
    """The Server scenario without HTTP: the same arrivals call the server's batching and runtime
    (`batched_classifier`, as a worker builds it) on decoded images in this process. What the runtime
    and the batching allow on this machine, the bound for any front end."""
    run = load(tag, store=ModelStore(home)).runner(runtime, settings.threads, settings.device)
    images = [inputs[i : i + 1] for i in range(len(inputs))]
    print("    Server without HTTP (batching and runtime in one process):", flush=True)
    return dispatcher_search(
        run,
        settings,
        images,
        capacity=alone["ips"],
        bound_ms=server_bound(alone, args),
        seconds=args.server_seconds,
        trials=args.server_trials,
    )


def dispatcher_search(
    run: Callable[[np.ndarray], np.ndarray],
    settings: ServingSettings,
    images: list[np.ndarray],
    capacity: float,
    bound_ms: float,
    seconds: float,
    trials: int,
) -> dict:
    """`rate_search` with the arrivals awaiting the server's batching (`batched_classifier`, as a worker
    builds it) in front of `run`, in this process."""

    def trial(rate: float, seconds: float, seed: int) -> Run:  # a dispatcher belongs to one event loop
        return in_process_loop(batched_classifier(run, settings), images, rate, seconds, seed)

    return rate_search(trial, capacity, bound_ms, seconds, trials)


def server_bound(alone: dict, args: argparse.Namespace) -> float:
    return args.server_p99_ms or SERVER_BOUND * alone["b1_ms"]


def kill_probe(server: Server, bodies: list[bytes], rate: float) -> dict:
    """Poisson load at `rate`; after 2 s one worker is SIGKILLed. Requests lost and the longest latency,
    beside the restart: seconds from the kill until a new worker answers."""
    worker = server.tree()[1]
    restart: dict = {}

    def kill() -> None:
        os.kill(worker.pid, signal.SIGKILL)
        killed = time.perf_counter()
        while status(f"{server.url}/readyz") != 200 or worker.pid in [p.pid for p in server.tree()]:
            time.sleep(0.01)
        restart["s"] = time.perf_counter() - killed

    timer = threading.Timer(2.0, kill)
    timer.start()
    run = open_loop(f"{server.url}/predict", bodies, rate, 8.0, seed=99)
    timer.join()
    return {
        "rate": rate,
        "lost": run.errors,
        "requests": run.requests,
        "max_latency_s": run.percentiles.get(100, 0.0) / 1000,
        "p99_latency_s": run.percentiles.get(99, 0.0) / 1000,
        "restart_s": restart.get("s"),
    }


def drain(clients: int, run: Run) -> None:
    """Wait until what a closed loop of `clients` left queued in the server is done: the next scenario
    must not measure it."""
    time.sleep(0.5 + 2 * clients / max(run.rps, 1.0))


def scenarios(
    server: Server,
    wrk: Wrk,
    bodies: list[bytes],
    alone: dict,
    decode_ms: float,
    args: argparse.Namespace,
    lightyard: bool = True,
) -> dict:
    """The three scenarios against one server; for lightyard's also where the time went (its workers'
    threads, its runtime call histogram)."""
    url = server.url
    drain(args.clients, wrk.run(f"{url}/predict", args.clients, 3))  # warm-up: every code path and batch size
    metered = lightyard and status(f"{url}/metrics") == 200
    before_single = batch_counters(url) if metered else None
    single = wrk.run(f"{url}/predict", 1, args.seconds)
    before_offline = batch_counters(url) if metered else None
    account = CpuAccount(server) if lightyard else None
    offline = wrk.run(f"{url}/predict", args.clients, args.seconds)
    cpu = account.since_start(offline.requests) if account else {}
    calls = {}
    if metered:
        calls = {
            "single": since(before_single, before_offline),
            "offline": since(before_offline, batch_counters(url)),
        }
    drain(args.clients, offline)
    bound = server_bound(alone, args)
    ceiling = ceiling_rate(alone["b1_ms"], alone["calls"], bound)
    # the same ideal server, but each request also costs what a lone request costs beyond the runtime call
    # (HTTP, form, decoding, hops), spread over the cores as well as the calls: an estimate for this front
    # end, not a bound (batching trims the calls)
    with_requests = ceiling_rate(single.percentiles[50], alone["calls"], bound)
    # no open-loop rate above the closed-loop saturation can keep its latency bounded
    capacity = min(alone["ips"], offline.rps)
    print("    Server (HTTP):", flush=True)
    server_figures = rate_search(
        lambda rate, seconds, seed: open_loop(f"{url}/predict", bodies, rate, seconds, seed),
        capacity, bound, args.server_seconds, args.server_trials,
    )  # fmt: skip
    figures = {
        "alone_ips": alone["ips"],
        "alone_batch": alone["batch"],
        "alone_ips_by_batch": alone.get("by_batch", {1: alone["ips"]}),
        "batch1_ms": alone["b1_ms"],
        "decode_ms": decode_ms,
        "single_stream_p50_ms": single.percentiles[50],
        "single_stream_p90_ms": single.percentiles[90],
        "single_stream_ratio": single.percentiles[90] / (alone["b1_ms"] + decode_ms),
        "server_p99_bound_ms": bound,
        "server_max_rate": server_figures["rate"],
        "server_rate_fraction": server_figures["rate"] / alone["ips"],
        "server_p99_ms": server_figures["p99_ms"],
        "server_ceiling_rate": ceiling,
        "server_ceiling_fraction": ceiling / alone["ips"],
        "server_ceiling_with_requests_rate": with_requests,
        "server_ceiling_with_requests_fraction": with_requests / alone["ips"],
        "offline_rps": offline.rps,
        "offline_p50_ms": offline.percentiles.get(50),
        "offline_p99_ms": offline.percentiles.get(99),
        "efficiency": offline.rps / alone["ips"],
        "errors": offline.errors + single.errors,
        "mean_batch": calls["offline"]["images"] / max(1.0, calls["offline"]["calls"]) if calls else None,
        # a lone request's runtime call in the server (alone: batch1_ms), and Offline's seconds of runtime
        # calls per image, summed over the streams (alone: alone_call_ms_per_image)
        "single_stream_call_ms": 1000 * calls["single"]["call_s"] / max(1.0, calls["single"]["calls"])
        if calls else None,
        "offline_call_ms_per_image": 1000 * calls["offline"]["call_s"] / max(1.0, calls["offline"]["images"])
        if calls else None,
        "alone_call_ms_per_image": 1000 * alone["calls"] / alone["ips"],
        **cpu,
        "client_cpu_share": max(single.client_cpu_share, offline.client_cpu_share,
                                server_figures["client_cpu_share"]),
    }  # fmt: skip
    print(
        f"    SingleStream p50 {single.percentiles[50]:.2f} ms, p90 {single.percentiles[90]:.2f} ms "
        f"({figures['single_stream_ratio']:.2f}× batch-1 + decode); Offline {offline.rps:.1f}/s "
        f"({figures['efficiency']:.0%} of alone), {figures['errors']} errors; an ideal server "
        f"({alone['calls']} calls of {alone['b1_ms']:.2f} ms side by side, nothing else) would reach "
        f"{ceiling:.1f}/s in the Server scenario ({figures['server_ceiling_fraction']:.2f} of alone), "
        f"{with_requests:.1f}/s ({figures['server_ceiling_with_requests_fraction']:.2f}) if each request "
        f"took its SingleStream p50 instead of the call alone",
        flush=True,
    )
    if not account:
        return figures
    time_went = (
        f"    where the time went: Offline CPU per request {figures['loop_cpu_ms_per_request']:.2f} ms on "
        f"the event loop (HTTP, form, decoding, answers, dispatching) and "
        f"{figures['runtime_threads_cpu_ms_per_request']:.2f} ms in the runtime threads, the machine "
        f"{figures['idle_share']:.0%} idle"
    )
    if calls:
        time_went += (
            f"; runtime calls {figures['offline_call_ms_per_image']:.2f} ms per image (alone "
            f"{figures['alone_call_ms_per_image']:.2f}); SingleStream's call "
            f"{figures['single_stream_call_ms']:.2f} ms of its {single.percentiles[50]:.2f} ms p50 (alone "
            f"{alone['b1_ms']:.2f})"
        )
    print(time_went, flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="a registered model of your store (default: ResNet-18, random weights)"
    )
    parser.add_argument("--runtime", nargs="+", default=["onnx", "onnx-int8"], help="served runtimes")
    parser.add_argument("--clients", type=int, default=64, help="connections in the Offline scenario")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each closed-loop run")
    parser.add_argument("--server-seconds", type=float, default=6.0, help="least length of a Server trial")
    parser.add_argument("--server-trials", type=int, default=6, help="Server rates tried (0: skip Server)")
    parser.add_argument(
        "--server-p99-ms", type=float, help=f"Server bound (default {SERVER_BOUND:g}× batch 1)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the Flask baseline")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    machine = host("onnxruntime", "bentoml")
    print(host_line(machine), flush=True)
    settings = ServingSettings.load()
    work = Path(tempfile.mkdtemp(prefix="lightyard-bench-"))
    home = Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml") if args.model else work / "bentoml"
    tag = args.model or register_resnet18(home)
    model = load(tag, store=ModelStore(home))
    spec = model.spec
    images = request_images(spec.height, spec.width, spec.channels)
    kind = ("x.jpg", "image/jpeg") if spec.channels == 3 else ("x.png", "image/png")
    bodies = [multipart(image, *kind) for image in images]
    inputs = np.stack([spec.input_from_file(image) for image in images])
    wrk = Wrk(bodies)
    decode_ms = statistics.median(
        median_ms(lambda image=image: spec.input_from_file(image), 20) for image in images
    )
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "LIGHTYARD_MODEL": tag}
    print(
        f"model {tag} on {settings.device}; layout {settings.worker_count} worker(s) × "
        f"{settings.stream_count} runtime calls × {settings.threads} thread(s); "
        f"decoding one request's image: {decode_ms:.2f} ms",
        flush=True,
    )

    results: dict = {
        "host": machine, "model": tag, "clients": args.clients, "server_trials": args.server_trials,
        "runtimes": {},
    }  # fmt: skip
    floor = Server(
        [str(BIN / "bentoml"), "serve", "hello_service:Hello", "--port", str(port := free_port())],
        {**env, "HELLO_WORKERS": str(settings.worker_count)}, ROOT / "bench", work / "hello.log",
        f"http://127.0.0.1:{port}", "/readyz",
    )  # fmt: skip
    floor_memory = floor.memory()
    floor.stop()
    results.update(floor_rss_mb=floor_memory["rss_mb"], floor_pss_mb=floor_memory["pss_mb"])
    results["floor_cold_start_s"] = floor.cold_start_s
    print(
        f"floor (BentoML hello world, {settings.worker_count} worker(s)): "
        f"cold start {floor.cold_start_s:.2f} s, "
        f"RSS {floor_memory['rss_mb']:.0f} MB (PSS {floor_memory['pss_mb']:.0f} MB)",
        flush=True,
    )

    for position, runtime in enumerate(args.runtime):
        alone = runtime_alone(tag, home, runtime, settings, inputs, seconds=4.0)
        print(
            f"{runtime} alone: {alone['ips']:.1f} images/s (batch {alone['batch']}; "
            + ", ".join(f"batch {batch}: {ips:.1f}/s" for batch, ips in alone["by_batch"].items())
            + f"), batch 1 in {alone['b1_ms']:.2f} ms",
            flush=True,
        )
        # a small model's runtime outruns any client in this process: HTTP bounds it, nothing to separate
        searched = args.server_trials and alone["b1_ms"] >= SMALL_MODEL_MS
        in_process = in_process_search(tag, home, runtime, settings, inputs, alone, args) if searched else {}
        port = free_port()
        server = Server(
            [str(BIN / "bentoml"), "serve", "--port", str(port)], {**env, "LIGHTYARD_RUNTIME": runtime},
            ROOT, work / f"serve-{runtime}.log", f"http://127.0.0.1:{port}", "/readyz",
        )  # fmt: skip
        try:
            figures = scenarios(server, wrk, bodies, alone, decode_ms, args)
            figures.update(
                server.memory(), cold_start_s=server.cold_start_s, loads_torch=server.loads_torch(),
                in_process_max_rate=in_process.get("rate"),
                in_process_rate_fraction=in_process.get("rate", 0.0) / alone["ips"] if in_process else None,
            )  # fmt: skip
            if position == 0:
                figures["worker_kill"] = kill_probe(server, bodies, 0.3 * figures["offline_rps"])
        finally:
            server.stop()
        results["runtimes"][runtime] = figures
        print(
            f"  lightyard {runtime}: cold start {server.cold_start_s:.2f} s, RSS {figures['rss_mb']:.0f} MB "
            f"(PSS {figures['pss_mb']:.0f} MB) in {figures['processes']} processes, torch loaded: "
            f"{'yes' if figures['loads_torch'] else 'no'}",
            flush=True,
        )

    if not args.no_baseline:
        alone = eager_alone(tag, home, inputs, settings.device)
        print(
            f"eager PyTorch alone: {alone['ips']:.1f} images/s, batch 1 in {alone['b1_ms']:.2f} ms",
            flush=True,
        )
        port = free_port()
        baseline = Server(
            [sys.executable, str(ROOT / "bench" / "baseline_server.py"), tag, "--port", str(port),
             "--device", settings.device], env, ROOT,
            work / "baseline.log", f"http://127.0.0.1:{port}", "/health",
        )  # fmt: skip
        try:
            figures = scenarios(baseline, wrk, bodies, alone, decode_ms, args, lightyard=False)
            figures.update(baseline.memory(), cold_start_s=baseline.cold_start_s)
        finally:
            baseline.stop()
        results["baseline"] = figures
    wrk.close()
    report(results)
    print(f"server logs in {work}")
    save_figures(args.json, results)


def report(results: dict) -> None:
    """The table, and every target beside its figure."""
    first = next(iter(results["runtimes"].values()))
    results.update(rss_mb=first["rss_mb"], pss_mb=first["pss_mb"], cold_start_s=first["cold_start_s"])
    rows = {f"lightyard {name}": figures for name, figures in results["runtimes"].items()}
    if "baseline" in results:
        rows["baseline (Flask, eager)"] = results["baseline"]
    results["client_cpu_share"] = max(figures["client_cpu_share"] for figures in rows.values())
    head = (
        "alone/s",
        "Offline/s",
        "effic.",
        "SS p50",
        "SS p90",
        "SS ratio",
        "Server/s",
        "fraction",
        "no HTTP",
        "ideal",
        "ideal+req",
        "errors",
    )
    print(f"\n{'':<26}" + "".join(f"{column:>10}" for column in head))
    for name, f in rows.items():
        cells = (
            f"{f['alone_ips']:.1f}", f"{f['offline_rps']:.1f}", f"{f['efficiency']:.2f}",
            f"{f['single_stream_p50_ms']:.2f}", f"{f['single_stream_p90_ms']:.2f}",
            f"{f['single_stream_ratio']:.2f}",
            f"{f['server_max_rate']:.1f}", f"{f['server_rate_fraction']:.2f}",
            "–" if f.get("in_process_rate_fraction") is None else f"{f['in_process_rate_fraction']:.2f}",
            f"{f['server_ceiling_fraction']:.2f}", f"{f['server_ceiling_with_requests_fraction']:.2f}",
            str(f["errors"]),
        )  # fmt: skip
        print(f"{name:<26}" + "".join(f"{cell:>10}" for cell in cells))
    print("(latencies in ms; alone: the runtime called directly in the server's layout; no HTTP: the Server "
          "fraction of the server's batching and runtime called in-process; ideal: the Server fraction of a "
          "server that only runs the model, in the same layout (M/D/c); ideal+req: the same with each "
          "request taking its SingleStream p50, as if HTTP and decoding cost nothing more under load; "
          "Offline with "
          f"{results['clients']} connections; the load generator used at most "
          f"{results['client_cpu_share']:.0%} of the machine's CPU)")  # fmt: skip

    checks = [
        (f"cold start {results['cold_start_s']:.2f} s ≤ 2× the floor's {results['floor_cold_start_s']:.2f} s",
         results["cold_start_s"] <= 2 * results["floor_cold_start_s"]),
    ]  # fmt: skip
    baseline = results.get("baseline")
    for name, f in results["runtimes"].items():
        checks += [
            (f"{name}: no serving process loaded torch",
             not f["loads_torch"] or name.startswith("torchscript")),
            (f"{name}: {f['errors']} errors at {results['clients']} connections", f["errors"] == 0),
        ]  # fmt: skip
        if baseline:
            f["offline_vs_baseline"] = f["offline_rps"] / baseline["offline_rps"]
        if f["batch1_ms"] < SMALL_MODEL_MS:  # the server, not the runtime, bounds a small model
            checks += [
                (f"{name}: SingleStream p50 {f['single_stream_p50_ms']:.2f} ms ≤ 5 ms",
                 f["single_stream_p50_ms"] <= 5),
                (f"{name}: serving tree RSS {f['rss_mb']:.0f} MB ≤ 500 MB", f["rss_mb"] <= 500),
            ]  # fmt: skip
            if baseline:
                ratio = f["offline_vs_baseline"]
                checks.append((f"{name}: Offline {ratio:.2f}× the baseline's ≥ 5×", ratio >= 5))
            continue
        checks += [
            (f"{name}: SingleStream p90 {f['single_stream_ratio']:.2f}× batch-1 + decode ≤ 1.3×",
             f["single_stream_ratio"] <= 1.3),
            *([] if not results["server_trials"] else [(
                f"{name}: Server rate {f['server_rate_fraction']:.2f} of alone ≥ 0.6 (an ideal server: "
                f"{f['server_ceiling_fraction']:.2f}; with each request's own cost: "
                f"{f['server_ceiling_with_requests_fraction']:.2f})",
                f["server_rate_fraction"] >= 0.6,
            )]),
        ]  # fmt: skip
        if name in TARGETS:
            checks.append(
                (
                    f"{name}: efficiency {f['efficiency']:.3f} ≥ {TARGETS[name]}",
                    f["efficiency"] >= TARGETS[name],
                )
            )
    for name, f in results["runtimes"].items():
        if kill := f.get("worker_kill"):
            checks.append((
                f"{name}: a killed worker cost {kill['lost']} request(s) in flight; the longest wait was "
                f"{kill['max_latency_s']:.2f} s against a restart of {kill['restart_s']:.2f} s",
                kill["max_latency_s"] <= kill["restart_s"] + 1.0,
            ))  # fmt: skip
    print()
    for text, met in checks:
        print(f"  [{'met' if met else 'NOT MET'}] {text}")


if __name__ == "__main__":
    main()

"""Load generation for `bench/serving.py`: closed loops with wrk, open-loop Poisson arrivals in-process.

Closed loops (SingleStream with one connection, Offline with many) run `wrk`, a compiled generator from
Debian: a Lua script rotates a pool of multipart bodies. Open loop (Server) cannot be done with wrk, which
sends the next request when the previous answer arrives and so hides stalls (coordinated omission): a
small asyncio client (uvloop when installed) sends at Poisson-scheduled times over a pool of keep-alive
connections and measures each latency from the *scheduled* send time. The same arrivals can call the
server's batching and runtime in this process instead (`in_process_loop`): the bound any HTTP front end
works under. Both report the share of the machine's CPU the client itself used, so a reader can see how
much it took from the server.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BOUNDARY = "lightyardbenchboundary"
WRK_SCRIPT = """
local bodies = {}
local count = tonumber(os.getenv("LOAD_BODIES"))
for i = 1, count do
  local f = io.open(os.getenv("LOAD_DIR") .. "/" .. i .. ".body", "rb")
  bodies[i] = f:read("*a")
  f:close()
end
local headers = {["Content-Type"] = "multipart/form-data; boundary=" .. os.getenv("LOAD_BOUNDARY")}
local n = 0
request = function()
  n = n % count + 1
  return wrk.format("POST", nil, headers, bodies[n])
end
"""


def multipart(image: bytes, filename: str, content_type: str) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    )
    return head.encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()


@dataclass
class Run:
    """One load run: completed requests, errors, seconds, latency percentiles (ms), client CPU share."""

    requests: int
    errors: int
    seconds: float
    percentiles: dict[int, float] = field(default_factory=dict)
    client_cpu_share: float = 0.0
    client_late_p99_ms: float = 0.0  # open loop: how late the client itself sent, p99 (in the latencies)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def ensure_wrk() -> str:
    """wrk's path; installed from Debian when missing and this process may (root)."""
    if path := shutil.which("wrk"):
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (Debian package) for the closed-loop scenarios …", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    if path := shutil.which("wrk"):
        return path
    raise SystemExit("wrk is needed for the closed-loop scenarios: apt-get install wrk")


class Wrk:
    """wrk against one URL with a pool of multipart bodies."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.binary = ensure_wrk()
        self.folder = Path(tempfile.mkdtemp(prefix="lightyard-wrk-"))
        for position, body in enumerate(bodies, start=1):
            (self.folder / f"{position}.body").write_bytes(body)
        (self.folder / "post.lua").write_text(WRK_SCRIPT)
        self.env = {
            **os.environ,
            "LOAD_DIR": str(self.folder),
            "LOAD_BODIES": str(len(bodies)),
            "LOAD_BOUNDARY": BOUNDARY,
        }

    def run(self, url: str, connections: int, seconds: float) -> Run:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        command = [
            self.binary, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "60s",
            "--latency", "-s", str(self.folder / "post.lua"), url,
        ]  # fmt: skip
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return parse_wrk(result.stdout, _cpu(after) - _cpu(before))

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def parse_wrk(text: str, client_cpu_s: float) -> Run:
    completed, seconds, unit = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)\b", text).groups()
    seconds = float(seconds) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[unit]
    refused = int(match.group(1)) if (match := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
    failed = 0  # requests that got no answer at all: not among wrk's completed ones
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        failed = sum(int(x) for x in match.groups())
    percentiles = {}
    for percent, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE):
        percentiles[int(percent)] = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    share = client_cpu_s / (seconds * (os.cpu_count() or 1))
    return Run(int(completed) - refused, refused + failed, seconds, percentiles, share)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection that answers one request at a time; kept for the next request unless the
    server closes it (HTTP/1.0, `Connection: close`)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.reusable = True
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._complete(closed=False)

    def _complete(self, closed: bool) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None or self.waiter.done():
            return
        head = bytes(self.buffer[:end]).lower()
        length = re.search(rb"content-length: *(\d+)", head)
        if length is None and not closed:
            return  # the body runs until the server closes the connection
        size = int(length.group(1)) if length else len(self.buffer) - end - 4
        if len(self.buffer) < end + 4 + size:
            return
        self.reusable = head.startswith(b"http/1.1") and b"connection: close" not in head
        status = int(self.buffer[9:12])
        del self.buffer[: end + 4 + size]
        self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._complete(closed=True)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    async def send(self, request: bytes) -> int:
        if self.lost:
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


Send = Callable[[int], Awaitable[int]]  # the n-th request of a run → its HTTP status
Measured = tuple[list[float], int, float, float]  # latencies (ms), errors, seconds sent over, late p99 (ms)


async def _poisson(send: Send, rate: float, seconds: float, seed: int) -> Measured:
    """Poisson arrivals at `rate` for `seconds`: latencies from each scheduled time (ms), errors, seconds
    sent over, and how late the sender itself was at p99 (ms)."""
    loop = asyncio.get_running_loop()
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, int(rate * seconds * 1.2) + 10)
    offsets = np.cumsum(gaps)
    offsets = offsets[offsets < seconds]
    latencies: list[float] = []
    lateness: list[float] = []
    errors = 0

    async def one(scheduled: float, position: int) -> None:
        nonlocal errors
        lateness.append(1000.0 * (loop.time() - scheduled))
        try:
            status = await send(position)
        except (OSError, TimeoutError, ConnectionError):
            errors += 1
            return
        latencies.append(1000.0 * (loop.time() - scheduled))
        errors += status != 200

    start = loop.time() + 0.05
    tasks = []
    for position, offset in enumerate(offsets):
        scheduled = start + float(offset)
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(scheduled, position)))
    await asyncio.gather(*tasks)
    late_p99 = float(np.percentile(lateness, 99)) if lateness else 0.0
    return latencies, errors, float(offsets[-1]) if len(offsets) else seconds, late_p99


async def _http_loop(
    host: str, port: int, requests: list[bytes], rate: float, seconds: float, seed: int
) -> Measured:
    loop = asyncio.get_running_loop()
    idle: list[_Connection] = []

    async def send(position: int) -> int:
        while idle and idle[-1].lost:
            idle.pop()
        connection = idle.pop() if idle else None
        if connection is None:
            _, connection = await loop.create_connection(_Connection, host, port)
        status = await asyncio.wait_for(connection.send(requests[position % len(requests)]), 60)
        if connection.reusable and not connection.lost:
            idle.append(connection)
        return status

    try:
        return await _poisson(send, rate, seconds, seed)
    finally:
        for connection in idle:
            connection.transport.close()


def open_loop(url: str, bodies: list[bytes], rate: float, seconds: float, seed: int = 0) -> Run:
    """Poisson arrivals at `rate` per second for `seconds`; latency from each scheduled send time."""
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()
    path = url.split(port, 1)[1] or "/"
    requests = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in bodies
    ]
    return _measured(lambda: _http_loop(host, int(port), requests, rate, seconds, seed))


def in_process_loop(
    call: Callable[[np.ndarray], Awaitable[np.ndarray]],
    inputs: list[np.ndarray],
    rate: float,
    seconds: float,
    seed: int = 0,
) -> Run:
    """The same Poisson arrivals, each awaiting `call(inputs[n])` in this process: what the server's
    batching and runtime give with no HTTP in front of them."""

    async def send(position: int) -> int:
        try:
            await call(inputs[position % len(inputs)])
        except Exception:  # refused (overload) or failed: an error, as a 503 or 500 is over HTTP
            return 503
        return 200

    return _measured(lambda: _poisson(send, rate, seconds, seed))


def _measured(run: Callable[[], Awaitable[Measured]]) -> Run:
    """Runs an open loop on uvloop (when installed) with the collector off, and summarises it."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    gc.collect()
    gc.freeze()  # a full collection of the client's heap would stall it and count against the server
    gc.disable()
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        latencies, errors, sent, late = runner(run())
    finally:
        gc.enable()
        gc.unfreeze()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    points = (50, 90, 99, 100)
    percentiles = (
        dict(zip(points, np.percentile(latencies, points).tolist(), strict=True)) if latencies else {}
    )
    return Run(len(latencies), errors, sent, percentiles, cpu / (wall * (os.cpu_count() or 1)), late)

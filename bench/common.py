"""What every bench shares: the host's facts, MNIST on disk, free ports, server processes, timing and the
JSON output. A bench script keeps only its scenarios and its targets. Importing it loads neither torch nor
BentoML: bench/int8_isa.py's worker runs it under CPU emulation."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from lightyard.cpu import cpu_model, host_flags, isa_family
from lightyard.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"  # paths.data_dir's default: where `unpack-mnist` puts MNIST
UNPACK = ROOT.parent / "shared" / "data" / "unpack-mnist"
# The flags that change which kernels oneDNN, MLAS and FBGEMM run, and so every CPU figure.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def host(*packages: str) -> dict[str, Any]:
    """The machine and the versions behind the figures: seconds move with them, ratios much less."""
    from lightyard.bentoml_adapter import available_cpus  # BentoML's own count, cgroup quotas included

    flags = host_flags()
    return {
        "cpu": cpu_model(),
        "cores": available_cpus(),
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "isa_family": isa_family(),
        **{package: version(package) for package in ("torch", *packages)},
        "python": sys.version.split()[0],
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def host_line(facts: dict[str, Any]) -> str:
    """The first line every bench prints."""
    isa = " ".join(facts["isa"]) or "no AVX2"
    versions = ", ".join(f"{key} {facts[key]}" for key in facts if key not in NOT_VERSIONS)
    machine = f"{facts['cpu']}, {facts['cores']} cores, {isa} ({facts['isa_family']})"
    return f"host: {machine}; {versions}; {facts['date']}"


NOT_VERSIONS = ("cpu", "cores", "isa", "isa_family", "python", "date")


def save_figures(path: Path | None, figures: dict[str, Any]) -> None:
    """`--json PATH`: the figures, written atomically; the last line says where they went."""
    if path:
        write_json_atomic(path, figures)
        print(f"figures written to {path}")
    else:
        print("figures printed above (--json PATH keeps them)")


def ensure_mnist() -> None:
    """MNIST's idx files in data/MNIST/raw, unpacked from ../shared/data when they are not there yet."""
    if (DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file():
        return
    if not UNPACK.is_file():
        raise SystemExit(f"MNIST is not in {DATA}/MNIST/raw and {UNPACK} is absent: put the idx files there")
    print(f"unpacking MNIST into {DATA} with {UNPACK}", flush=True)
    subprocess.run([str(UNPACK), str(DATA)], check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def median_ms(call: Callable[[], object], repeats: int, warmup: int = 5) -> float:
    """Median wall time of `call` in milliseconds, after `warmup` calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def status(url: str) -> int | None:
    """The HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return None


class Server:
    """A server process started in its own session: cold start, memory, torch, stop."""

    def __init__(self, command: list[str], env: dict, cwd: Path, log: Path, url: str, ready: str) -> None:
        self.url = url
        started = time.perf_counter()
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"{' '.join(command)} exited {self.process.returncode}:\n{log.read_text()[-3000:]}")
            if status(f"{url}{ready}") == 200:
                self.cold_start_s = time.perf_counter() - started
                return
            time.sleep(0.02)
        self.stop()
        sys.exit(f"{' '.join(command)} did not become ready in 180 s: see {log}")

    def tree(self) -> list:
        import psutil

        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def memory(self) -> dict:
        """Resident memory of the whole tree: RSS counts shared libraries once per process, PSS shares
        them out, so PSS is what the tree really costs."""
        tree = self.tree()
        return {
            "processes": len(tree),
            "rss_mb": sum(p.memory_info().rss for p in tree) / 2**20,
            "pss_mb": sum(p.memory_full_info().pss for p in tree) / 2**20,
        }

    def loads_torch(self) -> bool:
        return any("/torch/" in Path(f"/proc/{p.pid}/maps").read_text() for p in self.tree())

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)

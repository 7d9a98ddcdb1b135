"""Every use of BentoML's private modules (`bentoml._internal`), each with its reason: the one place to look
when a BentoML upgrade breaks something. Read against BentoML 1.4.40 (pyproject.toml keeps it to 1.4);
`internals_problem()` says in one line what a different BentoML lacks."""

from __future__ import annotations

import functools
import importlib
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from lightyard.errors import UserError

__all__ = [
    "ModelContext",
    "ModelInfo",
    "ModelOptions",
    "Tag",
    "adaptive_batcher",
    "available_cpus",
    "served_model_store",
    "swagger_ui_assets",
]

READ_AGAINST = "1.4.40"
# Each private module used below, with the names and the parameters of theirs this module relies on.
INTERNALS: dict[str, dict[str, tuple[str, ...]]] = {
    "bentoml._internal.models.model": {"ModelContext": (), "ModelInfo": (), "ModelOptions": ()},
    "bentoml._internal.tag": {"Tag": ()},
    "bentoml._internal.server": {},
    "bentoml._internal.configuration.containers": {"BentoMLContainer": ()},
    "bentoml._internal.resource": {"system_resources": ()},
    "bentoml._internal.utils.metrics": {"exponential_buckets": ()},
    "bentoml._internal.marshal.dispatcher": {
        "CorkDispatcher": (
            "max_latency_in_ms",
            "max_batch_size",
            "shared_sema",
            "fallback",
            "get_batch_size",
        ),
        "CorkDispatcher._get_inputs": ("num_batches",),
        "NonBlockSema": (),
        "Optimizer": (),
    },
    "bentoml._internal.context": {"server_context": ()},
    "circus.controller": {"Controller.start": ()},
}


def internals_problem(internals: dict[str, dict[str, tuple[str, ...]]] = INTERNALS) -> str | None:
    """One line naming the first private module, name or parameter this BentoML lacks, or None."""
    installed = metadata.version("bentoml")
    for module_name, names in internals.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return _changed(installed, f"it has no module {module_name}")
        for name, parameters in names.items():
            target: Any = module
            for part in name.split("."):
                target = getattr(target, part, None)
                if target is None:
                    return _changed(installed, f"{module_name} has no {name}")
            accepted = inspect.signature(target).parameters if parameters else {}
            missing = [parameter for parameter in parameters if parameter not in accepted]
            if missing:
                return _changed(installed, f"{module_name}.{name} takes no {', '.join(missing)}")
    return None


def _changed(installed: str, what: str) -> str:
    return (
        f"BentoML {installed} changed what lightyard uses ({what}): lightyard was written against BentoML "
        f"{READ_AGAINST}; install bentoml=={READ_AGAINST} (pyproject.toml)"
    )


# The registry writes `model.yaml` itself (atomically, with checksums) in the format BentoML reads, so
# `bentoml models list`, `bentoml build` and services see lightyard's versions as their own.
try:
    from bentoml._internal.models.model import ModelContext, ModelInfo, ModelOptions
    from bentoml._internal.tag import Tag
except ImportError as err:  # a BentoML other than the one read: say which, in one line
    raise UserError(internals_problem() or f"BentoML's internals changed: {err}") from None

Batch = np.ndarray  # N×C×H×W model inputs
BatchFunction = Callable[[Batch], np.ndarray]
QUEUE_SHARE = 2  # a free stream takes 1/(QUEUE_SHARE × streams) of the queue: see adaptive_batcher


def swagger_ui_assets() -> Path:
    """Swagger UI's files, which BentoML ships for its own index page: the service's `/docs` serves them
    from here, so the API docs work offline without a copy of Swagger UI in this repository."""
    from bentoml._internal import server

    return Path(server.__file__).parent / "static_content"


def served_model_store() -> Path:
    """The BENTOML_HOME whose model store BentoML serves from: `$BENTOML_HOME`, or the store it set up
    for a Bento (`bentoml serve <bento>` points the container at the Bento's own `models/`)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.model_store.get()._path).parent


def available_cpus() -> int:
    """The cores this process may use, cgroup CPU quotas included: what BentoML's `workers="cpu_count"`
    counts (os.cpu_count() sees the whole host inside a container)."""
    from bentoml._internal.resource import system_resources

    return max(1, int(system_resources()["cpu"]))


@functools.cache
def _batch_histograms(max_batch_size: int) -> tuple[Any, Any]:
    """BentoML's `adaptive_batch_size` metric and lightyard's `runtime_call_seconds` beside it, registered
    once per process (a second registration of the same name is an error in Prometheus' registry)."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.utils.metrics import exponential_buckets

    client = BentoMLContainer.metrics_client.get()
    labels = ["runner_name", "worker_index", "method_name", "service_version", "service_name"]
    sizes = client.Histogram(
        namespace="bentoml_service",
        name="adaptive_batch_size",
        documentation="Service adaptive batch size",
        labelnames=labels,
        buckets=exponential_buckets(1, 2, max_batch_size),
    )
    call_seconds = client.Histogram(
        namespace="lightyard",
        name="runtime_call_seconds",
        documentation="Seconds per runtime call of a merged batch, without the request around it",
        labelnames=labels,
        buckets=exponential_buckets(0.0001, 2, 20),
    )
    return sizes, call_seconds


def _stream_dispatcher() -> type:
    """BentoML's `CorkDispatcher` with the changes `adaptive_batcher` explains."""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher, NonBlockSema, Optimizer

    class DispatchWhenFree(Optimizer):
        """BentoML's cost model with the cork's waiting time held at zero."""

        @property
        def wait(self) -> float:
            return 0.0

        @wait.setter
        def wait(self, value: float) -> None:
            pass

    class StreamDispatcher(CorkDispatcher):
        def __init__(self, *, streams: int, **options) -> None:
            super().__init__(shared_sema=NonBlockSema(streams), **options)
            self.streams = streams
            self.optimizer = DispatchWhenFree(self.max_latency)

        def _get_inputs(self, num_batches: int | None = None):
            if num_batches is None:
                queued = sum(self.get_batch_size(job.data) for job in self._queue)
                num_batches = min(self.max_batch_size, -(-queued // (QUEUE_SHARE * self.streams)))
            return super()._get_inputs(num_batches)

    return StreamDispatcher


def adaptive_batcher(
    run: BatchFunction, *, max_batch_size: int, max_latency_ms: int, streams: int, name: str
) -> Callable[[Batch], Awaitable[np.ndarray]]:
    """BentoML's adaptive batching, called in-process: `await batched(images)` queues the images and
    returns their rows of `run`'s output once a merged batch has run.

    A `@bentoml.api(batchable=True)` method gets the same dispatcher (`CorkDispatcher`: it queues
    requests, merges up to `max_batch_size` images, splits requests that do not fit, keeps a fixed
    number of batches in flight, fits a linear cost model of batch size against time, and cancels with
    503 what would pass `max_latency_ms`), but only behind its own HTTP route: the route parses JSON into
    arrays and back, and a service calling its own API goes through that route. Driving the dispatcher
    directly keeps the arrays in memory from the upload to the runtime. Three things differ:
    - `streams` batches in flight instead of one (`shared_sema`, a dispatcher parameter): single-threaded
      runtime calls side by side use the cores better than one call spread over them, and leave no
      thread pool for the event loop to stall.
    - The cork never waits while a runtime slot is free. The dispatcher holds a request back for the
      average wait of its recent batches, hoping for company; under load those waits include the time
      spent queued behind a busy runtime, so after a burst the average stays high and lone requests
      keep waiting it with the runtime idle: several times their own call, while under full load the
      cork gains nothing (figures: docs/results.md, Serving).
    - A free slot takes 1/(QUEUE_SHARE × streams) of the queue, not all of it. Taking everything
      serialises a queue on one stream while the others free up and idle, and a Poisson load's p99
      grows with the batch. Shares give small batches on every stream while the queue is short and
      large ones once it is long: the Server scenario's rate rises and Offline throughput stays as it
      was (`bench/serving.py`; figures in docs/results.md).
    Batch sizes are recorded in BentoML's own `bentoml_service_adaptive_batch_size` histogram, and the
    seconds of each runtime call in `lightyard_runtime_call_seconds`: a lone request's latency less its
    call is what the server adds.
    """
    from bentoml._internal.context import server_context
    from bentoml.exceptions import ServiceUnavailable

    def refuse() -> np.ndarray:
        raise ServiceUnavailable("the server is overloaded: requests would wait past max_latency_ms")

    labels = {
        "runner_name": name,
        "worker_index": server_context.worker_index,
        "method_name": "infer",
        "service_version": server_context.bento_version,
        "service_name": server_context.bento_name,
    }
    sizes, call_seconds = (histogram.labels(**labels) for histogram in _batch_histograms(max_batch_size))

    def run_merged(batches: Sequence[Batch]) -> list[np.ndarray]:
        merged = np.concatenate(batches) if len(batches) > 1 else batches[0]
        started = time.perf_counter()
        try:
            outputs = run(merged)
        finally:  # both recorded together, when the call is over: the two histograms count the same calls
            call_seconds.observe(time.perf_counter() - started)
            sizes.observe(len(merged))
        return np.split(outputs, np.cumsum([len(batch) for batch in batches[:-1]]))

    dispatcher = _stream_dispatcher()(
        max_latency_in_ms=max_latency_ms,
        max_batch_size=max_batch_size,
        fallback=refuse,
        get_batch_size=len,
        streams=streams,
    )
    return dispatcher(run_merged)


def restart_dead_workers_promptly(every_s: float = 1.0) -> None:
    """Call in the `bentoml serve` process before it starts its supervisor.

    BentoML's supervisor (circus) looks for dead workers only when it next checks its processes, every
    10 s as BentoML sets it: a worker killed by the OOM killer left its requests waiting up to 10 s
    before the replacement even began to start. Checking every second lets the replacement start at
    once; the check itself only reaps exited processes and counts the live ones.
    """
    from circus.controller import Controller

    if getattr(Controller.start, "lightyard", False):
        return
    start = Controller.start

    def start_checking_often(self) -> None:
        self.check_delay = min(self.check_delay, every_s * 1000)  # circus keeps it in milliseconds
        start(self)

    start_checking_often.lightyard = True
    Controller.start = start_checking_often

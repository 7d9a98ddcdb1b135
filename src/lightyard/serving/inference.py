"""The runtime behind the routes: concurrent requests' images merged into batched runtime calls.

Kept apart from the service module, which loads the served model when imported, so that
`bench/serving.py` can drive exactly what a worker runs without HTTP in front of it.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Awaitable, Callable
from functools import partial

import numpy as np

from lightyard.bentoml_adapter import adaptive_batcher
from lightyard.export.runtimes import Runner
from lightyard.serving import protocol
from lightyard.serving.settings import ServingSettings

_niced = threading.local()


def probabilities(run: Runner, nice: int, inputs: np.ndarray) -> np.ndarray:
    """Called in the dispatcher's threads. The first call in each thread lowers that thread's priority
    by `nice`: when every core is busy with runtime calls, the event loop still gets one at once to parse
    the next request and send finished answers (measured with `bench/serving.py`: docs/results.md)."""
    if nice and not getattr(_niced, "done", False) and sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)  # a thread id: this thread only
        _niced.done = True
    return protocol.softmax(run(inputs))


def batched_classifier(
    run: Runner, settings: ServingSettings
) -> Callable[[np.ndarray], Awaitable[np.ndarray]]:
    """`await classify(images)`: the images' class probabilities, computed in batches merged with other
    requests' images, `settings.stream_count` runtime calls side by side."""
    return adaptive_batcher(
        partial(probabilities, run, settings.runtime_nice),
        max_batch_size=settings.max_batch_size,
        max_latency_ms=settings.max_latency_ms,
        streams=settings.stream_count,
        name="lightyard",
    )

"""The Server scenario's ceiling: what an ideal server in the same layout could reach.

An ideal server does nothing but run the model: `servers` runtime calls side by side (the layout's
streams), each request taking exactly the runtime's batch-1 latency, in arrival order, with no decoding,
HTTP or dispatch around it, and no gain from batching. Under Poisson arrivals this is the M/D/c queue,
simulated here. Its highest rate with p99 within the bound is what no front end can beat unless batching
makes its calls cheaper per image (ResNet-18 on a 2-core CPU: by 7-10% at the best batch size, which
`bench/serving.py` prints), and it shows how much of the Server target the machine leaves to be won.
"""

from __future__ import annotations

import heapq

import numpy as np

REQUESTS = 100_000  # per simulated rate: enough for a p99 steady to about 1%


def sojourns(arrivals: np.ndarray, service: float, servers: int) -> np.ndarray:
    """Each request's time from arrival to answer, first come first served on `servers` servers."""
    free = [0.0] * servers
    done = np.empty(len(arrivals))
    for position, arrival in enumerate(arrivals.tolist()):
        start = max(arrival, heapq.heappop(free))
        heapq.heappush(free, start + service)
        done[position] = start + service
    return done - arrivals


def ceiling_rate(service_ms: float, servers: int, bound_ms: float, seed: int = 0) -> float:
    """The highest Poisson rate (requests/s) at which the ideal server's p99 stays within `bound_ms`."""
    gaps = np.random.default_rng(seed).exponential(1.0, REQUESTS)  # one draw, scaled per rate: monotone
    capacity = servers / service_ms  # requests per ms
    low, high = 0.0, 1.0
    for _ in range(20):  # bisect the load to 1e-6
        load = (low + high) / 2
        arrivals = np.cumsum(gaps / (load * capacity))
        if np.percentile(sojourns(arrivals, service_ms, servers), 99) <= bound_ms:
            low = load
        else:
            high = load
    return 1000.0 * low * capacity

"""The Server scenario on the dispatcher alone: what the batching in front of the runtime costs by itself.

A stand-in runtime sleeps `latency × images` per call and uses no CPU, so what is left is the dispatcher
the workers run (`lightyard.serving.inference.batched_classifier`: BentoML's CorkDispatcher with
`streams` calls side by side, see `lightyard.bentoml_adapter.adaptive_batcher`) and this process's event
loop. Its Server rate against the M/D/c ideal of the same layout (`bench/queueing.py`, which the stand-in
matches: no gain from batching, every image the same time) is what the dispatcher itself keeps of the
ideal, before any real runtime call shares the cores.

    python bench/dispatcher.py [--latency-ms 4.9] [--trials 8]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from common import host, host_line
from queueing import ceiling_rate
from serving import SERVER_BOUND, dispatcher_search

from lightyard.serving.settings import ServingSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=4.9, help="the stand-in's time per image")
    parser.add_argument("--trials", type=int, default=8, help="Server rates tried")
    parser.add_argument("--seconds", type=float, default=8.0, help="least length of a trial")
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    machine = host("bentoml")
    print(host_line(machine), flush=True)
    settings = ServingSettings.load()
    latency = args.latency_ms / 1000

    def stand_in(images: np.ndarray) -> np.ndarray:
        time.sleep(latency * len(images))
        return np.zeros((len(images), 10), dtype=np.float32)

    images = [np.zeros((1, 3, 8, 8), dtype=np.float32)] * 16
    streams = settings.stream_count
    capacity = streams / latency
    bound = SERVER_BOUND * args.latency_ms
    ideal = ceiling_rate(args.latency_ms, streams, bound)
    print(
        f"stand-in runtime: {args.latency_ms:.2f} ms per image, {streams} calls side by side "
        f"({capacity:.1f} images/s); p99 bound {bound:.1f} ms",
        flush=True,
    )

    found = dispatcher_search(stand_in, settings, images, capacity, bound, args.seconds, args.trials)
    print(
        f"the dispatcher: Server rate {found['rate']:.1f}/s, {found['rate'] / capacity:.2f} of capacity and "
        f"{found['rate'] / ideal:.0%} of the ideal server's (M/D/{streams}: {ideal:.1f}/s, "
        f"{ideal / capacity:.2f} of capacity)"
    )


if __name__ == "__main__":
    main()

"""What a compressed model costs and gives: size, parameters, non-zeros, MACs, latency, accuracy.

Every runtime is timed the same way: the same images, the same thread count (torch's intra-op threads and
ONNX Runtime's intra-op pool), warm-up calls first, and the median (p50) of repeated calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lightyard.compress.gate import Batches, Predictions, predict
from lightyard.export.runtimes import Runner, latency_ms


@dataclass
class Row:
    """One line of the compression report."""

    name: str
    file_bytes: int | None  # None for the eager network (nothing deployable on disk)
    parameters: int
    nonzeros: int
    macs: int
    p50_b1_ms: float
    p50_b32_ms: float
    throughput: float  # images per second at batch 32
    accuracy: float
    top1_agreement: float  # with the FP32 reference

    def to_dict(self) -> dict:
        return asdict(self)


def parameter_counts(net: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters): unstructured pruning shows in the second only."""
    total = nonzero = 0
    for tensor in net.parameters():
        total += tensor.numel()
        nonzero += int(torch.count_nonzero(tensor))
    return total, nonzero


def count_macs(net: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on one image (torch-pruning's op counter)."""
    import torch_pruning as tp

    macs, _ = tp.utils.count_ops_and_params(net.eval(), example[:1])
    return int(macs)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def eager_runner(net: nn.Module) -> Runner:
    net = net.eval()

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(images)).numpy()

    return run


def measure(
    name: str,
    run: Runner,
    net: nn.Module,
    test: Batches,
    reference: Predictions | None,
    *,
    file: Path | None = None,
    threads: int = 2,
    repeats: int = 30,
) -> tuple[Row, Predictions]:
    """One report row. `net` is the eager network the artifact was made from (for parameters and MACs);
    `reference` the FP32 predictions that top-1 agreement is counted against (None: this is the reference)."""
    test = list(test)
    images = torch.cat([batch for batch, _ in test]).numpy()
    with torch_threads(threads):
        outcome = predict(run, test)
        b1 = latency_ms(run, images, 1, repeats)
        b32 = latency_ms(run, images, 32, repeats)
    parameters, nonzeros = parameter_counts(net)
    row = Row(
        name=name,
        file_bytes=file.stat().st_size if file else None,
        parameters=parameters,
        nonzeros=nonzeros,
        macs=count_macs(net, torch.from_numpy(images)),
        p50_b1_ms=b1,
        p50_b32_ms=b32,
        throughput=32_000.0 / b32,
        accuracy=outcome.accuracy,
        top1_agreement=outcome.agreement(reference or outcome),
    )
    return row, outcome

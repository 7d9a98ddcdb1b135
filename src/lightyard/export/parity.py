"""The parity gate: an artifact is kept only if its runtime reproduces the eager network's logits."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from lightyard.export.runtimes import Runner

DEFAULT_ATOL = 1e-4
SINGLE_IMAGES = 8  # batch-1 calls: enough to catch shape specialisation without slowing the gate


@dataclass(frozen=True)
class Parity:
    """How closely an artifact matches the eager network on the same real images."""

    kind: ClassVar[str] = "parity"
    max_abs_diff: float
    top1_agreement: float
    images: int
    batch_sizes: tuple[int, ...]
    atol: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol and self.top1_agreement == 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "batch_sizes": list(self.batch_sizes), "passed": self.passed}

    def summary(self) -> str:
        return (
            f"max |Δlogit| {self.max_abs_diff:.2e} (limit {self.atol:.0e}), "
            f"top-1 agreement {self.top1_agreement:.2%} on {self.images} images, batch {self.batch_sizes}"
        )


def check_parity(run: Runner, net: nn.Module, inputs: torch.Tensor, atol: float = DEFAULT_ATOL) -> Parity:
    """Run `inputs` through the artifact one image at a time and as one batch; compare with `net`."""
    with torch.inference_mode():
        expected = net(inputs).numpy()
    arrays = inputs.numpy()
    single = min(SINGLE_IMAGES, len(arrays))
    one_by_one = np.concatenate([run(arrays[i : i + 1]) for i in range(single)])
    batched = run(arrays)
    if batched.shape != expected.shape or one_by_one.shape != expected[:single].shape:
        return Parity(float("inf"), 0.0, len(inputs), (1, len(inputs)), atol)
    diff = max(np.abs(batched - expected).max(), np.abs(one_by_one - expected[:single]).max())
    agree = np.concatenate(
        [batched.argmax(1) == expected.argmax(1), one_by_one.argmax(1) == expected[:single].argmax(1)]
    )
    return Parity(float(diff), float(agree.mean()), len(inputs), (1, len(inputs)), atol)

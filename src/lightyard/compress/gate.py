"""The accuracy gate for compressed artifacts: they are not meant to reproduce FP32 logits exactly, so the
parity gate's tolerance is replaced by a limit on the test accuracy lost, measured on the full test split.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch

from lightyard.export.runtimes import Runner

DEFAULT_MAX_DROP = 1.0  # accuracy points

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # (images, labels)


@dataclass(frozen=True)
class Predictions:
    """Top-1 predictions of one model over a labelled set."""

    predicted: np.ndarray
    labels: np.ndarray

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean())

    def agreement(self, other: Predictions) -> float:
        return float((self.predicted == other.predicted).mean())


def predict(run: Runner, batches: Batches) -> Predictions:
    predicted, labels = [], []
    for images, targets in batches:
        predicted.append(run(images.numpy()).argmax(axis=1))
        labels.append(targets.numpy())
    return Predictions(np.concatenate(predicted), np.concatenate(labels))


@dataclass(frozen=True)
class AccuracyGate:
    """A compressed model's test accuracy against its FP32 reference on the same images."""

    kind: ClassVar[str] = "accuracy"
    reference_accuracy: float
    accuracy: float
    top1_agreement: float
    images: int
    max_drop: float  # points

    @property
    def drop(self) -> float:
        """Accuracy points lost (negative: the compressed model did better)."""
        return 100.0 * (self.reference_accuracy - self.accuracy)

    @property
    def passed(self) -> bool:
        return self.drop <= self.max_drop

    def to_dict(self) -> dict:
        return {**asdict(self), "drop": self.drop, "passed": self.passed}

    def summary(self) -> str:
        return (
            f"test accuracy {self.accuracy:.4f} vs FP32 {self.reference_accuracy:.4f}: "
            f"{self.drop:+.2f} points lost (limit {self.max_drop:g}), "
            f"top-1 agreement with FP32 {self.top1_agreement:.2%} on {self.images} images"
        )


def check_accuracy(run: Runner, reference: Predictions, batches: Batches, max_drop: float) -> AccuracyGate:
    """Run the artifact over the labelled `batches` and compare with the reference's predictions."""
    outcome = predict(run, batches)
    if not np.array_equal(outcome.labels, reference.labels):
        raise ValueError("the reference predictions were made on other images")
    return AccuracyGate(
        reference.accuracy, outcome.accuracy, outcome.agreement(reference), len(outcome.labels), max_drop
    )

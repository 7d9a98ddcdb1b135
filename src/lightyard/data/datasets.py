"""Map-style data sets of `(PIL image, label)`, so every source goes through `PreprocessSpec.apply`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from lightyard.data.preprocess import load_image

Sample = tuple[Image.Image, int]


class ArrayImages(Dataset):
    """Images held in memory as uint8 arrays (N×H×W or N×H×W×C), as digits, MNIST and CIFAR ship them."""

    def __init__(self, images: np.ndarray, labels: Sequence[int]) -> None:
        if images.dtype != np.uint8:
            raise TypeError(f"expected uint8 images, got {images.dtype}")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Sample:
        return Image.fromarray(self.images[index]), int(self.labels[index])


class FileImages(Dataset):
    """Image files on disk, decoded on access."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int]) -> None:
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        return load_image(self.paths[index]), int(self.labels[index])


class Transformed(Dataset):
    """A subset of a sample data set with a transform applied to each image."""

    def __init__(self, source: Dataset, indices: Sequence[int], transform: Callable) -> None:
        self.source = source
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.source[self.indices[index]]
        return self.transform(image), label


def materialize(dataset: Dataset) -> TensorDataset:
    """Run a deterministic transform once for every sample; for small in-memory data sets."""
    inputs, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return TensorDataset(torch.stack(inputs), torch.as_tensor(labels, dtype=torch.long))

"""What every image-classification data module shares: splits, transforms, per-rank batch size, loaders."""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import lightning as L
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from lightyard.data.datasets import Transformed, materialize
from lightyard.data.preprocess import PreprocessSpec
from lightyard.errors import UserError


@dataclass
class Splits:
    """Index lists into sample data sets; `train` and `val` often share one source."""

    train_source: Dataset
    train: Sequence[int]
    val_source: Dataset
    val: Sequence[int]
    test_source: Dataset
    test: Sequence[int]


class ImageDataModule(L.LightningDataModule, ABC):
    """Base for data modules whose samples are `(PIL image, label)`.

    Subclasses say where samples come from (`load_splits`) and what the preprocessing spec is (`spec`);
    this class turns them into loaders. `batch_size` is the global batch: under DDP each rank gets
    `batch_size / world_size`, so changing the number of devices does not change the optimisation.
    """

    #: Small in-memory sets precompute deterministic transforms once instead of every epoch.
    materialize_deterministic = False

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 42,
        augmentation: Sequence[v2.Transform] | None = None,
        train_size: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"data.batch_size must be at least 1, got {batch_size}")
        for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < fraction < 1.0:
                raise UserError(f"data.{name} must be between 0 and 1, got {fraction}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        if train_size is not None and train_size < 1:
            raise UserError(
                f"data.train_size must be at least 1 (or null for the whole split), not {train_size}"
            )
        self.split_seed = split_seed
        self.train_size = train_size
        self.augmentation = list(augmentation or [])  # on the PIL image at its own size, before the spec
        self.datasets: dict[str, Dataset] = {}

    @cached_property
    @abstractmethod
    def spec(self) -> PreprocessSpec:
        """The preprocessing spec; needed before `setup` to size the network."""

    @abstractmethod
    def load_splits(self) -> Splits:
        """Sample data sets and the indices of each split."""

    def split(self, labels: Sequence[int], fraction: float) -> tuple[list[int], list[int]]:
        """A seeded split of `range(len(labels))` into (rest, held out), stratified where it can be."""
        indices = np.arange(len(labels))
        if len(indices) < 3:
            raise UserError(f"{len(indices)} images are too few to split into train/val/test: add more")
        try:
            rest, held_out = train_test_split(
                indices, test_size=fraction, random_state=self.split_seed, stratify=labels
            )
        except ValueError:  # a class too rare to stratify: fall back to a plain seeded split
            rest, held_out = train_test_split(indices, test_size=fraction, random_state=self.split_seed)
        return sorted(rest.tolist()), sorted(held_out.tolist())

    def split_three_ways(self, labels: np.ndarray) -> tuple[list[int], list[int], list[int]]:
        """Seeded train/val/test indices of one pool, `val_fraction` and `test_fraction` of it held out."""
        rest, test = self.split(labels, self.test_fraction)
        train_pos, val_pos = self.split(labels[rest], self.val_fraction / (1.0 - self.test_fraction))
        return [rest[i] for i in train_pos], [rest[i] for i in val_pos], test

    def training_indices(self, splits: Splits) -> list[int]:
        """The train split, or the same seeded `train_size` of it every run: a fixed small training set
        makes learning curves and sweeps cheap without touching val and test."""
        train = list(splits.train)
        if self.train_size is None:
            return train
        if self.train_size > len(train):
            raise UserError(
                f"data.train_size={self.train_size} is more than the {len(train)} training images: "
                f"use at most {len(train)}, or null for all"
            )
        chosen = np.random.default_rng(self.split_seed).choice(len(train), self.train_size, replace=False)
        return [train[i] for i in sorted(chosen)]

    @property
    def per_device_batch_size(self) -> int:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world_size:
            raise UserError(
                f"data.batch_size={self.batch_size} does not split evenly over {world_size} processes: "
                f"use a multiple of {world_size}"
            )
        return self.batch_size // world_size

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        splits = self.load_splits()
        train_transform = v2.Compose([*self.augmentation, v2.Lambda(self.spec.apply)])
        self.datasets = {
            "train": Transformed(splits.train_source, self.training_indices(splits), train_transform),
            "val": Transformed(splits.val_source, splits.val, self.spec.apply),
            "test": Transformed(splits.test_source, splits.test, self.spec.apply),
        }
        if self.materialize_deterministic:
            names = ["val", "test"] + ([] if self.augmentation else ["train"])
            self.datasets.update({name: materialize(self.datasets[name]) for name in names})

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[name],
            batch_size=self.per_device_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def calibration_batches(self, count: int) -> list[torch.Tensor]:
        """`count` batches of train images with the evaluation transform (no augmentation), in a fixed
        shuffled order: what static quantization calibrates activation ranges on."""
        if count < 1:
            raise UserError(f"calibration_batches={count}: static quantization needs at least 1 batch")
        splits = self.load_splits()
        train = self.training_indices(splits)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed))
        images = Transformed(splits.train_source, [train[i] for i in order], self.spec.apply)
        loader = DataLoader(images, batch_size=self.batch_size)
        return [batch for batch, _ in itertools.islice(loader, count)]

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

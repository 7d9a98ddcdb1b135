"""CIFAR-10, MNIST and Fashion-MNIST via torchvision's downloaders, read without unpickling untrusted data.

torchvision downloads and checksums the archives (`download: true` when the network allows). MNIST's idx
files are read by torchvision itself; CIFAR-10's python batches are pickles, so they are read here with an
unpickler that only rebuilds plain containers and numpy arrays.
"""

from __future__ import annotations

import pickle
from abc import abstractmethod
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torchvision import datasets

from lightyard.data.base import ImageDataModule, Splits
from lightyard.data.datasets import ArrayImages
from lightyard.data.preprocess import PreprocessSpec
from lightyard.errors import UserError


class TorchvisionDataModule(ImageDataModule):
    """An official train/test pair: val is split off train by `split_seed`, test is the official test set."""

    name: str
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    height = width = 28
    channels = 1

    def __init__(self, root: str, download: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.download = download

    @abstractmethod
    def files(self) -> list[Path]:
        """The files the data set needs on disk."""

    @abstractmethod
    def fetch(self) -> None:
        """Download and verify the archives (torchvision's own downloader)."""

    @abstractmethod
    def read(self, train: bool) -> ArrayImages:
        """The official train or test set as uint8 images."""

    def missing(self) -> list[Path]:
        return [path for path in self.files() if not path.is_file()]

    def prepare_data(self) -> None:
        """Download once per node (Lightning calls this on local rank zero only)."""
        if self.download and self.missing():
            try:
                self.fetch()
            except Exception as err:  # urllib, http and checksum errors all mean the same to the user
                raise UserError(
                    f"could not download {self.name} into {self.root} ({err}): without network access, "
                    f"place its files there yourself ({self.missing()[0]}, ...) and set data.download=false"
                ) from None

    @cached_property
    def spec(self) -> PreprocessSpec:
        return PreprocessSpec(
            height=self.height,
            width=self.width,
            channels=self.channels,
            mean=self.mean,
            std=self.std,
            class_names=self.class_names,
        )

    def load_splits(self) -> Splits:
        if missing := self.missing():
            raise UserError(
                f"{self.name} not found: {missing[0]} is missing; set data.download=true to fetch it, "
                "or data.root=DIR where the data set already lies"
            )
        train, test = self.read(train=True), self.read(train=False)
        rest, val = self.split(train.labels, self.val_fraction)
        return Splits(train, rest, train, val, test, list(range(len(test))))


class MNISTDataModule(TorchvisionDataModule):
    """MNIST's idx files under `root/MNIST/raw/`."""

    name = "MNIST"
    dataset_class = datasets.MNIST
    class_names = tuple(datasets.MNIST.classes)
    mean, std = (0.1307,), (0.3081,)

    def files(self) -> list[Path]:
        raw = self.root / self.dataset_class.__name__ / "raw"
        return [raw / Path(url).stem for url, _ in self.dataset_class.resources]

    def fetch(self) -> None:
        self.dataset_class(str(self.root), train=True, download=True)

    def read(self, train: bool) -> ArrayImages:
        dataset = self.dataset_class(str(self.root), train=train, download=False)
        return ArrayImages(dataset.data.numpy(), dataset.targets.numpy())


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST's idx files under `root/FashionMNIST/raw/`."""

    name = "Fashion-MNIST"
    dataset_class = datasets.FashionMNIST
    class_names = tuple(datasets.FashionMNIST.classes)
    mean, std = (0.2860,), (0.3530,)


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10's python batches under `root/cifar-10-batches-py/`."""

    name = "CIFAR-10"
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    height = width = 32
    channels = 3
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

    @property
    def folder(self) -> Path:
        return self.root / datasets.CIFAR10.base_folder

    def files(self) -> list[Path]:
        batches = [name for name, _ in datasets.CIFAR10.train_list + datasets.CIFAR10.test_list]
        return [self.folder / name for name in batches]

    def fetch(self) -> None:
        datasets.CIFAR10(str(self.root), train=True, download=True)

    def read(self, train: bool) -> ArrayImages:
        names = datasets.CIFAR10.train_list if train else datasets.CIFAR10.test_list
        images, labels = [], []
        for name, _ in names:
            batch = read_pickle_safely(self.folder / name)
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels += list(batch["labels"])
        return ArrayImages(np.concatenate(images).transpose(0, 2, 3, 1).copy(), labels)


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, strings, bytes and numpy arrays; refuses every other global."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_pickle_safely(path: Path) -> dict:
    """Read one CIFAR batch file (a latin-1 python pickle) without executing arbitrary code."""
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise UserError(
            f"{path} is not a CIFAR-10 batch file ({err}): delete it and download again"
        ) from None

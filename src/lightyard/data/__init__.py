"""Data modules (one per source) and the preprocessing spec they all produce."""

from lightyard.data.base import ImageDataModule
from lightyard.data.digits import DigitsDataModule
from lightyard.data.imagefolder import ImageFolderDataModule
from lightyard.data.preprocess import PreprocessSpec, load_image
from lightyard.data.torchvision_sets import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "CIFAR10DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "PreprocessSpec",
    "load_image",
]

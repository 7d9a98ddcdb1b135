"""Data modules (one per source) and the preprocessing spec they all produce.

The spec and `load_image` need only Pillow and NumPy (the server imports them); the data modules need
torch and Lightning and are imported on first use.
"""

from typing import Any

from lightyard.data.preprocess import PreprocessSpec, load_image

_DATA_MODULES = {
    "ImageDataModule": "lightyard.data.base",
    "DigitsDataModule": "lightyard.data.digits",
    "ImageFolderDataModule": "lightyard.data.imagefolder",
    "CIFAR10DataModule": "lightyard.data.torchvision_sets",
    "FashionMNISTDataModule": "lightyard.data.torchvision_sets",
    "MNISTDataModule": "lightyard.data.torchvision_sets",
}
__all__ = ["PreprocessSpec", "load_image", *_DATA_MODULES]


def __getattr__(name: str) -> Any:
    if name in _DATA_MODULES:
        import importlib

        return getattr(importlib.import_module(_DATA_MODULES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

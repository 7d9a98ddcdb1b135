"""Data modules (one per source) and the preprocessing spec they all produce.

The spec and `load_image` need only Pillow and NumPy (the server imports them); the data modules need
torch and Lightning and are imported on first use.
"""

from lightyard.data.preprocess import PreprocessSpec, load_image
from lightyard.lazy import lazy_attributes

_DATA_MODULES = {
    "ImageDataModule": "lightyard.data.base",
    "DigitsDataModule": "lightyard.data.digits",
    "ImageFolderDataModule": "lightyard.data.imagefolder",
    "CIFAR10DataModule": "lightyard.data.torchvision_sets",
    "FashionMNISTDataModule": "lightyard.data.torchvision_sets",
    "MNISTDataModule": "lightyard.data.torchvision_sets",
}
__all__ = ["PreprocessSpec", "load_image", *_DATA_MODULES]

__getattr__ = lazy_attributes(__name__, _DATA_MODULES)

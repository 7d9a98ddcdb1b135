"""Networks and the LightningModules that train them."""

from lightyard.models.classifier import ClassifierModule
from lightyard.models.nets import SmallCNN, small_cnn, torchvision_net

__all__ = ["ClassifierModule", "SmallCNN", "small_cnn", "torchvision_net"]

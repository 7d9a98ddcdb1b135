"""Networks and the LightningModules that train them."""

from lightyard.models.classifier import ClassifierModule
from lightyard.models.distillation import DistillationModule
from lightyard.models.nets import SmallCNN, build_net, small_cnn, torchvision_net

__all__ = ["ClassifierModule", "DistillationModule", "SmallCNN", "build_net", "small_cnn", "torchvision_net"]

"""Networks and the LightningModules that train them."""

from lightyard.models.classifier import ClassifierModule
from lightyard.models.distillation import DistillationModule
from lightyard.models.nets import (
    MLP,
    SmallCNN,
    StagedCNN,
    build_net,
    mlp,
    small_cnn,
    staged_cnn,
    torchvision_net,
)

__all__ = [
    "MLP",
    "ClassifierModule",
    "DistillationModule",
    "SmallCNN",
    "StagedCNN",
    "build_net",
    "mlp",
    "small_cnn",
    "staged_cnn",
    "torchvision_net",
]

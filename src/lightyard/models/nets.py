"""Networks: small CNNs sized for digits (8×8) and MNIST-sized images (28×28), an MLP, and any torchvision
classification architecture by name.

Every builder takes `num_classes` and `in_channels` from the data module's preprocessing spec, so the
same net config works for 8×8 grayscale digits and 224×224 RGB photos.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from lightyard.config import instantiate
from lightyard.data.preprocess import PreprocessSpec
from lightyard.errors import UserError
from lightyard.models.checkpoints import load_net_weights
from lightyard.models.surgery import adapt_input_channels, replace_head

GRID = 4  # SmallCNN's head sees a GRID × GRID map of features
GRID_MLP = 8  # MLP's default input: the image pooled to GRID_MLP × GRID_MLP (digits are 8×8 already)
AUX_LOGIT_MODELS = ("inception_v3", "googlenet")
TRUSTED_BUILDERS = ("lightyard.models.",)  # the only targets a stored net config may name
PRUNED_CHANNELS = "pruned_channels"  # set in a stored net config when structured pruning removed channels


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head over a 4×4 grid of features, sized for 8×8 digits.

    Keeping the 4×4 layout (rather than global pooling) lets the head see where strokes are, which is
    most of what an 8×8 digit has to offer (figures: docs/results.md).
    Larger inputs are pooled to the same grid.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32, dropout: float = 0.3) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *block(in_channels, width),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(GRID),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(4 * width * GRID * GRID, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x)))


def small_cnn(
    num_classes: int, in_channels: int, width: int = 32, dropout: float = 0.3, weights: str | None = None
) -> SmallCNN:
    net = SmallCNN(num_classes, in_channels, width, dropout)
    if weights:
        load_net_weights(net, weights)
    return net


class StagedCNN(nn.Module):
    """Convolution stages at halving resolutions (28 → 14 → 7 on MNIST), then global average pooling.

    SmallCNN keeps its first two convolutions at full resolution: cheap on 8×8 digits, 29.5 MMAC on a
    28×28 image. Here every stage but the first works on a quarter of the previous one's pixels, so the
    default widths cost 8.0 MMAC per MNIST image. The first stage sees one channel, so its 5×5 kernel
    buys a wider view for little.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for stage, width in enumerate(widths):
            if stage:
                layers.append(nn.MaxPool2d(2))
            kernel = 5 if stage == 0 else 3
            layers += [
                nn.Conv2d(cin, width, kernel, padding=kernel // 2, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            cin = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x)))


def staged_cnn(
    num_classes: int,
    in_channels: int,
    widths: Sequence[int] = (32, 64, 128),
    dropout: float = 0.1,
    weights: str | None = None,
) -> StagedCNN:
    net = StagedCNN(num_classes, in_channels, tuple(widths), dropout)
    if weights:
        load_net_weights(net, weights)
    return net


class MLP(nn.Module):
    """A multilayer perceptron: a network of Linear layers, the kind dynamic INT8 quantization
    (`lightyard quantize --mode dynamic`) is meant for.

    By default the image is first pooled to a GRID_MLP × GRID_MLP grid (64 inputs whatever the image
    size); `pool=0` feeds every pixel (784 inputs on MNIST, as in the classic MNIST MLPs). Zero, not
    None: the registry stores no nulls, and a missing `pool` must rebuild older versions as they were.
    `input_dropout` drops input pixels, as Hinton et al.'s dropout networks do (0.2 there).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.1,
        pool: int = GRID_MLP,
        input_dropout: float = 0.0,
        image_size: tuple[int, int] = (GRID_MLP, GRID_MLP),
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(pool)] if pool else []
        rows, cols = (pool, pool) if pool else image_size
        layers += [nn.Flatten(), nn.Dropout(input_dropout)] if input_dropout else [nn.Flatten()]
        width = in_channels * rows * cols
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def mlp(
    num_classes: int,
    in_channels: int,
    hidden: Sequence[int] = (256, 128),
    dropout: float = 0.1,
    pool: int = GRID_MLP,
    input_dropout: float = 0.0,
    image_size: tuple[int, int] = (GRID_MLP, GRID_MLP),
    weights: str | None = None,
) -> MLP:
    net = MLP(num_classes, in_channels, tuple(hidden), dropout, pool, input_dropout, tuple(image_size))
    if weights:
        load_net_weights(net, weights)
    return net


def build_net(config: Mapping, spec: PreprocessSpec, *, trusted: bool = True) -> nn.Module:
    """The network a `model.net` config describes, sized for the data's classes and channels.

    Training builds from its own config (`trusted`). A config read back from a checkpoint or the registry
    may only name lightyard's own builders, is built without pretrained weights (the stored state dict
    replaces them), and so can neither run arbitrary code nor reach the network.
    """
    config = dict(config)
    config.pop(PRUNED_CHANNELS, None)  # the layer sizes come from the state dict (`rebuild_net`)
    target = str(config.get("_target_", ""))
    if not trusted:
        if not target.startswith(TRUSTED_BUILDERS):
            raise UserError(
                f"stored network config names '{target}', which is not a lightyard network builder"
            )
        config["weights"] = None
    builder = instantiate({**config, "_partial_": True})
    sizes = {"num_classes": spec.num_classes, "in_channels": spec.channels}
    if "image_size" in inspect.signature(builder).parameters:  # builders whose layers depend on it ask
        sizes["image_size"] = (spec.height, spec.width)
    return builder(**sizes)


def classification_models() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def torchvision_net(
    num_classes: int, in_channels: int, name: str | None, weights: str | None = None
) -> nn.Module:
    """A torchvision classification model with its head and stem adapted to the data.

    `weights` is a torchvision weights name (`DEFAULT`, `IMAGENET1K_V1`, `ResNet18_Weights.IMAGENET1K_V2`),
    downloaded into torch's hub cache on first use, or the path of a local checkpoint.
    """
    available = classification_models()
    if not name:
        raise UserError("model/net=torchvision needs model.net.name=NAME: run `lightyard nets` for the list")
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserError(
            f"torchvision has no classification model named '{name}': {hint}"
            "run `lightyard nets` for the full list"
        )
    local = weights if weights and _is_local(weights) else None
    pretrained = _pretrained(name, weights) if weights and not local else None
    # Auxiliary heads (inception_v3, googlenet) return extra outputs in training: the loss wants logits.
    extra = {"aux_logits": False} if name in AUX_LOGIT_MODELS else {}
    if pretrained is None:
        extra["num_classes"] = num_classes
    net = torchvision.models.get_model(name, weights=pretrained, **extra)
    replace_head(net, num_classes)
    adapt_input_channels(net, in_channels)
    if local:
        load_net_weights(net, local)
    return net


def _is_local(weights: str) -> bool:
    return Path(weights).suffix in (".ckpt", ".pt", ".pth") or Path(weights).expanduser().exists()


def _pretrained(name: str, weights: str) -> torchvision.models.WeightsEnum:
    enum = torchvision.models.get_model_weights(name)
    member = weights.split(".")[-1]
    if member not in enum.__members__:
        raise UserError(
            f"'{weights}' is not a weights name of {name}: use one of {', '.join(enum.__members__)}, "
            "a local checkpoint path, or null"
        )
    chosen = enum[member]
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / Path(chosen.url).name
    if not hub_file.exists():
        try:
            torch.hub.load_state_dict_from_url(chosen.url, progress=True, check_hash=True)
        except Exception as err:  # urllib raises several types; all mean "could not fetch"
            raise UserError(
                f"could not download {name} weights {member} ({err}): without network access, copy "
                f"{Path(chosen.url).name} into {hub_file.parent}/ or set model.net.weights=null"
            ) from None
    return chosen

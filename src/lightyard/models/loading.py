"""A trained network rebuilt from its stored config and weights, and checked against other data.

Where the config and weights come from (a checkpoint, a registry tag) is `lightyard.sources`' job; this
module knows nothing of the registry, so that the registry can rebuild its versions' networks here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from lightyard.data.preprocess import PreprocessSpec
from lightyard.errors import UserError
from lightyard.models.checkpoints import check_fits
from lightyard.models.nets import PRUNED_CHANNELS, build_net
from lightyard.models.surgery import fit_channels


@dataclass(frozen=True)
class TrainedNet:
    net: nn.Module
    spec: PreprocessSpec
    net_config: dict
    source: str  # the registry tag or the checkpoint path it came from


def rebuild_net(net_config: dict, spec: PreprocessSpec, state: dict, source: str | Path) -> nn.Module:
    """A stored net config and state dict back to a network in eval mode."""
    net = build_net(net_config, spec, trusted=False)
    if net_config.get(PRUNED_CHANNELS):
        fit_channels(net, state)
    check_fits(net, state, source)
    net.load_state_dict(state)
    return net.eval()


def check_compatible(
    trained: PreprocessSpec, data: PreprocessSpec, source: str, role: str = "teacher"
) -> None:
    """A trained net used with other data (a distillation teacher, a pruning parent) must see the same
    inputs and predict the same classes."""
    if trained.class_names != data.class_names:
        raise UserError(
            f"{role} {source} predicts {trained.num_classes} classes ({_first(trained.class_names)}) "
            f"but the data has {data.num_classes} ({_first(data.class_names)}): "
            f"use a {role} trained on this data"
        )
    differences = [
        name
        for name in ("height", "width", "channels", "mean", "std", "resize_policy", "resize_size")
        if getattr(trained, name) != getattr(data, name)
    ]
    if differences:
        details = ", ".join(f"{n} {getattr(trained, n)} vs {getattr(data, n)}" for n in differences)
        raise UserError(
            f"{role} {source} was trained on other preprocessing than this data ({details}): "
            f"use the {role}'s data config"
        )


def _first(names: tuple[str, ...]) -> str:
    return ", ".join(names[:4]) + (", …" if len(names) > 4 else "")

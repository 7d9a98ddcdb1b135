"""Loading a trained network from where lightyard keeps them: a registry tag or a checkpoint file.

One place for the distillation teacher, `lightyard export` and anything else that needs a trained net:
the net is rebuilt from its stored `model.net` config (lightyard's own builders only) and its weights
are read with `weights_only=True`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from lightyard.data.preprocess import PreprocessSpec
from lightyard.errors import UserError
from lightyard.models.checkpoints import check_fits, net_state_dict, read_checkpoint
from lightyard.models.nets import PRUNED_CHANNELS, build_net
from lightyard.models.surgery import fit_channels

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")


@dataclass(frozen=True)
class TrainedNet:
    net: nn.Module
    spec: PreprocessSpec
    net_config: dict
    source: str  # the registry tag or the checkpoint path it came from


def load_trained_net(source: str | Path) -> TrainedNet:
    """`name:version` / `name@stage` from the registry (checksums verified), or a checkpoint path."""
    text = str(source)
    if Path(text).suffix in CHECKPOINT_SUFFIXES or Path(text).expanduser().is_file():
        return net_from_checkpoint(text)
    from lightyard.registry import load

    model = load(text)
    return TrainedNet(model.net(), model.spec, dict(model.metadata["net"]), model.tag)


def net_from_checkpoint(path: str | Path, run_net_config: dict | None = None) -> TrainedNet:
    """The network of a lightyard checkpoint, in eval mode. `run_net_config` stands in for checkpoints
    written before the net config was stored in them (read from the run's `.hydra/config.yaml`)."""
    checkpoint = read_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters", {})
    if "preprocess" not in hparams:
        raise UserError(f"{path} is not a lightyard checkpoint: it has no preprocessing spec")
    spec = PreprocessSpec.from_dict(hparams["preprocess"])
    net_config = hparams.get("net_config") or run_net_config
    if not net_config:
        raise UserError(f"{path} does not name its network: it predates stored net configs; retrain it")
    net = rebuild_net(net_config, spec, net_state_dict(checkpoint), path)
    return TrainedNet(net, spec, dict(net_config), str(path))


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

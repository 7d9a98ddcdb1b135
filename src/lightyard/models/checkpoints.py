"""Reading checkpoints safely: tensors and plain containers only (`weights_only=True`), clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from lightyard.errors import UserError, first_line
from lightyard.models.surgery import last_linear

NET_PREFIX = "net."  # ClassifierModule keeps its network as `self.net`


def read_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint or a bare state dict, loaded without unpickling arbitrary objects."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: check the path (runs keep them in checkpoints/)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise UserError(f"checkpoint {path} cannot be read safely ({first_line(err)})") from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a state dict")
    return checkpoint


def net_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The network's weights from a Lightning checkpoint (`state_dict` with `net.` keys) or a bare one."""
    state = checkpoint.get("state_dict", checkpoint)
    if any(key.startswith(NET_PREFIX) for key in state):
        state = {key[len(NET_PREFIX) :]: value for key, value in state.items() if key.startswith(NET_PREFIX)}
    return state


def check_fits(net: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Refuse weights whose shapes do not fit `net`, naming a class-count mismatch as such."""
    head_name, head = last_linear(net)
    head_key = f"{head_name}.weight"
    if head_key in state and state[head_key].shape[0] != head.out_features:
        raise UserError(
            f"checkpoint {source} was trained for {state[head_key].shape[0]} classes but the data has "
            f"{head.out_features}: use a checkpoint trained on this data set (or train from scratch)"
        )
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {unexpected[:3]}"
            if unexpected
            else f"shape mismatch in {wrong[:3]}"
        )
        raise UserError(f"checkpoint {source} does not fit this network ({detail}): check model/net")


def load_net_weights(net: nn.Module, path: str | Path) -> None:
    """Load a local checkpoint into `net` after checking it fits."""
    state = net_state_dict(read_checkpoint(path))
    check_fits(net, state, path)
    net.load_state_dict(state)

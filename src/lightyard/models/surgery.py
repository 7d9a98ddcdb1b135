"""Adapting a network to the data: a new classification head, a first convolution for other channels."""

from __future__ import annotations

import torch
from torch import nn

from lightyard.errors import UserError


def last_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    """The classification head: the last `nn.Linear` in registration order."""
    linears = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"{type(net).__name__} has no linear classification head to adapt")
    return linears[-1]


def replace_head(net: nn.Module, num_classes: int) -> None:
    name, head = last_linear(net)
    if head.out_features != num_classes:
        _set_submodule(net, name, nn.Linear(head.in_features, num_classes, bias=head.bias is not None))


def adapt_input_channels(net: nn.Module, in_channels: int) -> None:
    """Rebuild the first convolution for `in_channels`; pretrained RGB filters are summed for grayscale."""
    name, conv = next(((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None or conv.in_channels == in_channels:
        return
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
    with torch.no_grad():
        if in_channels == 1:
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        else:
            new.weight.copy_(conv.weight.mean(dim=1, keepdim=True).expand_as(new.weight))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _set_submodule(net, name, new)


def _set_submodule(net: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, child, module)


def fit_channels(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Resize convolutions, batch norms and linear layers to the shapes in `state`: rebuilds a network
    whose channels structured pruning removed, from its unpruned config and its pruned state dict."""
    for name, module in list(net.named_modules()):
        weight = state.get(f"{name}.weight")
        if weight is None or tuple(weight.shape) == tuple(getattr(module, "weight", weight).shape):
            continue
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
            groups = weight.shape[0] if depthwise else module.groups
            new: nn.Module = nn.Conv2d(
                weight.shape[1] * groups,
                weight.shape[0],
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                groups,
                module.bias is not None,
                module.padding_mode,
            )
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(
                weight.shape[0], module.eps, module.momentum, module.affine, module.track_running_stats
            )
        elif isinstance(module, nn.Linear):
            new = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
        else:
            continue
        _set_submodule(net, name, new)

"""Pruning: which weights are prunable, how sparse a network is, and channel removal.

Unstructured pruning zeroes individual weights (Lightning's `ModelPruning`, in `callbacks/pruning.py`):
the file and the kernels keep their dense size. Structured pruning removes whole convolution channels
through torch-pruning's dependency graph, which keeps residual additions, batch norms and the head
consistent, so parameters, MACs, file size and latency all drop.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from lightyard.errors import UserError
from lightyard.models.surgery import last_linear

PRUNABLE = (nn.Conv2d, nn.Linear)


def per_step_amount(target: float, steps: int) -> float:
    """The fraction of the remaining weights each step prunes so that `steps` steps reach `target`.

    Each step prunes a fraction of the weights still unpruned (torch.nn.utils.prune's convention), so the
    amounts compound: 1 − (1 − p)^steps = target.
    """
    if not 0.0 < target < 1.0:
        raise UserError(f"prune.amount={target} must be between 0 and 1 (the fraction to remove)")
    if steps < 1:
        raise UserError(f"prune.steps={steps} must be at least 1")
    return 1.0 - (1.0 - target) ** (1.0 / steps)


def prunable_weights(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """Convolution and linear layers: their weights hold nearly all parameters; norms and biases stay."""
    return [(name, module) for name, module in net.named_modules() if isinstance(module, PRUNABLE)]


def sparsity(net: nn.Module) -> tuple[float, dict[str, float]]:
    """(global, per layer) fraction of zero weights over the prunable layers, masks applied."""
    zeros = total = 0
    layers = {}
    for name, module in prunable_weights(net):
        weight = module.weight.detach()
        layer_zeros = int((weight == 0).sum())
        layers[name] = layer_zeros / weight.numel()
        zeros += layer_zeros
        total += weight.numel()
    return (zeros / total if total else 0.0), layers


def restore_masks(net: nn.Module) -> None:
    """Mask the zero weights of a network read back from a pruned checkpoint, so resumed fine-tuning
    keeps them at zero and later steps compound on them."""
    for _, module in prunable_weights(net):
        if not prune.is_pruned(module):
            prune.custom_from_mask(module, "weight", mask=module.weight.detach() != 0)


def prune_channels(net: nn.Module, example: torch.Tensor, amount: float) -> dict:
    """Remove `amount` of the output channels of every layer but the head, lowest L1 norm first (in
    place). Returns the MACs and parameters before and after."""
    import torch_pruning as tp

    if not 0.0 < amount < 1.0:
        raise UserError(f"prune.amount={amount} must be between 0 and 1 (the fraction of channels to remove)")
    net.eval()
    example = example[:1]
    macs, params = tp.utils.count_ops_and_params(net, example)
    _, head = last_linear(net)
    pruner = tp.pruner.MagnitudePruner(
        net,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=amount,
        ignored_layers=[head],
    )
    pruner.step()
    pruned_macs, pruned_params = tp.utils.count_ops_and_params(net, example)
    return {
        "macs_before": int(macs),
        "macs_after": int(pruned_macs),
        "parameters_before": int(params),
        "parameters_after": int(pruned_params),
    }

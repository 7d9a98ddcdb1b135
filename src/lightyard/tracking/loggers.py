"""Writing to whichever loggers a run has, from rank zero only."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure


def tensorboard_logger(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def log_figure(trainer: L.Trainer, tag: str, make_figure: Callable[[], Figure]) -> None:
    """Render and log a figure at the current step; the figure is only drawn where it is logged."""
    logger = tensorboard_logger(trainer)
    if logger is None or not trainer.is_global_zero:
        return
    figure = make_figure()
    logger.experiment.add_figure(tag, figure, global_step=trainer.global_step, close=True)
    plt.close(figure)


def log_graph(trainer: L.Trainer, net: torch.nn.Module, example: torch.Tensor) -> None:
    """The network's graph, traced on one example input, for TensorBoard's Graphs tab (rank zero). Traced
    in eval mode: a training-mode pass would move BatchNorm's running statistics."""
    logger = tensorboard_logger(trainer)
    if logger is None or not trainer.is_global_zero:
        return
    training = net.training
    net.eval()
    with torch.no_grad():
        logger.experiment.add_graph(net, example)
    net.train(training)


def log_scalars(trainer: L.Trainer, values: Mapping[str, float]) -> None:
    """Scalars at the current step to every logger (from rank zero), outside Lightning's `self.log`."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        logger.log_metrics(dict(values), step=trainer.global_step)
        logger.save()


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as `{"model/optimizer/lr": 0.003, …}` with values TensorBoard's HParams accept."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{name}/"))
        elif key == "_partial_":
            continue
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def log_hparams(trainer: L.Trainer, config: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """Hyperparameters with the run's final metrics, so TensorBoard's HParams dashboard can compare runs."""
    if not trainer.is_global_zero:
        return
    params = flatten_config(config)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            # the metrics are logged once more at the final step: the HParams dashboard reads them there
            logger.log_hyperparams(params, metrics=dict(metrics), step=trainer.global_step)
        else:
            logger.log_hyperparams(params)
        logger.save()
